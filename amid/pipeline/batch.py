"""batch: events routed to a digest handler wait for company, then go as one message (SPEC 3b).

Between routing and delivery, for handlers with `digest` only. Modelled on
Alertmanager's aggregation groups (a timer per group, flushed on shutdown) and
Vector's `reduce` (a window per key, ended by size, time or shutdown).

- `Groups`, the pure core, decides: which events go together (equal
  `group_by` values, per handler), and when a group is due: its first event
  has waited `wait`, it holds `max_events`, or the events held fill the
  in-flight budget, and then the oldest group goes at once. Time is an
  argument; there is no I/O.
- `Batcher`, the thin shell, does: one timer for the next deadline, a future
  per event, and the flush, which sends through the same `deliver()` as
  every other message (timeout, retries, Retry-After, rate limit) and records
  the success of every event in one `Ledger.record_digest` write. Each
  event's `submit` returns when the digest carrying it has been delivered
  and recorded, or has failed; the message stays in flight (heartbeat) until
  then, like any message whose handlers still run.

A group is sent once; a failed one hands a failed result to every event in it,
which goes back to the queue and is grouped again on redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from amid.config import DigestConfig, RetryConfig
from amid.handlers.base import Digest, Handler, Notification, Sendable
from amid.logs import get_logger
from amid.metrics import Metrics
from amid.pipeline.deliver import DeliveryResult, deliver
from amid.store.base import LeaseLost, Ledger, LedgerUnavailable

T = TypeVar("T")

_MISSING = object()


def group_values(event: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """Each dotted `group_by` path -> its value in the event; None where the event has none."""
    values: dict[str, Any] = {}
    for path in paths:
        node: Any = event
        for part in path.split("."):
            node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
            if node is _MISSING:
                break
        values[path] = None if node is _MISSING else node
    return values


def _frozen(values: Mapping[str, Any]) -> tuple[str, ...]:
    # Any JSON value can group (a list, an object): compare them as canonical JSON.
    return tuple(json.dumps(value, sort_keys=True, default=str) for value in values.values())


# --------------------------------------------------------------------------- the pure core


@dataclass(frozen=True, slots=True)
class GroupKey:
    """Events of one group: one handler (as built by one config), equal `group_by` values."""

    handler: str
    generation: Hashable  # the handler as one runtime built it: a reload starts new groups
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Member(Generic[T]):
    event_id: str
    item: T


@dataclass(slots=True)
class Group(Generic[T]):
    key: GroupKey
    opened: float  # when its first event joined
    deadline: float  # opened + wait
    max_events: int
    members: list[Member[T]] = field(default_factory=list)

    @property
    def event_ids(self) -> list[str]:
        return [member.event_id for member in self.members]


class Groups(Generic[T]):
    """The groups waiting to be sent, oldest first. Pure: `now` is always an argument.

    `budget` is how many messages may be in flight at once (`queue.max_in_flight`):
    the events held here never fill it, or nothing more could be received.
    """

    def __init__(self, budget: int) -> None:
        self._budget = max(budget, 1)
        self._groups: dict[GroupKey, Group[T]] = {}  # insertion order is age order
        self._held: Counter[str] = Counter()  # event id -> groups holding it

    @property
    def held(self) -> int:
        """Distinct events waiting (one event may wait for two digest handlers)."""
        return len(self._held)

    def pending(self, handler: str) -> int:
        return sum(len(g.members) for g in self._groups.values() if g.key.handler == handler)

    def add(
        self, key: GroupKey, member: Member[T], *, wait: float, max_events: int, now: float
    ) -> list[Group[T]]:
        """`member` joins its group (opened now if it has none); the groups due at once."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(key, now, now + wait, max_events)
        group.members.append(member)
        self._held[member.event_id] += 1
        ready: list[Group[T]] = []
        if len(group.members) >= group.max_events:
            ready.append(self._pop(key))
        while self._groups and self.held >= self._budget:
            ready.append(self._pop(next(iter(self._groups))))
        return ready

    def due(self, now: float) -> list[Group[T]]:
        """The groups whose first event has waited their `wait`, taken out."""
        return [self._pop(key) for key, g in list(self._groups.items()) if g.deadline <= now]

    def next_deadline(self) -> float | None:
        return min((g.deadline for g in self._groups.values()), default=None)

    def oldest(self) -> Group[T] | None:
        """The oldest group, taken out (to relieve a daemon short of in-flight slots)."""
        return self._pop(next(iter(self._groups))) if self._groups else None

    def take_all(self) -> list[Group[T]]:
        """Every group, oldest first (shutdown)."""
        return [self._pop(key) for key in list(self._groups)]

    def take_handlers(self, handlers: Collection[str]) -> list[Group[T]]:
        """The groups of these handlers (removed by a reload)."""
        return [self._pop(key) for key in list(self._groups) if key.handler in handlers]

    def discard(self, key: GroupKey, member: Member[T]) -> bool:
        """Take one member out of its waiting group (its message went away); False if sent."""
        group = self._groups.get(key)
        if group is None or member not in group.members:
            return False
        group.members.remove(member)
        self._release(member.event_id)
        if not group.members:
            del self._groups[key]
        return True

    def _pop(self, key: GroupKey) -> Group[T]:
        group = self._groups.pop(key)
        for member in group.members:
            self._release(member.event_id)
        return group

    def _release(self, event_id: str) -> None:
        self._held[event_id] -= 1
        if self._held[event_id] <= 0:
            del self._held[event_id]


