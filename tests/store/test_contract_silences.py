"""The SilenceStore contract, held against every backend: memory, sqlite and dynamodb (moto)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import cast

import pytest

from amid.store.base import SILENCE_KEPT, SilenceRecord, SilenceStore
from tests.store.conftest import FakeClock, Store

T0 = 1_750_000_000.0
HOUR = 3600.0


def silence(ident: str = "a1b2c3d4e5f6", **changes: object) -> SilenceRecord:
    base = SilenceRecord(
        id=ident,
        match={"detail": {"ImageId": ["ami-0123456789abcdef0"]}},
        handlers=("ops-slack",),
        starts=T0,
        ends=T0 + HOUR,
        author="alice",
        comment="migrating the payments account; ünïcode is fine",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def _open(store: Store) -> SilenceStore:
    return cast(SilenceStore, await store.open())


@pytest.fixture(autouse=True)
def _at_t0(clock: FakeClock) -> None:
    clock.now = T0


class TestAddAndList:
    async def test_no_silence_is_kept_at_first(self, store: Store) -> None:
        assert await (await _open(store)).silences() == []

    async def test_an_added_silence_comes_back_whole(self, store: Store) -> None:
        silences = await _open(store)
        await silences.add_silence(silence())
        assert await silences.silences() == [silence()]

    async def test_every_handler_is_an_empty_tuple_and_times_keep_their_fraction(
        self, store: Store
    ) -> None:
        silences = await _open(store)
        wide = silence(handlers=(), starts=T0 + 0.125, ends=T0 + 90.5)
        await silences.add_silence(wide)
        assert await silences.silences() == [wide]

    async def test_silences_are_listed_by_their_end(self, store: Store) -> None:
        silences = await _open(store)
        await silences.add_silence(silence("late", ends=T0 + 3 * HOUR))
        await silences.add_silence(silence("early", ends=T0 + HOUR))
        assert [s.id for s in await silences.silences()] == ["early", "late"]

    async def test_an_id_cannot_be_added_twice(self, store: Store) -> None:
        silences = await _open(store)
        await silences.add_silence(silence())
        with pytest.raises(ValueError, match="exists"):
            await silences.add_silence(silence(comment="another"))
        assert [s.comment for s in await silences.silences()] == [silence().comment]

    async def test_another_replica_sees_a_silence_at_once(self, store: Store) -> None:
        first, second = await _open(store), await _open(store)
        await first.add_silence(silence())
        assert await second.silences() == [silence()]


class TestKeeping:
    async def test_an_ended_silence_is_kept_seven_days_then_forgotten(
        self, store: Store, clock: FakeClock
    ) -> None:
        silences = await _open(store)
        await silences.add_silence(silence())
        clock.advance(HOUR + SILENCE_KEPT - 1)
        assert [s.id for s in await silences.silences()] == [silence().id]
        clock.advance(2)
        assert await silences.silences() == []


class TestExpire:
    async def test_expire_ends_the_silence_at_the_time_given(
        self, store: Store, clock: FakeClock
    ) -> None:
        silences = await _open(store)
        await silences.add_silence(silence())
        clock.advance(60)
        expired = await silences.expire_silence(silence().id, T0 + 60)
        assert expired == silence(ends=T0 + 60)
        assert await silences.silences() == [silence(ends=T0 + 60)]

    async def test_an_expired_silence_is_kept_seven_days_from_its_new_end(
        self, store: Store, clock: FakeClock
    ) -> None:
        silences = await _open(store)
        await silences.add_silence(silence())
        await silences.expire_silence(silence().id, T0 + 60)
        clock.advance(60 + SILENCE_KEPT + 1)
        assert await silences.silences() == []

    async def test_expiring_a_silence_that_has_ended_keeps_its_end(
        self, store: Store, clock: FakeClock
    ) -> None:
        silences = await _open(store)
        await silences.add_silence(silence())
        clock.advance(2 * HOUR)
        assert await silences.expire_silence(silence().id, T0 + 2 * HOUR) == silence()

    async def test_expiring_an_unknown_id_finds_nothing(self, store: Store) -> None:
        assert await (await _open(store)).expire_silence("nope", T0) is None

    async def test_replicas_expiring_at_once_agree(self, store: Store) -> None:
        replicas = [await _open(store) for _ in range(4)]
        await replicas[0].add_silence(silence())
        results = await asyncio.gather(
            *(r.expire_silence(silence().id, T0 + 10 + i) for i, r in enumerate(replicas))
        )
        assert all(result is not None for result in results)
        (kept,) = await replicas[0].silences()
        assert T0 + 10 <= kept.ends <= T0 + 13


async def test_silences_survive_a_restart(durable_store: Store) -> None:
    first = await _open(durable_store)
    await first.add_silence(silence())
    await durable_store.aclose()
    assert await (await _open(durable_store)).silences() == [silence()]
