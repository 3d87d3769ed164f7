"""DynamoDB store: one table shared by every replica, on every host.

Table layout (partition key `pk`, sort key `sk`, both strings; on-demand
capacity; DynamoDB TTL on `expires_at`):

    pk          sk               attributes
    <event id>  event            owner (S, absent when free), lease_until (N),
                                 done (BOOL), claims (N), expires_at (N),
                                 digested (SS: handlers a digest carried it to)
    <event id>  handler#<name>   owner (S, who recorded it), expires_at (N)
    <event id>  record           the delivery record (history.py; two GSIs)
    image#<region>#<image id>
                image            facts (S, the image object as JSON), expires_at (N)
    expectation#<name>  state    started (N), last_seen (N), episode (N), told (SS),
                                 ended (N), ended_told (SS), ended_recovered (SS),
                                 version (N); no expires_at: an expectation's clock
                                 and episode must outlive any TTL
    silence     <silence id>     a run-time silence (see `silences.py`)
    conversation#<handler>#<key>
                conversation     doc (S), version (N), expires_at (N): conversations.py

`expires_at` is epoch seconds on every item, so DynamoDB's TTL deletes old
event ids. TTL deletion is lazy (often days late), so every read also ignores
an item whose `expires_at` has passed. One strongly consistent Query on `pk`
returns an event and all its handler records.

- `claim` reads the event, then writes its item back conditionally. The
  condition pins `claims` (bumped by every claim) to the value read: no
  handler can have been recorded between the read and the write, so the
  `delivered` set returned is complete. A done event costs one read; a
  lost race returns None (held by another) or the done claim.
- `record_delivery` is one TransactWriteItems: a ConditionCheck that the
  owner still holds a live lease on the event item, and the Put of the
  handler item. A stale owner cannot record over another's claim.
- `record_digest` is one TransactWriteItems of up to 100 Updates, one per
  event item: each checks the owner and adds the handler to `digested`, and
  bumps `claims`, so a claim racing it re-reads rather than writing the set
  back without it. A claim carries `digested` over and reads it as delivered.
- `extend`, `complete` and `release` are conditional updates of the event item. A
  `complete` with handler records is a TransactWriteItems (the records and the done
  mark together) shared by every completion of the next 5 ms (up to 100 items): a
  refused one writes nothing, its cancellation reasons name the lost leases, and the
  others are sent again without them.
- Image memory: `remember` is one PutItem, `remember_many` PutItems 25 at a time (the
  calls the ledger is granted already; no BatchWriteItem), `recall` a Query of its pk.
- An expectation's state is read (strongly consistent), stepped, and put back on
  condition that its `version` is still the one read; a replica that lost the race
  reads again and steps again.

Leases compare the replicas' own clocks (`clock`): keep them synchronised
(chrony, the Amazon Time Sync Service) to well within the lease length.

Throttling, server errors and connection errors are retried with exponential
backoff and full jitter; after the budget, or on any other error (a missing
table, denied access), the call raises LedgerUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from amid.logs import get_logger
from amid.store.base import (
    Claim,
    EventRecord,
    ExpectationState,
    ExpectationSteps,
    LeaseLost,
    LedgerUnavailable,
)
from amid.store.dynamodb.conversations import DynamoConversations
from amid.store.dynamodb.history import BY_IMAGE, RECENT, DynamoHistory
from amid.store.dynamodb.silences import DynamoSilences

EVENT_SK = "event"
HANDLER_PREFIX = "handler#"
IMAGE_PREFIX = "image#"
IMAGE_SK = "image"
_IMAGE_WRITES = 25  # PutItems at once in remember_many
TTL_ATTRIBUTE = "expires_at"
DIGESTED = "digested"
MAX_TRANSACTION_ITEMS = 100
# How long a completion waits for others to share its transaction: deliveries end at
# different moments (the same linger as SQS deletes; the message waits for it anyway).
_COMPLETION_LINGER = 0.005
EXPECTATION_PREFIX = "expectation#"
EXPECTATION_SK = "state"
_EXPECTATION_RACES = 20  # optimistic tries before a write counts as the store being unavailable
_CREATE_TIMEOUT = 300.0

_THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
# Cancellation reasons of a transaction that a later try can get past.
_TRANSIENT_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)

_NAMES = {
    "#owner": "owner",
    "#lease": "lease_until",
    "#done": "done",
    "#claims": "claims",
    "#exp": TTL_ATTRIBUTE,
}


class _ConditionFailed(Exception):
    """A conditional write was refused; `item` is the item as it was, when returned, and
    `reasons` a refused transaction's cancellation codes, one per item in order."""

    def __init__(self, item: Mapping[str, Any] | None, reasons: Sequence[str] = ()) -> None:
        super().__init__("condition failed")
        self.item = item
        self.reasons = list(reasons)