# --------------------------------------------------------------------------- the async shell


@dataclass(frozen=True, slots=True)
class Target:
    """Where a group goes: the handler as the event's runtime built it, with its settings."""

    handler: Handler
    digest: DigestConfig
    timeout: float
    retry: RetryConfig


@dataclass(eq=False, slots=True)
class _Waiting:
    notification: Notification
    target: Target
    group: dict[str, Any]
    result: asyncio.Future[DeliveryResult]


class Batcher:
    """Holds digest handlers' events in their groups and sends each group once.

    `budget` is `queue.max_in_flight`; `relieve()` sends the oldest group at once
    (the daemon calls it while it has no in-flight slot to receive into).
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        metrics: Metrics,
        owner: str,
        budget: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._owner = owner
        self._clock = clock
        self._groups: Groups[_Waiting] = Groups(budget)
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._draining = False
        self._log = get_logger()

    @property
    def held(self) -> int:
        return self._groups.held

    async def submit(self, target: Target, notification: Notification) -> DeliveryResult:
        """Join the event's group; the result of the digest that carried it (recorded if sent)."""
        handler = target.handler.name
        values = group_values(notification.event.raw, target.digest.group_by)
        key = GroupKey(handler, id(target.handler), _frozen(values))
        future: asyncio.Future[DeliveryResult] = asyncio.get_running_loop().create_future()
        member = Member(notification.event.id, _Waiting(notification, target, values, future))
        ready = self._groups.add(
            key,
            member,
            wait=target.digest.wait,
            max_events=target.digest.max_events,
            now=self._clock(),
        )
        if self._draining:
            ready += self._groups.take_all()
        self._send(ready)
        self._changed([handler])
        try:
            return await future
        except asyncio.CancelledError:
            # Shutdown ran out of time: the message goes back; a waiting event leaves its group.
            if self._groups.discard(key, member):
                self._changed([handler])
            raise

    def relieve(self) -> None:
        """Send the oldest group now: the daemon has no in-flight slot left to receive into."""
        group = self._groups.oldest()
        if group is not None:
            self._log.info(
                "in-flight budget full; sending the oldest digest group early",
                handler=group.key.handler,
                events=len(group.members),
            )
            self._send([group])
            self._changed([group.key.handler])

    def drain(self) -> None:
        """Shutdown: send every group gathered so far at once, and every later one as it comes."""
        self._draining = True
        groups = self._groups.take_all()
        self._send(groups)
        self._changed({group.key.handler for group in groups})

    def hand_back(self, handlers: Collection[str]) -> None:
        """Handlers a reload removed: their waiting events go back to the queue, unsent."""
        groups = self._groups.take_handlers(handlers)
        for group in groups:
            self._log.info(
                "handler removed; its waiting events go back to the queue",
                handler=group.key.handler,
                events=len(group.members),
            )
            failed = DeliveryResult(group.key.handler, False, 0, "handler_removed")
            for member in group.members:
                _resolve(member.item.result, failed)
        self._changed({group.key.handler for group in groups})

    async def aclose(self) -> None:
        """Stop the timer and any send still running (their messages were returned)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._flushing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---

    def _changed(self, handlers: Iterable[str]) -> None:
        """After every change of the groups: the gauges, and the timer for the next deadline."""
        for handler in handlers:
            self._metrics.digest_pending.labels(handler).set(self._groups.pending(handler))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._groups.next_deadline()
        if deadline is not None:
            delay = max(deadline - self._clock(), 0.0)
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        groups = self._groups.due(self._clock())
        self._send(groups)
        self._changed({group.key.handler for group in groups})

    def _send(self, groups: Iterable[Group[_Waiting]]) -> None:
        for group in groups:
            task = asyncio.create_task(self._flush(group), name="amid-digest")
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush(self, group: Group[_Waiting]) -> None:
        members = group.members
        first = members[0].item
        target, handler = first.target, first.target.handler.name
        log = self._log.bind(handler=handler, digest_events=len(members))
        failed = DeliveryResult(handler, False, 0, "unexpected")
        try:
            message: Sendable = (
                first.notification
                if len(members) == 1  # a group of one is the ordinary single-event message
                else Digest(tuple(m.item.notification for m in members), first.group)
            )
            result = await deliver(
                target.handler,
                message,
                timeout=target.timeout,
                retry=target.retry,
                metrics=self._metrics,
                log=log,
            )
            self._metrics.digests.labels(
                handler, "delivered" if result.delivered else "failed"
            ).inc()
            self._metrics.digest_events.labels(handler).observe(len(members))
            if result.delivered:
                results = await self._record(handler, group.event_ids, result, log)
                log.info("digest delivered")
            else:
                results = dict.fromkeys(group.event_ids, result)
                log.warning("digest failed; its events go back to the queue", reason=result.reason)
            for member in members:
                _resolve(member.item.result, results[member.event_id])
        except Exception:  # a bug here must still leave the events for redelivery
            log.exception("unexpected error sending a digest; its events go back to the queue")
            for member in members:
                _resolve(member.item.result, failed)
        finally:
            # Cancelled (shutdown) or a bug: no event may wait for an answer that never comes.
            for member in members:
                if not member.item.result.done():
                    member.item.result.cancel()

    async def _record(
        self, handler: str, event_ids: list[str], result: DeliveryResult, log: Any
    ) -> dict[str, DeliveryResult]:
        """Every event's success in one write; a success the ledger cannot keep counts as failed."""
        unrecorded = DeliveryResult(handler, False, result.attempts, "ledger_unavailable")
        try:
            await self._ledger.record_digest(handler, event_ids, self._owner)
        except LeaseLost:
            # Another consumer took some event over: record the others one by one.
            log.warning("a digest's event went to another consumer; recording the rest")
            results = {}
            for event_id in event_ids:
                try:
                    await self._ledger.record_delivery(event_id, handler, self._owner)
                except LedgerUnavailable:
                    results[event_id] = unrecorded
                else:
                    results[event_id] = result
            return results
        except LedgerUnavailable as error:
            self._metrics.ledger_errors.labels("record_digest").inc()
            log.error("digest delivered, but the ledger could not record it", error=str(error))
            return dict.fromkeys(event_ids, unrecorded)
        return dict.fromkeys(event_ids, result)


def _resolve(future: asyncio.Future[DeliveryResult], result: DeliveryResult) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        future.set_result(result)
