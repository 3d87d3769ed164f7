"""SQLite store: the default; survives restarts of a single host.

Statements run on the event loop when the file is free: with WAL and
synchronous=NORMAL a transaction takes microseconds and never waits for the
disk. When another connection holds the lock (a second amid on the host, an
operator's sqlite3 shell), that connection answers "busy" at once and the
transaction moves to a worker thread, which waits up to `busy_timeout`; a
locked file never blocks the loop. Several processes may share the file:
claims are taken inside `BEGIN IMMEDIATE` transactions.

Group commit: the calls made within one turn of the event loop (the claims of
one receive's messages, the records of deliveries that ended together) share
one transaction, each still atomic on its own: a body that raises is rolled
back alone (SAVEPOINTs, see `_run_group`) and its caller gets the error, the
others commit. No caller hears back before the COMMIT, so what a caller was
told is as durable as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from amid.store.base import (
    Claim,
    EventRecord,
    ExpectationState,
    ExpectationSteps,
    LeaseLost,
    LedgerUnavailable,
)
from amid.store.sqlite import conversations
from amid.store.sqlite.conversations import SqliteConversations
from amid.store.sqlite.history import (
    HISTORY_SCHEMA,
    SqliteHistory,
    note_duplicate,
    purge_history,
    write_record,
)
from amid.store.sqlite.silences import SILENCE_SCHEMA, SqliteSilences

_T = TypeVar("_T")

_SCHEMA = (
    """
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
CREATE TABLE IF NOT EXISTS expectations (
    name            TEXT PRIMARY KEY,
    started         REAL NOT NULL,
    last_seen       REAL,
    episode         REAL,
    told            TEXT NOT NULL DEFAULT '[]',
    ended           REAL,
    ended_told      TEXT NOT NULL DEFAULT '[]',
    ended_recovered TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at);
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (expires_at);
CREATE TABLE IF NOT EXISTS images (
    region     TEXT NOT NULL,
    image_id   TEXT NOT NULL,
    facts      TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (region, image_id)
);
CREATE INDEX IF NOT EXISTS images_expiry ON images (expires_at);
"""
    + conversations.SCHEMA
)

_PURGE_EVERY = 60.0
_CHECKPOINT_EVERY = 1000  # inline commits
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

Body = Callable[[sqlite3.Connection, float], _T]
# What one body of a group came to: (True, its result) or (False, what it raised).
_Outcome = tuple[bool, Any]


class SqliteStore(SqliteSilences, SqliteConversations, SqliteHistory, ExpectationSteps):
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
        self._inline: sqlite3.Connection | None = None  # the loop's: never waits for a lock
        self._waiting: sqlite3.Connection | None = None  # the worker's: waits busy_timeout
        self._next_purge = 0.0
        self._purging: Future[None] | None = None
        self._commits = 0
        self._closed = False
        self._group: list[tuple[Body[Any], asyncio.Future[Any]]] = []  # for the next commit

    @classmethod
    async def open(
        cls, path: Path, ttl: float, clock: Callable[[], float] = time.time
    ) -> SqliteStore:
        """Open (creating the file and schema); raises LedgerUnavailable if the path is unusable."""
        ledger = cls(path, ttl, clock)
        try:
            await asyncio.get_running_loop().run_in_executor(ledger._executor, ledger._connect)
        except sqlite3.Error as error:
            await ledger.aclose()
            raise LedgerUnavailable(f"sqlite ledger {path}: {error}") from error
        return ledger

    def _connect(self) -> None:
        waiting = self._open_connection(self._busy_timeout)
        try:
            waiting.executescript(_SCHEMA + SILENCE_SCHEMA + HISTORY_SCHEMA)
            inline = self._open_connection(0.0)
            # Checkpoints write the WAL back to the file: the worker does that, not the loop.
            inline.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error:
            waiting.close()
            raise
        self._waiting, self._inline = waiting, inline

    def _open_connection(self, timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _run_group(self, db: sqlite3.Connection | None, bodies: list[Body[Any]]) -> list[_Outcome]:
        """One BEGIN IMMEDIATE ... COMMIT for all `bodies`, each atomic on its own.

        The bodies run one after the other; when none raises (nearly always) that is all.
        When one raises, the whole transaction is rolled back and run again with a
        SAVEPOINT per body, so the failing one is rolled back alone and its error is its
        outcome (the bodies are functions of the file and `now`: the second run sees what
        the first saw). An error of the transaction itself (busy, I/O, a failed COMMIT)
        rolls everything back and propagates: no body of the group took effect.
        """
        if db is None:
            raise LedgerUnavailable("the ledger is closed")
        now = self._clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            try:
                outcomes: list[_Outcome] = [(True, body(db, now)) for body in bodies]
            except Exception:
                if len(bodies) == 1 or not db.in_transaction:
                    raise
                db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                outcomes = [self._run_savepoint(db, body, now) for body in bodies]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _run_savepoint(self, db: sqlite3.Connection, body: Body[Any], now: float) -> _Outcome:
        db.execute("SAVEPOINT body")
        try:
            result = body(db, now)
        except Exception as error:
            if isinstance(error, sqlite3.OperationalError) and (
                error.sqlite_errorcode in _BUSY_CODES
            ):
                raise  # the group as a whole moves to the worker
            if not db.in_transaction:
                raise  # sqlite rolled the whole transaction back (I/O error, full disk)
            db.execute("ROLLBACK TO body")
            db.execute("RELEASE body")
            if isinstance(error, sqlite3.Error):
                error = LedgerUnavailable(f"sqlite ledger {self._path}: {error}")
            return (False, error)
        db.execute("RELEASE body")
        return (True, result)

    async def _transact(self, body: Body[_T]) -> _T:
        """Run `body` in the transaction of the calls made in this turn of the loop."""
        if self._closed:
            raise LedgerUnavailable("the ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._group.append((body, future))
        if len(self._group) == 1:
            loop.call_soon(self._commit_group)
        return await future

    def _commit_group(self) -> None:
        # A caller cancelled before its turn (shutdown) is left out.
        group = [(body, future) for body, future in self._group if not future.done()]
        self._group = []
        if not group:
            return
        bodies = [body for body, _ in group]
        futures = [future for _, future in group]
        try:
            outcomes = self._run_group(self._inline, bodies)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode not in _BUSY_CODES:
                _fail(futures, LedgerUnavailable(f"sqlite ledger {self._path}: {error}"))
                return
        except sqlite3.Error as error:
            _fail(futures, LedgerUnavailable(f"sqlite ledger {self._path}: {error}"))
            return
        except Exception as error:  # noqa: BLE001 - the closed ledger's LedgerUnavailable
            _fail(futures, error)
            return
        else:
            _settle(futures, outcomes)
            self._purge_when_due()
            return
        # Another connection holds the lock: the worker waits for it, the loop does not.
        waiting = asyncio.get_running_loop().run_in_executor(
            self._executor, self._run_group, self._waiting, bodies
        )
        waiting.add_done_callback(lambda done: self._settle_waited(futures, done))

    def _settle_waited(self, futures: list[asyncio.Future[Any]], done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            _fail(futures, LedgerUnavailable("the ledger is closed"))
            return
        error = done.exception()
        if isinstance(error, sqlite3.Error):
            error = LedgerUnavailable(f"sqlite ledger {self._path}: {error}")
        if error is not None:
            _fail(futures, error)
            return
        _settle(futures, done.result())

    def _purge_when_due(self) -> None:
        """After an inline commit: now and then, purge and checkpoint on the worker."""
        self._commits += 1
        now = self._clock()
        if self._purging is not None and not self._purging.done():
            return
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY
            self._commits = 0
            self._purging = self._executor.submit(self._purge, now)
        elif self._commits >= _CHECKPOINT_EVERY:
            # The inline connection never checkpoints; keep the WAL (and its index) small.
            self._commits = 0
            self._purging = self._executor.submit(self._checkpoint)

    def _purge(self, now: float) -> None:
        """Forget expired events, then checkpoint, on the worker thread."""
        db = self._waiting
        if db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            db.execute("DELETE FROM events WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM deliveries WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM images WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM silences WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM conversations WHERE expires_at <= ?", (now,))
            purge_history(db, now)
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Write the WAL back into the database file (PASSIVE: writers go on meanwhile)."""
        db = self._waiting
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")

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
                note_duplicate(db, event_id)
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

        return await self._transact(body)

    @staticmethod
    def _holds(db: sqlite3.Connection, event_id: str, owner: str, now: float) -> bool:
        row = db.execute(
            # Held = still ours: a lapsed lease nobody took over is still ours to record on.
            "SELECT 1 FROM events WHERE event_id = ? AND owner = ? AND expires_at > ?",
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

        return await self._transact(body)

    async def record_delivery(self, event_id: str, handler: str, owner: str) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            if not self._holds(db, event_id, owner, now):
                raise LeaseLost(f"lease on {event_id} is no longer held by {owner}")
            _record_deliveries(db, [(event_id, handler, now + self._ttl)])

        await self._transact(body)

    async def complete(
        self,
        event_id: str,
        owner: str,
        delivered: Collection[str] = (),
        record: EventRecord | None = None,
    ) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            marked = db.execute(
                # Only while held (see _holds); raising rolls the mark back with the rest.
                "UPDATE events SET done = 1, owner = NULL, lease_until = 0, expires_at = ?"
                " WHERE event_id = ? AND owner = ? AND expires_at > ?",
                (now + self._ttl, event_id, owner, now),
            )
            if marked.rowcount == 0:
                raise LeaseLost(f"lease on {event_id} is no longer held by {owner}")
            _record_deliveries(db, [(event_id, handler, now + self._ttl) for handler in delivered])
            if record is not None:
                write_record(db, record, now, self._ttl)

        await self._transact(body)

    async def release(self, event_id: str, owner: str, record: EventRecord | None = None) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            db.execute(
                "UPDATE events SET owner = NULL, lease_until = 0 WHERE event_id = ? AND owner = ?",
                (event_id, owner),
            )
            if record is not None:
                write_record(db, record, now, self._ttl)

        await self._transact(body)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._group:
            self._commit_group()  # calls made just before the close still get their answer
        inline, waiting = self._inline, self._waiting
        self._inline = self._waiting = None

        def close() -> None:
            for db in (inline, waiting):
                if db is not None:
                    db.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)

    # --- images ---

    async def remember(
        self, region: str, image_id: str, image: Mapping[str, Any], keep: float
    ) -> None:
        await self.remember_many(region, {image_id: image}, keep)

    async def remember_many(
        self, region: str, images: Mapping[str, Mapping[str, Any]], keep: float
    ) -> None:
        rows = [(region, image_id, json.dumps(facts)) for image_id, facts in images.items()]

        def body(db: sqlite3.Connection, now: float) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO images (region, image_id, facts, expires_at)"
                " VALUES (?, ?, ?, ?)",
                [(*row, now + keep) for row in rows],
            )

        await self._transact(body)

    async def recall(self, region: str, image_id: str) -> dict[str, Any] | None:
        def body(db: sqlite3.Connection, now: float) -> str | None:
            row = db.execute(
                "SELECT facts FROM images WHERE region = ? AND image_id = ? AND expires_at > ?",
                (region, image_id, now),
            ).fetchone()
            return str(row[0]) if row is not None else None

        facts = await self._transact(body)
        if facts is None:
            return None
        loaded: dict[str, Any] = json.loads(facts)
        return loaded

    # --- digests ---

    async def record_digest(self, handler: str, event_ids: Sequence[str], owner: str) -> None:
        def body(db: sqlite3.Connection, now: float) -> None:
            for event_id in event_ids:
                if not self._holds(db, event_id, owner, now):
                    # Raised inside the transaction: it rolls back, nothing is recorded.
                    raise LeaseLost(f"lease on {event_id} is no longer held by {owner}")
            _record_deliveries(db, [(event_id, handler, now + self._ttl) for event_id in event_ids])

        if event_ids:
            await self._transact(body)

    # --- expectations ---

    async def expectation(self, name: str) -> ExpectationState | None:
        return await self._transact(lambda db, now: _read_expectation(db, name))

    async def _change_expectation(
        self,
        name: str,
        started: float | None,
        step: Callable[[ExpectationState], ExpectationState],
    ) -> ExpectationState:
        """Read, step and write back in one transaction; created (clock at `started`) when new."""

        def body(db: sqlite3.Connection, now: float) -> ExpectationState:
            state = _read_expectation(db, name)
            old = state
            if state is None:
                state = ExpectationState(
                    name, started=round(now, 3) if started is None else started
                )
            state = step(state)
            if state != old:
                db.execute(
                    "INSERT OR REPLACE INTO expectations (name, started, last_seen, episode,"
                    " told, ended, ended_told, ended_recovered) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        state.name,
                        state.started,
                        state.last_seen,
                        state.episode,
                        _names(state.told),
                        state.ended,
                        _names(state.ended_told),
                        _names(state.ended_recovered),
                    ),
                )
            return state

        return await self._transact(body)