@dataclass(slots=True)
class _Completion:
    """One `complete` waiting to share a TransactWriteItems with the others of its 5 ms."""

    event_id: str
    owner: str
    items: list[dict[str, Any]]
    done: asyncio.Future[None]


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _reasons(error: ClientError) -> list[str]:
    reasons = error.response.get("CancellationReasons") or []
    return [str(reason.get("Code") or "None") for reason in reasons]


def _refused(batch: Sequence[_Completion], reasons: Sequence[str]) -> list[_Completion]:
    """The completions of a refused transaction whose own items failed their condition
    (all of them when the reasons are missing: then none can be told apart)."""
    if len(reasons) != sum(len(completion.items) for completion in batch):
        return list(batch)
    refused, at = [], 0
    for completion in batch:
        mine = reasons[at : at + len(completion.items)]
        at += len(completion.items)
        if "ConditionalCheckFailed" in mine:
            refused.append(completion)
    return refused or list(batch)


def _transactions(batch: list[_Completion]) -> list[list[_Completion]]:
    """`batch` cut into runs of at most MAX_TRANSACTION_ITEMS items, a completion never split."""
    runs: list[list[_Completion]] = [[]]
    size = 0
    for completion in batch:
        if runs[-1] and size + len(completion.items) > MAX_TRANSACTION_ITEMS:
            runs.append([])
            size = 0
        runs[-1].append(completion)
        size += len(completion.items)
    return [run for run in runs if run]


def _lease_lost(event_id: str, owner: str) -> LeaseLost:
    return LeaseLost(f"lease on {event_id} is no longer held by {owner}")


def _settle(completion: _Completion, outcome: BaseException | None) -> None:
    if completion.done.done():
        return  # its caller was cancelled (shutdown)
    if outcome is None:
        completion.done.set_result(None)
    else:
        completion.done.set_exception(outcome)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return True
    if not isinstance(error, ClientError):
        return False
    if _code(error) in _THROTTLING:
        return True
    if _code(error) == "TransactionCanceledException":
        reasons = {code for code in _reasons(error) if code != "None"}
        return bool(reasons) and reasons <= _TRANSIENT_REASONS
    return False


def _n(value: float) -> dict[str, str]:
    return {"N": f"{value:.6f}"}


def _epoch(value: float) -> dict[str, str]:
    # DynamoDB's TTL wants whole epoch seconds.
    return {"N": str(math.ceil(value))}


def _number(item: Mapping[str, Any], name: str) -> float:
    attribute = item.get(name)
    return float(attribute["N"]) if attribute else 0.0


def _string(item: Mapping[str, Any], name: str) -> str | None:
    attribute = item.get(name)
    return str(attribute["S"]) if attribute else None


def _flag(item: Mapping[str, Any], name: str) -> bool:
    attribute = item.get(name)
    return bool(attribute["BOOL"]) if attribute else False


def _string_set(item: Mapping[str, Any], name: str) -> frozenset[str]:
    attribute = item.get(name)
    return frozenset(attribute["SS"]) if attribute else frozenset()


