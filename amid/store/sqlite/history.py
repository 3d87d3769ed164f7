"""The delivery record in sqlite, written in the ledger's group commit.

One row per event in `history`, keyed by the rowid of the event's row in the
ledger's `events` table: the ledger made that row when it first claimed the
event, so a record is an append at the end of the table, and so is its entry in
the one index, on `received` (no index of random keys to keep on the hot path).
The row holds `received`, `image_id` and `duplicates` as columns (the claim that
finds an event done counts the copy with one UPDATE) and the rest as a compact
JSON array. A first write is one INSERT; a later one (a retry) reads the kept row
and merges into it (`EventRecord.merged`), inside the same transaction as the
ledger's write.

Reads run on the worker thread's connection, never on the event loop: "the most
recent N" walks the `received` index backwards; "by event" is the ledger's
primary key; "by image" and "by handler" filter along the same walk. Expired rows
are purged with the ledger's, on the worker.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from amid import jsoncodec
from amid.store.base import EventRecord, HandlerRecord, HistoryQuery, LedgerUnavailable, select

HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id         INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL,
    image_id   TEXT NOT NULL,
    received   REAL NOT NULL,
    duplicates INTEGER NOT NULL DEFAULT 0,
    record     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_received ON history (received);
"""

_VERSION = 1


def write_record(db: sqlite3.Connection, record: EventRecord, now: float, ttl: float) -> None:
    """Merge `record` into the kept one; called inside a ledger transaction, after the
    ledger's own statements on the event (whose row it hangs on: claimed before)."""
    first = db.execute(
        "INSERT INTO history (id, event_id, image_id, received, duplicates, record, expires_at)"
        " SELECT rowid, event_id, ?, ?, ?, ?, ? FROM events WHERE event_id = ?"
        " ON CONFLICT (id) DO NOTHING",
        (
            record.image_id,
            record.received,
            record.duplicates,
            _encode(record),
            now + ttl,
            record.event_id,
        ),
    )
    if first.rowcount != 0:
        return  # the common case: the event's first record
    kept = db.execute(
        "SELECT h.id, h.event_id, h.record, h.duplicates, h.image_id, h.received, h.expires_at"
        " FROM history h JOIN events e ON e.rowid = h.id WHERE e.event_id = ?",
        (record.event_id,),
    ).fetchone()
    if kept is None:
        return  # no ledger row to hang it on: nothing was claimed
    if kept[1] == record.event_id and kept[6] > now:
        record = _decode(*kept[1:6]).merged(record)
    db.execute(
        "UPDATE history SET event_id = ?, image_id = ?, received = ?, duplicates = ?,"
        " record = ?, expires_at = ? WHERE id = ?",
        (
            record.event_id,
            record.image_id,
            record.received,
            record.duplicates,
            _encode(record),
            now + ttl,
            kept[0],
        ),
    )


def note_duplicate(db: sqlite3.Connection, event_id: str) -> None:
    """A copy of a handled event came again: counted on its record (when one is kept)."""
    db.execute(
        "UPDATE history SET duplicates = duplicates + 1"
        " WHERE id = (SELECT rowid FROM events WHERE event_id = ?) AND event_id = ?",
        (event_id, event_id),
    )


def purge_history(db: sqlite3.Connection, now: float) -> None:
    db.execute("DELETE FROM history WHERE expires_at <= ?", (now,))


def read_records(db: sqlite3.Connection, query: HistoryQuery, now: float) -> list[EventRecord]:
    where: list[str] = ["expires_at > ?"]
    values: list[str | float] = [now]
    if query.event_id is not None:
        where.append("id = (SELECT rowid FROM events WHERE event_id = ?) AND event_id = ?")
        values += [query.event_id, query.event_id]
    if query.image_id is not None:
        where.append("image_id = ?")
        values.append(query.image_id)
    if query.since is not None:
        where.append("received >= ?")
        values.append(query.since)
    if query.handler is not None:
        where.append("EXISTS (SELECT 1 FROM json_each(record, '$[8]') WHERE value = ?)")
        values.append(query.handler)
    # Only fixed fragments are joined; every value is a parameter.
    sql = "SELECT event_id, record, duplicates, image_id, received FROM history WHERE "
    sql += " AND ".join(where) + " ORDER BY received DESC, id DESC LIMIT ?"
    rows = db.execute(sql, (*values, query.limit))
    return select((_decode(*row) for row in rows), query)


def _encode(record: EventRecord) -> str:
    handlers = [
        [name, h.outcome, h.attempts, h.error, h.reference, h.silence]
        for name, h in record.handlers.items()
    ]
    return jsoncodec.dumps(
        [
            _VERSION,
            record.state,
            record.account,
            record.region,
            record.time,
            record.outcome,
            record.image_name,
            record.image_tags,
            record.matched,
            handlers,
            record.updated,
        ]
    )


def _decode(
    event_id: str, text: str, duplicates: int, image_id: str, received: float
) -> EventRecord:
    _, state, account, region, time, outcome, name, tags, matched, handlers, updated = (
        jsoncodec.loads(text)
    )
    return EventRecord(
        event_id=event_id,
        image_id=image_id,
        state=state,
        account=account,
        region=region,
        time=time,
        received=received,
        outcome=outcome,
        matched=tuple(matched),
        handlers={h[0]: HandlerRecord(h[1], h[2], h[3], h[4], h[5]) for h in handlers},
        image_name=name,
        image_tags=tags,
        duplicates=duplicates,
        updated=updated,
    )


class SqliteHistory:
    """`History` for `SqliteStore`: written by the ledger's writes (`write_record`, in the
    group commit); read on the worker thread's connection, off the event loop."""

    _ttl: float
    _path: Any
    _clock: Callable[[], float]
    _closed: bool
    _executor: ThreadPoolExecutor
    _waiting: sqlite3.Connection | None

    async def events(self, query: HistoryQuery) -> list[EventRecord]:
        db = self._waiting
        if self._closed or db is None:
            raise LedgerUnavailable("the ledger is closed")
        now = self._clock()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, read_records, db, query, now
            )
        except sqlite3.Error as error:
            raise LedgerUnavailable(f"sqlite ledger {self._path}: {error}") from error
