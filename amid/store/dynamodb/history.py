"""The delivery record in DynamoDB: one item per event, beside its ledger items.

    pk          sk       attributes
    <event id>  record   event (S: the event's fields as JSON), outcome (S),
                         received (N), updated (N), expires_at (N),
                         history_image (S), history_day (S: `history#YYYY-MM-DD` of
                         `received`), image_name (S), image_tags (S: JSON),
                         matched (SS), duplicates (N), and per handler
                         `h#<name>` (S: outcome, error, reference, silence as JSON)
                         and `a#<name>` (N: attempts, added up)

Two global secondary indexes make every read a Query, never a Scan:
`history-by-image` (history_image, received) and `history-recent` (history_day,
received): "the most recent N" walks the days back from today, newest first. "By
event" is a Query of the event's own partition.

A write is one UpdateItem expression that merges into the kept item the way
`EventRecord.merged` does (ADD for sets and counts, `if_not_exists` for the first
`received`), so it needs no read and rides in the ledger's own transaction: a
completion's TransactWriteItems (shared by the completions of 5 ms) or a release's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from amid.store.base import EventRecord, HandlerRecord, HistoryQuery, select

RECORD_SK = "record"
BY_IMAGE = "history-by-image"
RECENT = "history-recent"
_DAY_PREFIX = "history#"
_HANDLER = "h#"
_ATTEMPTS = "a#"
_PAGES = 20  # Query pages read per partition at most, for one read


def history_day(epoch: float) -> str:
    return _DAY_PREFIX + datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def record_update(table: str, record: EventRecord, now: float, ttl: float) -> dict[str, Any]:
    """The UpdateItem (also a TransactWriteItems `Update`) that merges `record` in."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets: list[str] = []
    adds: list[str] = []

    def value(key: str, attribute: Mapping[str, Any]) -> str:
        values[f":{key}"] = attribute
        return f":{key}"

    def name(key: str, attribute: str) -> str:
        names[f"#{key}"] = attribute
        return f"#{key}"

    event = json.dumps(
        {
            "event_id": record.event_id,
            "image_id": record.image_id,
            "state": record.state,
            "account": record.account,
            "region": record.region,
            "time": record.time,
        }
    )
    first = {
        "event": {"S": event},
        "history_image": {"S": record.image_id or "-"},
        "history_day": {"S": history_day(record.received)},
        "received": {"N": f"{record.received:.6f}"},
        "expires_at": {"N": str(math.ceil(now + ttl))},
    }
    duplicate = record.outcome == "duplicate"
    for index, (attribute, given) in enumerate(first.items()):
        path, given_value = name(f"f{index}", attribute), value(f"f{index}", given)
        keep_first = attribute in ("history_day", "received") or duplicate
        sets.append(
            f"{path} = if_not_exists({path}, {given_value})"
            if keep_first
            else f"{path} = {given_value}"
        )
    outcome = name("outcome", "outcome")
    if duplicate:
        sets.append(f"{outcome} = if_not_exists({outcome}, {value('outcome', {'S': 'duplicate'})})")
        adds.append(
            f"{name('dups', 'duplicates')} {value('dups', {'N': str(max(1, record.duplicates))})}"
        )
    else:
        sets.append(f"{outcome} = {value('outcome', {'S': record.outcome})}")
        if record.duplicates:
            adds.append(
                f"{name('dups', 'duplicates')} {value('dups', {'N': str(record.duplicates)})}"
            )
    sets.append(f"{name('updated', 'updated')} = {value('updated', {'N': f'{now:.6f}'})}")
    if record.image_name is not None:
        sets.append(f"{name('iname', 'image_name')} = {value('iname', {'S': record.image_name})}")
    if record.image_tags is not None:
        tags = {"S": json.dumps(dict(record.image_tags))}
        sets.append(f"{name('itags', 'image_tags')} = {value('itags', tags)}")
    if record.matched:
        adds.append(
            f"{name('matched', 'matched')} {value('matched', {'SS': sorted(record.matched)})}"
        )
    for index, (handler, entry) in enumerate(sorted(record.handlers.items())):
        kept = {
            "outcome": entry.outcome,
            "error": entry.error,
            "reference": entry.reference,
            "silence": entry.silence,
        }
        entry_path = name(f"h{index}", _HANDLER + handler)
        sets.append(f"{entry_path} = {value(f'h{index}', {'S': json.dumps(kept)})}")
        attempts_path = name(f"a{index}", _ATTEMPTS + handler)
        adds.append(f"{attempts_path} {value(f'a{index}', {'N': str(entry.attempts)})}")
    expression = "SET " + ", ".join(sets)
    if adds:
        expression += " ADD " + ", ".join(adds)
    return {
        "TableName": table,
        "Key": {"pk": {"S": record.event_id}, "sk": {"S": RECORD_SK}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def record_from_item(item: Mapping[str, Any]) -> EventRecord:
    event = json.loads(item["event"]["S"])
    handlers: dict[str, HandlerRecord] = {}
    for attribute, held in item.items():
        if attribute.startswith(_HANDLER):
            handler = attribute.removeprefix(_HANDLER)
            kept = json.loads(held["S"])
            attempts = item.get(_ATTEMPTS + handler, {}).get("N", "0")
            handlers[handler] = HandlerRecord(
                outcome=str(kept["outcome"]),
                attempts=int(float(attempts)),
                error=kept.get("error"),
                reference=kept.get("reference"),
                silence=kept.get("silence"),
            )
    tags = item.get("image_tags")
    return EventRecord(
        event_id=str(event["event_id"]),
        image_id=str(event["image_id"]),
        state=str(event["state"]),
        account=str(event["account"]),
        region=str(event["region"]),
        time=str(event["time"]),
        received=float(item["received"]["N"]),
        outcome=str(item["outcome"]["S"]),
        matched=tuple(sorted(item.get("matched", {}).get("SS", []))),
        handlers=handlers,
        image_name=item["image_name"]["S"] if "image_name" in item else None,
        image_tags=json.loads(tags["S"]) if tags is not None else None,
        duplicates=int(float(item.get("duplicates", {}).get("N", "0"))),
        updated=float(item.get("updated", {}).get("N", "0")),
    )


class DynamoHistory:
    """`History` for `DynamoStore`: records are written by the ledger's writes (see
    `complete`, `release`) or alone (`_write_record`); read by Query only."""

    _table: str
    _ttl: float
    _clock: Callable[[], float]

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _record_update(self, record: EventRecord, now: float) -> dict[str, Any]:
        return record_update(self._table, record, now, self._ttl)

    async def _write_record(self, record: EventRecord) -> None:
        await self._call("update_item", **self._record_update(record, self._clock()))

    async def _note_duplicate(self, event_id: str) -> None:
        """Count a copy of a done event on its record, when one is kept (a claim's part);
        refused (no record) when none is."""
        await self._call(
            "update_item",
            TableName=self._table,
            Key={"pk": {"S": event_id}, "sk": {"S": RECORD_SK}},
            UpdateExpression="ADD duplicates :one",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    async def events(self, query: HistoryQuery) -> list[EventRecord]:
        now = self._clock()
        since = max(query.since or 0.0, now - self._ttl)
        live = "#exp > :now"
        values: dict[str, Any] = {":now": {"N": f"{now:.6f}"}}
        if query.handler is not None:
            live += " AND contains(#matched, :handler)"
            values[":handler"] = {"S": query.handler}
        if query.event_id is not None:
            items = await self._query_history(
                {
                    "KeyConditionExpression": "pk = :pk AND sk = :sk",
                    "ExpressionAttributeValues": {
                        **values,
                        ":pk": {"S": query.event_id},
                        ":sk": {"S": RECORD_SK},
                    },
                    "FilterExpression": live,
                },
                query.limit,
            )
        elif query.image_id is not None:
            items = await self._query_history(
                {
                    "IndexName": BY_IMAGE,
                    "KeyConditionExpression": "history_image = :image AND #received >= :since",
                    "ExpressionAttributeValues": {
                        **values,
                        ":image": {"S": query.image_id},
                        ":since": {"N": f"{since:.6f}"},
                    },
                    "FilterExpression": live,
                    "ScanIndexForward": False,
                },
                query.limit,
            )
        else:
            items = []
            day = datetime.fromtimestamp(now, UTC).date()
            last = datetime.fromtimestamp(since, UTC).date()
            while day >= last and len(items) < query.limit:
                items += await self._query_history(
                    {
                        "IndexName": RECENT,
                        "KeyConditionExpression": "history_day = :day AND #received >= :since",
                        "ExpressionAttributeValues": {
                            **values,
                            ":day": {"S": _DAY_PREFIX + day.isoformat()},
                            ":since": {"N": f"{since:.6f}"},
                        },
                        "FilterExpression": live,
                        "ScanIndexForward": False,
                    },
                    query.limit - len(items),
                )
                day -= timedelta(days=1)
        return select((record_from_item(item) for item in items), query)

    async def _query_history(self, params: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Pages of one Query until `limit` items passed the filter (bounded)."""
        items: list[dict[str, Any]] = []
        names = {"#exp": "expires_at", "#matched": "matched", "#received": "received"}
        expressions = " ".join(
            str(params.get(key, "")) for key in ("KeyConditionExpression", "FilterExpression")
        )
        params = {
            **params,
            "TableName": self._table,
            "ExpressionAttributeNames": {k: v for k, v in names.items() if k in expressions},
        }
        for _ in range(_PAGES):
            page = await self._call("query", **params)
            items += page.get("Items", [])
            if len(items) >= limit or "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items[:limit]
