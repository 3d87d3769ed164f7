"""One store per backend, a fake clock, and ledgers opened over the store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from amid.store.base import Ledger
from amid.store.dynamodb import DynamoStore, create_table
from amid.store.memory import MemoryStore
from amid.store.sqlite import SqliteStore
from tests.conftest import REGION

TABLE = "amid-dedupe-test"
TTL = 3600.0
LEASE = 30.0


class FakeClock:
    """Epoch seconds that move only when a test advances them."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Store:
    """One backend's store; `open()` gives another ledger over the same data.

    For memory that is the same ledger again: its store is the process.
    """

    name: str
    _open: Callable[[], Awaitable[Ledger]]
    _opened: list[Ledger] = field(default_factory=list)

    async def open(self) -> Ledger:
        ledger = await self._open()
        self._opened.append(ledger)
        return ledger

    async def aclose(self) -> None:
        for ledger in self._opened:
            await ledger.aclose()


async def _store(
    name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: FakeClock,
    stack: contextlib.AsyncExitStack,
) -> Store:
    if name == "memory":
        memory = MemoryStore(ttl=TTL, clock=clock)

        async def open_memory() -> Ledger:
            return memory

        return Store(name, open_memory)
    if name == "sqlite":
        path = tmp_path / "dedupe.sqlite3"

        async def open_sqlite() -> Ledger:
            return await SqliteStore.open(path, ttl=TTL, clock=clock)

        return Store(name, open_sqlite)
    # A sync fixture: async ones cannot be requested from inside a running fixture.
    moto_url = request.getfixturevalue("moto_url")
    client = await stack.enter_async_context(
        get_session().create_client("dynamodb", region_name=REGION, endpoint_url=moto_url)
    )
    await create_table(client, TABLE)

    async def open_dynamodb() -> Ledger:
        return DynamoStore(client, TABLE, ttl=TTL, clock=clock)

    return Store(name, open_dynamodb)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    async with contextlib.AsyncExitStack() as stack:
        opened = await _store(request.param, request, tmp_path, clock, stack)
        stack.push_async_callback(opened.aclose)
        yield opened


@pytest.fixture(params=["sqlite", "dynamodb"])
async def durable_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    async with contextlib.AsyncExitStack() as stack:
        opened = await _store(request.param, request, tmp_path, clock, stack)
        stack.push_async_callback(opened.aclose)
        yield opened


@pytest.fixture
async def ledger(store: Store) -> Ledger:
    return await store.open()
