"""The sqlite ledger's group commit: the calls of one loop turn share one transaction.

White-box where it must be: the number of commits is read from the ledger's own
connection (sqlite's trace callback); everything else through the Ledger protocol and a
second ledger over the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from amid.store.base import LeaseLost, LedgerUnavailable
from amid.store.sqlite import SqliteStore

TTL = 3600.0
LEASE = 30.0


@contextlib.asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    ledger = await SqliteStore.open(path, TTL)
    try:
        yield ledger
    finally:
        await ledger.aclose()


def count_commits(ledger: SqliteStore) -> list[str]:
    """The COMMIT statements the ledger runs from now on, on either of its connections: a
    group runs on the loop's, or on the worker's when the file is locked (a purge then)."""
    commits: list[str] = []
    for connection in (ledger._inline, ledger._waiting):  # counting transactions is the point
        assert connection is not None
        connection.set_trace_callback(
            lambda statement: commits.append(statement) if statement == "COMMIT" else None
        )
    return commits


async def test_the_claims_of_one_receive_share_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "dedupe.sqlite3"
    async with opened(path) as ledger, opened(path) as other:
        commits = count_commits(ledger)
        claims = await asyncio.gather(*(ledger.claim(f"e{i}", "me", LEASE) for i in range(10)))
        assert all(claim is not None and not claim.done for claim in claims)
        assert len(commits) == 1, commits
        # Committed: another connection finds every one of them held by "me".
        theirs = await asyncio.gather(*(other.claim(f"e{i}", "you", LEASE) for i in range(10)))
        assert theirs == [None] * 10


async def test_a_failing_call_in_a_group_fails_alone_and_the_others_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dedupe.sqlite3"
    async with opened(path) as ledger, opened(path) as other:
        assert await ledger.claim("held", "me", LEASE) is not None
        commits = count_commits(ledger)
        results = await asyncio.gather(
            ledger.claim("a", "me", LEASE),
            ledger.record_delivery("never-claimed", "w", "me"),  # raises LeaseLost
            ledger.complete("held", "me", delivered=["w"]),
            ledger.claim("b", "me", LEASE),
            return_exceptions=True,
        )
        assert len(commits) == 1, commits
        assert isinstance(results[1], LeaseLost)
        assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i != 1)
        # The others took effect; the failed one left nothing behind.
        held = await other.claim("held", "you", LEASE)
        assert held is not None and held.done and held.delivered == frozenset({"w"})
        assert await other.claim("a", "you", LEASE) is None
        assert await other.claim("b", "you", LEASE) is None
        never = await other.claim("never-claimed", "you", LEASE)
        assert never is not None and never.delivered == frozenset()


async def test_calls_in_later_loop_turns_get_their_own_transaction(tmp_path: Path) -> None:
    async with opened(tmp_path / "dedupe.sqlite3") as ledger:
        commits = count_commits(ledger)
        for i in range(3):
            assert await ledger.claim(f"e{i}", "me", LEASE) is not None
        assert len(commits) == 3, commits


async def test_a_locked_file_moves_the_whole_group_to_the_worker_and_the_loop_runs_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dedupe.sqlite3"
    async with opened(path) as ledger:
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
            calls = asyncio.gather(*(ledger.claim(f"e{i}", "me", LEASE) for i in range(5)))
            for _ in range(20):  # the loop keeps turning while the group waits for the lock
                await asyncio.sleep(0)
            assert not calls.done()
            blocker.execute("COMMIT")
            claims = await asyncio.wait_for(calls, timeout=10)
        finally:
            blocker.close()
        assert all(claim is not None for claim in claims)


async def test_a_call_made_just_before_close_gets_its_answer(tmp_path: Path) -> None:
    path = tmp_path / "dedupe.sqlite3"
    ledger = await SqliteStore.open(path, TTL)
    claim = asyncio.ensure_future(ledger.claim("e", "me", LEASE))
    await asyncio.sleep(0)  # the call has joined the group; its commit is not run yet
    await ledger.aclose()
    assert (await claim) is not None
    async with opened(path) as other:
        assert await other.claim("e", "you", LEASE) is None
    with pytest.raises(LedgerUnavailable):
        await ledger.claim("f", "me", LEASE)
