"""The delivery record in sqlite: one row per event, written in the ledger's group commit.

The record is kept whole as JSON (`EventRecord.as_json`) beside the columns the
reads select on: `image_id` and `received` (indexed), `matched` (a JSON list,
for `--handler`). A write reads the kept row and merges into it
(`EventRecord.merged`) inside the same transaction as the ledger's write.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from amid.store.base import EventRecord, HistoryQuery

_T = TypeVar("_T")

HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    event_id   TEXT PRIMARY KEY,
    image_id   TEXT NOT NULL,
    received   REAL NOT NULL,
    matched    TEXT NOT NULL,
    record     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_image ON history (image_id, received);
CREATE INDEX IF NOT EXISTS history_received ON history (received);
CREATE INDEX IF NOT EXISTS history_expiry ON history (expires_at);
"""


def write_record(db: sqlite3.Connection, record: EventRecord, now: float, ttl: float) -> None:
    """Merge `record` into the kept one; called inside a ledger transaction."""
    row = db.execute(
        "SELECT record FROM history WHERE event_id = ? AND expires_at > ?",
        (record.event_id, now),
    ).fetchone()
    if row is not None:
        record = EventRecord.from_json(json.loads(row[0])).merged(record)
    db.execute(
        "INSERT OR REPLACE INTO history (event_id, image_id, received, matched, record,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            record.event_id,
            record.image_id,
            record.received,
            json.dumps(list(record.matched)),
            json.dumps(record.as_json()),
            now + ttl,
        ),
    )


def read_records(db: sqlite3.Connection, query: HistoryQuery, now: float) -> list[EventRecord]:
    where: list[str] = ["expires_at > ?"]
    values: list[str | float] = [now]
    if query.event_id is not None:
        where.append("event_id = ?")
        values.append(query.event_id)
    if query.image_id is not None:
        where.append("image_id = ?")
        values.append(query.image_id)
    if query.since is not None:
        where.append("received >= ?")
        values.append(query.since)
    if query.handler is not None:
        where.append("EXISTS (SELECT 1 FROM json_each(history.matched) WHERE value = ?)")
        values.append(query.handler)
    rows = db.execute(
        f"SELECT record FROM history WHERE {' AND '.join(where)}"  # noqa: S608 - fixed fragments
        " ORDER BY received DESC, event_id DESC LIMIT ?",
        (*values, query.limit),
    )
    return [EventRecord.from_json(json.loads(text)) for (text,) in rows]


class SqliteHistory:
    """`History` for `SqliteStore`: both writes join the group commit (`_transact`)."""

    _ttl: float

    async def _transact(self, body: Callable[[sqlite3.Connection, float], _T]) -> _T:
        raise NotImplementedError

    async def record_event(self, record: EventRecord) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            write_record(db, record, now, self._ttl)

        await self._transact(body)

    async def events(self, query: HistoryQuery) -> list[EventRecord]:
        def body(db: sqlite3.Connection, now: float) -> list[EventRecord]:
            return read_records(db, query, now)

        return await self._transact(body)
