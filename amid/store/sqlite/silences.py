"""SQLite store: run-time silences (`amid silence add`), one row each.

A mixin of `SqliteStore`: its statements run in the store's group-committed
transactions (`_transact`). A row is forgotten SILENCE_KEPT after the silence
ends (`expires_at`, purged with the ledger's expired rows).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from amid.store.base import SILENCE_KEPT, SilenceRecord

_T = TypeVar("_T")

SILENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id         TEXT PRIMARY KEY,
    match      TEXT NOT NULL,
    handlers   TEXT NOT NULL,
    starts     REAL NOT NULL,
    ends       REAL NOT NULL,
    author     TEXT NOT NULL,
    comment    TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

_COLUMNS = "id, match, handlers, starts, ends, author, comment"


class SqliteSilences:
    async def _transact(self, body: Callable[[sqlite3.Connection, float], _T]) -> _T:
        raise NotImplementedError  # SqliteStore's group commit

    async def add_silence(self, silence: SilenceRecord) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            try:
                db.execute(
                    "INSERT INTO silences (id, match, handlers, starts, ends, author, comment,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        silence.id,
                        json.dumps(silence.match, sort_keys=True),
                        json.dumps(list(silence.handlers)),
                        silence.starts,
                        silence.ends,
                        silence.author,
                        silence.comment,
                        silence.ends + SILENCE_KEPT,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a silence with id {silence.id} exists") from None

        await self._transact(body)

    async def silences(self) -> list[SilenceRecord]:
        def body(db: sqlite3.Connection, now: float) -> list[SilenceRecord]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM silences WHERE expires_at > ? ORDER BY ends, id",  # noqa: S608 - constant columns
                (now,),
            )
            return [_record(row) for row in rows]

        return await self._transact(body)

    async def expire_silence(self, silence_id: str, at: float) -> SilenceRecord | None:
        def body(db: sqlite3.Connection, now: float) -> SilenceRecord | None:
            db.execute(
                "UPDATE silences SET ends = ?, expires_at = ? WHERE id = ? AND ends > ?",
                (at, at + SILENCE_KEPT, silence_id, at),
            )
            row = db.execute(
                f"SELECT {_COLUMNS} FROM silences WHERE id = ? AND expires_at > ?",  # noqa: S608 - constant columns
                (silence_id, now),
            ).fetchone()
            return _record(row) if row is not None else None

        return await self._transact(body)


def _record(row: tuple[Any, ...]) -> SilenceRecord:
    ident, match, handlers, starts, ends, author, comment = row
    return SilenceRecord(
        id=ident,
        match=json.loads(match),
        handlers=tuple(json.loads(handlers)),
        starts=starts,
        ends=ends,
        author=author,
        comment=comment,
    )