def _record_deliveries(db: sqlite3.Connection, rows: list[tuple[str, str, float]]) -> None:
    """(event id, handler, expires at): each handler's success, as the ledger keeps it."""
    if rows:
        db.executemany(
            "INSERT OR REPLACE INTO deliveries (event_id, handler, expires_at) VALUES (?, ?, ?)",
            rows,
        )


def _names(handlers: frozenset[str]) -> str:
    return json.dumps(sorted(handlers))


def _read_expectation(db: sqlite3.Connection, name: str) -> ExpectationState | None:
    row = db.execute(
        "SELECT started, last_seen, episode, told, ended, ended_told, ended_recovered"
        " FROM expectations WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    started, last_seen, episode, told, ended, ended_told, ended_recovered = row
    return ExpectationState(
        name,
        started=started,
        last_seen=last_seen,
        episode=episode,
        told=frozenset(json.loads(told)),
        ended=ended,
        ended_told=frozenset(json.loads(ended_told)),
        ended_recovered=frozenset(json.loads(ended_recovered)),
    )


def _settle(futures: list[asyncio.Future[Any]], outcomes: list[_Outcome]) -> None:
    for future, (ok, value) in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _fail(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    """`error` for every caller: a group of one gets its body's own (a LeaseLost stays one)."""
    for index, future in enumerate(futures):
        if not future.done():
            future.set_exception(error if index == 0 else LedgerUnavailable(str(error)))
