"""SQLite ledger: the default; survives restarts of a single host.

All statements run on one worker thread, so a locked or slow file never
blocks the event loop. Several processes on one host may share the file:
claims are taken inside `BEGIN IMMEDIATE` transactions.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from amid.dedupe.base import Claim, LeaseLost, LedgerUnavailable

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT PRIMARY KEY,
    owner       TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    done        INTEGER NOT NULL DEFAULT 0,
    expires_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id   TEXT NOT NULL,
    handler    TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (event_id, handler)
);
CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at);
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (expires_at);
"""

_PURGE_EVERY = 60.0


class SqliteLedger:
    def __init__(
        self,
        path: Path,
        ttl: float,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
    ) -> None:
        self._path = path
        self._ttl = ttl
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amid-sqlite")
        self._db: sqlite3.Connection | None = None
        self._next_purge = 0.0
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, ttl: float, clock: Callable[[], float] = time.time
    ) -> SqliteLedger:
        """Open (creating the file and schema); raises LedgerUnavailable if the path is unusable."""
        ledger = cls(path, ttl, clock)
        try:
            await ledger._run(ledger._connect)
        except LedgerUnavailable:
            await ledger.aclose()
            raise
        return ledger

    def _connect(self) -> None:
        db = sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    async def _run(self, function: Callable[[], _T]) -> _T:
        if self._closed:
            raise LedgerUnavailable("the ledger is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function)
        except sqlite3.Error as error:
            raise LedgerUnavailable(f"sqlite ledger {self._path}: {error}") from error

    def _transaction(self, body: Callable[[sqlite3.Connection, float], _T]) -> Callable[[], _T]:
        def run() -> _T:
            db = self._db
            assert db is not None  # noqa: S101 - opened in open()
            now = self._clock()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = body(db, now)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if now >= self._next_purge:
                self._next_purge = now + _PURGE_EVERY
                db.execute("DELETE FROM events WHERE expires_at <= ?", (now,))
                db.execute("DELETE FROM deliveries WHERE expires_at <= ?", (now,))
            return result

        return run

    async def claim(self, event_id: str, owner: str, lease: float) -> Claim | None:
        def body(db: sqlite3.Connection, now: float) -> Claim | None:
            row = db.execute(
                "SELECT owner, lease_until, done FROM events WHERE event_id = ? AND expires_at > ?",
                (event_id, now),
            ).fetchone()
            delivered = frozenset(
                handler
                for (handler,) in db.execute(
                    "SELECT handler FROM deliveries WHERE event_id = ? AND expires_at > ?",
                    (event_id, now),
                )
            )
            if row is not None and row[2]:
                return Claim(delivered, done=True)
            if row is not None and row[0] not in (None, owner) and row[1] > now:
                return None
            db.execute(
                "INSERT INTO events (event_id, owner, lease_until, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET owner = excluded.owner,"
                " lease_until = excluded.lease_until, done = 0,"
                " expires_at = MAX(events.expires_at, ?)",
                (event_id, owner, now + lease, now + self._ttl, now),
            )
            return Claim(delivered)

        return await self._run(self._transaction(body))

    @staticmethod
    def _holds(db: sqlite3.Connection, event_id: str, owner: str, now: float) -> bool:
        row = db.execute(
            "SELECT 1 FROM events WHERE event_id = ? AND owner = ? AND lease_until > ?",
            (event_id, owner, now),
        ).fetchone()
        return row is not None

    async def extend(self, event_id: str, owner: str, lease: float) -> bool:
        def body(db: sqlite3.Connection, now: float) -> bool:
            if not self._holds(db, event_id, owner, now):
                return False
            db.execute(
                "UPDATE events SET lease_until = ? WHERE event_id = ?", (now + lease, event_id)
            )
            return True

        return await self._run(self._transaction(body))

    async def record_delivery(self, event_id: str, handler: str, owner: str) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            if not self._holds(db, event_id, owner, now):
                raise LeaseLost(f"lease on {event_id} is no longer held by {owner}")
            db.execute(
                "INSERT OR REPLACE INTO deliveries (event_id, handler, expires_at)"
                " VALUES (?, ?, ?)",
                (event_id, handler, now + self._ttl),
            )

        await self._run(self._transaction(body))

    async def complete(self, event_id: str, owner: str) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            if not self._holds(db, event_id, owner, now):
                raise LeaseLost(f"lease on {event_id} is no longer held by {owner}")
            db.execute(
                "UPDATE events SET done = 1, owner = NULL, lease_until = 0, expires_at = ?"
                " WHERE event_id = ?",
                (now + self._ttl, event_id),
            )

        await self._run(self._transaction(body))

    async def release(self, event_id: str, owner: str) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            db.execute(
                "UPDATE events SET owner = NULL, lease_until = 0 WHERE event_id = ? AND owner = ?",
                (event_id, owner),
            )

        await self._run(self._transaction(body))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=False)