class DynamoStore(DynamoSilences, DynamoConversations, DynamoHistory, ExpectationSteps):
    """The shared ledger for several replicas; `client` is an aiobotocore DynamoDB client.

    The client belongs to the caller (normally `AwsClients`), which closes it.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        ttl: float,
        clock: Callable[[], float] = time.time,
        *,
        attempts: int = 5,
        initial_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self._client = client
        self._table = table
        self._ttl = ttl
        self._clock = clock
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=initial_backoff, max=max_backoff),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        self._closed = False
        self._completions: list[_Completion] = []
        self._sending: set[asyncio.Task[None]] = set()

    def _log_retry(self, operation: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        get_logger().warning(
            "dedupe store busy or unreachable, retrying",
            table=self._table,
            operation=operation,
            attempt=state.attempt_number,
            error=_code(error) if isinstance(error, ClientError) else repr(error),
        )

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        if self._closed:
            raise LedgerUnavailable("the ledger is closed")
        method = getattr(self._client, operation)

        # aiobotocore's methods return coroutines but are not coroutine functions,
        # which tenacity would call without awaiting.
        async def attempt() -> dict[str, Any]:
            response: dict[str, Any] = await method(**params)
            return response

        try:
            retrying = self._retrying.copy(before_sleep=partial(self._log_retry, operation))
            result: dict[str, Any] = await retrying(attempt)
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                raise _ConditionFailed(error.response.get("Item")) from error
            if _code(error) == "TransactionCanceledException" and (
                "ConditionalCheckFailed" in _reasons(error)
            ):
                raise _ConditionFailed(None, _reasons(error)) from error
            raise LedgerUnavailable(
                f"dynamodb table {self._table}: {operation}: {_code(error)}"
            ) from error
        except BotoCoreError as error:
            raise LedgerUnavailable(
                f"dynamodb table {self._table}: {operation}: {error}"
            ) from error
        return result

    def _key(self, event_id: str, sk: str = EVENT_SK) -> dict[str, Any]:
        return {"pk": {"S": event_id}, "sk": {"S": sk}}

    async def _read(self, event_id: str) -> tuple[dict[str, Any] | None, frozenset[str], float]:
        """The event item (live or not), the live handler records, and the time of the read."""
        now = self._clock()
        event: dict[str, Any] | None = None
        delivered: set[str] = set()
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": event_id}},
            "ConsistentRead": True,
        }
        while True:
            page = await self._call("query", **params)
            for item in page.get("Items", []):
                sk = _string(item, "sk") or ""
                if sk == EVENT_SK:
                    event = item
                elif sk.startswith(HANDLER_PREFIX) and _number(item, TTL_ATTRIBUTE) > now:
                    delivered.add(sk.removeprefix(HANDLER_PREFIX))
            if "LastEvaluatedKey" not in page:
                if event is not None and _number(event, TTL_ATTRIBUTE) > now:
                    delivered |= _string_set(event, DIGESTED)
                return event, frozenset(delivered), now
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def claim(self, event_id: str, owner: str, lease: float) -> Claim | None:
        event, delivered, now = await self._read(event_id)
        if event is not None and _number(event, TTL_ATTRIBUTE) > now:
            if _flag(event, "done"):
                with contextlib.suppress(_ConditionFailed, LedgerUnavailable):
                    await self._note_duplicate(event_id)  # a lost count never fails a claim
                return Claim(delivered, done=True)
            holder = _string(event, "owner")
            if holder not in (None, owner) and _number(event, "lease_until") > now:
                return None
        seen = _number(event, "claims") if event is not None else 0.0
        fresh: dict[str, Any] = {
            **self._key(event_id),
            "owner": {"S": owner},
            "lease_until": _n(now + lease),
            "done": {"BOOL": False},
            "claims": _n(seen + 1),
            TTL_ATTRIBUTE: _epoch(now + self._ttl),
        }
        digested = (
            _string_set(event, DIGESTED)
            if event is not None and _number(event, TTL_ATTRIBUTE) > now
            else frozenset()
        )
        if digested:
            # The claim rewrites the item: what digests recorded on it is kept.
            fresh[DIGESTED] = {"SS": sorted(digested)}
        write: dict[str, Any] = {
            "TableName": self._table,
            "Item": fresh,
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if event is not None:
            # Nobody claimed it since the read (so nobody recorded a handler either),
            # and it is expired, or free, or ours.
            write["ConditionExpression"] = (
                "#claims = :seen AND (#exp <= :now"
                " OR (#done = :false AND (#lease <= :now OR #owner = :me)))"
            )
            write["ExpressionAttributeNames"] = _NAMES
            write["ExpressionAttributeValues"] = {
                ":seen": _n(seen),
                ":now": _n(now),
                ":false": {"BOOL": False},
                ":me": {"S": owner},
            }
        try:
            await self._call("put_item", **write)
        except _ConditionFailed as refused:
            # Another replica got there between the read and the write.
            item = refused.item
            if item is not None and _flag(item, "done") and _number(item, TTL_ATTRIBUTE) > now:
                _, delivered, _ = await self._read(event_id)
                return Claim(delivered, done=True)
            return None
        return Claim(delivered)

    def _held_condition(self, now: float, owner: str) -> tuple[str, dict[str, Any]]:
        # Held = still ours: a lapsed lease nobody took over is still ours to record on;
        # a competing claim replaces the owner, and then every write here is refused.
        return (
            "#owner = :me AND #exp > :now",
            {":me": {"S": owner}, ":now": _n(now)},
        )

    async def extend(self, event_id: str, owner: str, lease: float) -> bool:
        now = self._clock()
        condition, values = self._held_condition(now, owner)
        try:
            await self._call(
                "update_item",
                TableName=self._table,
                Key=self._key(event_id),
                UpdateExpression="SET #lease = :until",
                ConditionExpression=condition,
                ExpressionAttributeNames={
                    "#owner": "owner",
                    "#lease": "lease_until",
                    "#exp": TTL_ATTRIBUTE,
                },
                ExpressionAttributeValues={**values, ":until": _n(now + lease)},
            )
        except _ConditionFailed:
            return False
        return True

    async def record_delivery(self, event_id: str, handler: str, owner: str) -> None:
        now = self._clock()
        condition, values = self._held_condition(now, owner)
        try:
            await self._call(
                "transact_write_items",
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": self._key(event_id),
                            "ConditionExpression": condition,
                            "ExpressionAttributeNames": {"#owner": "owner", "#exp": TTL_ATTRIBUTE},
                            "ExpressionAttributeValues": values,
                        }
                    },
                    self._handler_put(event_id, handler, owner, now),
                ],
            )
        except _ConditionFailed as refused:
            raise _lease_lost(event_id, owner) from refused

    def _handler_put(self, event_id: str, handler: str, owner: str, now: float) -> dict[str, Any]:
        """The transaction entry that records one handler's success."""
        return {
            "Put": {
                "TableName": self._table,
                "Item": {
                    **self._key(event_id, HANDLER_PREFIX + handler),
                    "owner": {"S": owner},
                    TTL_ATTRIBUTE: _epoch(now + self._ttl),
                },
            }
        }

    async def complete(
        self,
        event_id: str,
        owner: str,
        delivered: Collection[str] = (),
        record: EventRecord | None = None,
    ) -> None:
        now = self._clock()
        condition, values = self._held_condition(now, owner)
        done = {
            "TableName": self._table,
            "Key": self._key(event_id),
            "UpdateExpression": "SET #done = :true, #lease = :zero, #exp = :exp REMOVE #owner",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {
                "#owner": "owner",
                "#lease": "lease_until",
                "#done": "done",
                "#exp": TTL_ATTRIBUTE,
            },
            "ExpressionAttributeValues": {
                **values,
                ":true": {"BOOL": True},
                ":zero": _n(0),
                ":exp": _epoch(now + self._ttl),
            },
        }
        if not delivered and record is None:
            try:
                await self._call("update_item", **done)
            except _ConditionFailed as refused:
                raise _lease_lost(event_id, owner) from refused
            return
        # The last handlers' records and the done mark succeed or fail together, in one
        # TransactWriteItems shared with the other completions of the next few ms.
        puts = [self._handler_put(event_id, h, owner, now) for h in delivered]
        if record is not None:
            puts.append({"Update": self._record_update(record, now)})
        loop = asyncio.get_running_loop()
        completion = _Completion(event_id, owner, [{"Update": done}, *puts], loop.create_future())
        self._completions.append(completion)
        if len(self._completions) == 1:
            loop.call_later(_COMPLETION_LINGER, self._send_completions)
        await completion.done

    def _send_completions(self) -> None:
        batch, self._completions = self._completions, []
        for chunk in _transactions(batch):
            task = asyncio.create_task(self._complete_together(chunk))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _complete_together(self, batch: list[_Completion]) -> None:
        """One transaction for `batch`; a completion whose lease is lost fails alone.

        A refused transaction writes nothing. Its cancellation reasons say which items'
        conditions failed: those completions get LeaseLost, the rest are sent again
        without them (each round drops at least one, so this ends).
        """
        waiting = [c for c in batch if not c.done.done()]
        while waiting:
            try:
                items = [item for completion in waiting for item in completion.items]
                await self._call("transact_write_items", TransactItems=items)
            except _ConditionFailed as refused:
                lost = _refused(waiting, refused.reasons)
                for completion in lost:
                    _settle(completion, _lease_lost(completion.event_id, completion.owner))
                waiting = [c for c in waiting if c not in lost and not c.done.done()]
                continue
            except BaseException as error:
                for completion in waiting:
                    _settle(completion, error)
                if not isinstance(error, Exception):
                    raise
                return
            for completion in waiting:
                _settle(completion, None)
            return

    async def release(self, event_id: str, owner: str, record: EventRecord | None = None) -> None:
        free = {
            "TableName": self._table,
            "Key": self._key(event_id),
            "UpdateExpression": "SET #lease = :zero REMOVE #owner",
            "ConditionExpression": "#owner = :me",
            "ExpressionAttributeNames": {"#owner": "owner", "#lease": "lease_until"},
            "ExpressionAttributeValues": {":me": {"S": owner}, ":zero": _n(0)},
        }
        try:
            if record is None:
                await self._call("update_item", **free)
            else:
                history = self._record_update(record, self._clock())
                await self._call(
                    "transact_write_items",
                    TransactItems=[{"Update": free}, {"Update": history}],
                )
        except _ConditionFailed:
            if record is not None:  # not ours any more; what this delivery did still happened
                await self._write_record(record)

    async def aclose(self) -> None:
        self._closed = True

    # --- images ---

    def _image_key(self, region: str, image_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"{IMAGE_PREFIX}{region}#{image_id}"}, "sk": {"S": IMAGE_SK}}

    async def remember(
        self, region: str, image_id: str, image: Mapping[str, Any], keep: float
    ) -> None:
        await self._call(
            "put_item",
            TableName=self._table,
            Item={
                **self._image_key(region, image_id),
                "facts": {"S": json.dumps(image)},
                TTL_ATTRIBUTE: _epoch(self._clock() + keep),
            },
        )

    async def remember_many(
        self, region: str, images: Mapping[str, Mapping[str, Any]], keep: float
    ) -> None:
        items = list(images.items())
        for start in range(0, len(items), _IMAGE_WRITES):
            await asyncio.gather(
                *(
                    self.remember(region, image_id, image, keep)
                    for image_id, image in items[start : start + _IMAGE_WRITES]
                )
            )

    async def recall(self, region: str, image_id: str) -> dict[str, Any] | None:
        key = self._image_key(region, image_id)
        page = await self._call(
            "query",
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk = :sk",
            ExpressionAttributeValues={":pk": key["pk"], ":sk": key["sk"]},
            ConsistentRead=True,
        )
        now = self._clock()
        for item in page.get("Items", []):
            if _number(item, TTL_ATTRIBUTE) > now:
                facts: dict[str, Any] = json.loads(_string(item, "facts") or "{}")
                return facts
        return None

    # --- digests ---

    async def record_digest(self, handler: str, event_ids: Sequence[str], owner: str) -> None:
        event_ids = list(dict.fromkeys(event_ids))  # one operation per item in a transaction
        if not event_ids:
            return
        if len(event_ids) > MAX_TRANSACTION_ITEMS:
            raise ValueError(f"a digest holds at most {MAX_TRANSACTION_ITEMS} events")
        now = self._clock()
        condition, values = self._held_condition(now, owner)
        updates = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": self._key(event_id),
                    "UpdateExpression": "ADD #digested :handler, #claims :one SET #exp = :exp",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {
                        "#owner": "owner",
                        "#exp": TTL_ATTRIBUTE,
                        "#digested": DIGESTED,
                        "#claims": "claims",
                    },
                    "ExpressionAttributeValues": {
                        **values,
                        ":handler": {"SS": [handler]},
                        ":one": _n(1),
                        ":exp": _epoch(now + self._ttl),
                    },
                }
            }
            for event_id in event_ids
        ]
        try:
            await self._call("transact_write_items", TransactItems=updates)
        except _ConditionFailed as refused:
            raise LeaseLost(f"a digest's events are no longer all held by {owner}") from refused

    # --- expectations ---

    def _expectation_key(self, name: str) -> dict[str, Any]:
        return {"pk": {"S": EXPECTATION_PREFIX + name}, "sk": {"S": EXPECTATION_SK}}

    async def _read_expectation(self, name: str) -> tuple[ExpectationState | None, float]:
        """The state and its version (0 when there is no item)."""
        # A Query of the one-item partition: the same read (and IAM action) as the ledger's.
        response = await self._call(
            "query",
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk = :sk",
            ExpressionAttributeValues={
                ":pk": {"S": EXPECTATION_PREFIX + name},
                ":sk": {"S": EXPECTATION_SK},
            },
            ConsistentRead=True,
        )
        items = response.get("Items") or []
        if not items:
            return None, 0.0
        item = items[0]
        return _expectation_from_item(name, item), _number(item, "version")

    async def expectation(self, name: str) -> ExpectationState | None:
        state, _ = await self._read_expectation(name)
        return state

    async def _change_expectation(
        self,
        name: str,
        started: float | None,
        step: Callable[[ExpectationState], ExpectationState],
    ) -> ExpectationState:
        for _ in range(_EXPECTATION_RACES):
            old, version = await self._read_expectation(name)
            base = old or ExpectationState(
                name, started=round(self._clock(), 3) if started is None else started
            )
            state = step(base)
            if state == old:
                return state
            item = {**self._expectation_key(name), **_expectation_item(state)}
            item["version"] = _n(version + 1)
            write: dict[str, Any] = {"TableName": self._table, "Item": item}
            if old is None:
                write["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                write["ConditionExpression"] = "version = :seen"
                write["ExpressionAttributeValues"] = {":seen": _n(version)}
            try:
                await self._call("put_item", **write)
            except _ConditionFailed:
                continue  # another replica wrote in between: read its state, step again
            return state
        raise LedgerUnavailable(
            f"dynamodb table {self._table}: expectation {name}: too many concurrent writes"
        )


def _expectation_item(state: ExpectationState) -> dict[str, Any]:
    item: dict[str, Any] = {"started": _n(state.started)}
    for key in ("last_seen", "episode", "ended"):
        value = getattr(state, key)
        if value is not None:
            item[key] = _n(value)
    for key in ("told", "ended_told", "ended_recovered"):
        names = getattr(state, key)
        if names:  # DynamoDB has no empty sets: absent is empty
            item[key] = {"SS": sorted(names)}
    return item


def _expectation_from_item(name: str, item: Mapping[str, Any]) -> ExpectationState:
    def optional(key: str) -> float | None:
        return float(item[key]["N"]) if key in item else None

    def names(key: str) -> frozenset[str]:
        return frozenset(item[key]["SS"]) if key in item else frozenset()

    return ExpectationState(
        name,
        started=_number(item, "started"),
        last_seen=optional("last_seen"),
        episode=optional("episode"),
        told=names("told"),
        ended=optional("ended"),
        ended_told=names("ended_told"),
        ended_recovered=names("ended_recovered"),
    )


# The delivery record's indexes (history.py), as create_table and the CloudFormation
# template declare them.
HISTORY_ATTRIBUTES = [
    {"AttributeName": "history_image", "AttributeType": "S"},
    {"AttributeName": "history_day", "AttributeType": "S"},
    {"AttributeName": "received", "AttributeType": "N"},
]
HISTORY_INDEXES = [
    {
        "IndexName": index,
        "KeySchema": [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "received", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }
    for index, partition in ((BY_IMAGE, "history_image"), (RECENT, "history_day"))
]


async def create_table(client: Any, table: str) -> None:
    """Create the ledger table (pk/sk, on-demand) with TTL on `expires_at`; idempotent.

    For `amid dedupe create-table`, local development and tests; production
    creates the table with the CloudFormation template. Raises ValueError when
    a table of that name exists with another key schema.
    """
    errors = client.exceptions
    try:
        await client.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                *HISTORY_ATTRIBUTES,
            ],
            GlobalSecondaryIndexes=HISTORY_INDEXES,
            BillingMode="PAY_PER_REQUEST",
        )
    except errors.ResourceInUseException:
        pass
    async with asyncio.timeout(_CREATE_TIMEOUT):
        while True:
            description = (await client.describe_table(TableName=table))["Table"]
            if description["TableStatus"] == "ACTIVE":
                break
            await asyncio.sleep(1.0)
    keys = {(key["AttributeName"], key["KeyType"]) for key in description["KeySchema"]}
    if keys != {("pk", "HASH"), ("sk", "RANGE")}:
        raise ValueError(f"table {table} exists with key schema {sorted(keys)}; amid needs pk/sk")
    await _add_history_indexes(client, table, description)
    ttl = (await client.describe_time_to_live(TableName=table))["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if ttl.get("AttributeName") != TTL_ATTRIBUTE:
            raise ValueError(
                f"table {table} expires items on {ttl.get('AttributeName')}, not {TTL_ATTRIBUTE}"
            )
        return
    await client.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )


async def _add_history_indexes(client: Any, table: str, description: Mapping[str, Any]) -> None:
    """A table made before the delivery record gets its indexes (one at a time, as
    DynamoDB allows), and is waited for until they are active."""
    present = {index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])}
    for index in HISTORY_INDEXES:
        if index["IndexName"] in present:
            continue
        await client.update_table(
            TableName=table,
            AttributeDefinitions=HISTORY_ATTRIBUTES,
            GlobalSecondaryIndexUpdates=[{"Create": index}],
        )
        async with asyncio.timeout(_CREATE_TIMEOUT):
            while True:
                described = (await client.describe_table(TableName=table))["Table"]
                statuses = [
                    i.get("IndexStatus") for i in described.get("GlobalSecondaryIndexes", [])
                ]
                if described["TableStatus"] == "ACTIVE" and all(s == "ACTIVE" for s in statuses):
                    break
                await asyncio.sleep(1.0)
