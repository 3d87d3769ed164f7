"""The ExpectationStore contract, held against every backend: memory, sqlite and dynamodb (moto)."""

from __future__ import annotations

import asyncio
from typing import cast

from amid.store.base import ExpectationState, ExpectationStore
from tests.store.conftest import TTL, FakeClock, Store

NAME = "nightly-golden-ami"
T0 = 1_750_000_000.0


async def _open(store: Store) -> ExpectationStore:
    return cast(ExpectationStore, await store.open())


class TestClock:
    async def test_an_expectation_amid_never_ran_with_has_no_state(self, store: Store) -> None:
        assert await (await _open(store)).expectation(NAME) is None

    async def test_the_first_start_sets_the_clock_and_later_starts_keep_it(
        self, store: Store
    ) -> None:
        expectations = await _open(store)
        assert await expectations.start_expectation(NAME, T0) == ExpectationState(NAME, T0)
        assert (await expectations.start_expectation(NAME, T0 + 60)).started == T0
        assert await expectations.expectation(NAME) == ExpectationState(NAME, T0)

    async def test_a_matching_event_before_any_start_creates_the_state(self, store: Store) -> None:
        expectations = await _open(store)
        await expectations.saw_expected(NAME, T0 - 5, now=T0)
        assert await expectations.expectation(NAME) == ExpectationState(NAME, T0, last_seen=T0 - 5)

    async def test_the_last_seen_time_only_moves_forward(self, store: Store) -> None:
        expectations = await _open(store)
        await expectations.start_expectation(NAME, T0)
        for moment in (T0 + 5, T0 + 2, T0 + 9.5, T0 + 7):
            await expectations.saw_expected(NAME, moment, now=T0 + 10)
        state = await expectations.expectation(NAME)
        assert state is not None and state.last_seen == T0 + 9.5

    async def test_millisecond_times_come_back_exactly(self, store: Store) -> None:
        expectations = await _open(store)
        await expectations.start_expectation(NAME, T0 + 0.123)
        await expectations.saw_expected(NAME, T0 + 1.001, now=T0 + 2)
        state = await expectations.open_episode(NAME, T0 + 3.457)
        assert (state.started, state.last_seen, state.episode) == (
            T0 + 0.123,
            T0 + 1.001,
            T0 + 3.457,
        )
        assert await expectations.expectation(NAME) == state

    async def test_the_state_never_expires_with_the_ledger_ttl(
        self, store: Store, clock: FakeClock
    ) -> None:
        expectations = await _open(store)
        await expectations.start_expectation(NAME, T0)
        await expectations.open_episode(NAME, T0 + 1)
        clock.advance(10 * TTL)
        state = await expectations.expectation(NAME)
        assert state is not None and state.episode == T0 + 1


class TestEpisodes:
    async def test_an_episode_opens_once_and_a_second_opening_keeps_the_first(
        self, store: Store
    ) -> None:
        expectations = await _open(store)
        await expectations.start_expectation(NAME, T0)
        assert (await expectations.open_episode(NAME, T0 + 10)).episode == T0 + 10
        assert (await expectations.open_episode(NAME, T0 + 20)).episode == T0 + 10

    async def test_handlers_told_are_kept_per_episode(self, store: Store) -> None:
        expectations = await _open(store)
        await expectations.start_expectation(NAME, T0)
        await expectations.open_episode(NAME, T0 + 10)
        await expectations.mark_told(NAME, T0 + 10, "overdue", "slack")
        await expectations.mark_told(NAME, T0 + 10, "overdue", "pager")
        await expectations.mark_told(NAME, T0 + 99, "overdue", "other-episode")
        state = await expectations.expectation(NAME)
        assert state is not None and state.told == {"slack", "pager"}

    async def test_closing_the_open_episode_keeps_who_was_told_for_the_recovery(
        self, store: Store
    ) -> None:
        expectations = await _open(store)
        await expectations.start_expectation(NAME, T0)
        await expectations.open_episode(NAME, T0 + 10)
        await expectations.mark_told(NAME, T0 + 10, "overdue", "slack")
        state = await expectations.close_episode(NAME, T0 + 10)
        assert (state.episode, state.told, state.ended, state.ended_told) == (
            None,
            frozenset(),
            T0 + 10,
            {"slack"},
        )
        await expectations.mark_told(NAME, T0 + 10, "recovered", "slack")
        stored = await expectations.expectation(NAME)
        assert stored is not None and stored.ended_recovered == {"slack"}

    async def test_closing_an_episode_that_is_not_open_changes_nothing(self, store: Store) -> None:
        expectations = await _open(store)
        await expectations.start_expectation(NAME, T0)
        opened = await expectations.open_episode(NAME, T0 + 10)
        assert await expectations.close_episode(NAME, T0 + 5) == opened
        assert await expectations.expectation(NAME) == opened

    async def test_expectations_are_kept_apart_by_name(self, store: Store) -> None:
        expectations = await _open(store)
        await expectations.start_expectation("a", T0)
        await expectations.start_expectation("b", T0 + 1)
        await expectations.open_episode("a", T0 + 10)
        b = await expectations.expectation("b")
        assert b == ExpectationState("b", T0 + 1)


class TestConcurrentWriters:
    """One store object per replica: separate connections (sqlite) or requests (dynamodb)."""

    async def test_concurrent_events_leave_the_latest_time(self, store: Store) -> None:
        replicas = [await _open(store) for _ in range(8)]
        await replicas[0].start_expectation(NAME, T0)
        await asyncio.gather(
            *(r.saw_expected(NAME, T0 + i, now=T0 + 10) for i, r in enumerate(replicas))
        )
        state = await replicas[0].expectation(NAME)
        assert state is not None and state.last_seen == T0 + 7

    async def test_concurrent_openings_agree_on_one_episode(self, store: Store) -> None:
        replicas = [await _open(store) for _ in range(8)]
        await replicas[0].start_expectation(NAME, T0)
        states = await asyncio.gather(
            *(r.open_episode(NAME, T0 + 10 + i) for i, r in enumerate(replicas))
        )
        assert len({s.episode for s in states}) == 1
        stored = await replicas[0].expectation(NAME)
        assert stored is not None and stored.episode == states[0].episode

    async def test_concurrent_marks_of_different_handlers_are_all_kept(self, store: Store) -> None:
        replicas = [await _open(store) for _ in range(8)]
        await replicas[0].start_expectation(NAME, T0)
        await replicas[0].open_episode(NAME, T0 + 10)
        await asyncio.gather(
            *(r.mark_told(NAME, T0 + 10, "overdue", f"h{i}") for i, r in enumerate(replicas))
        )
        state = await replicas[0].expectation(NAME)
        assert state is not None and state.told == {f"h{i}" for i in range(8)}


async def test_the_state_survives_a_restart(durable_store: Store) -> None:
    first = await _open(durable_store)
    await first.start_expectation(NAME, T0)
    await first.saw_expected(NAME, T0 + 3, now=T0 + 3)
    await first.open_episode(NAME, T0 + 30)
    await first.mark_told(NAME, T0 + 30, "overdue", "slack")
    await durable_store.aclose()
    reopened = await _open(durable_store)
    assert await reopened.expectation(NAME) == ExpectationState(
        NAME, T0, last_seen=T0 + 3, episode=T0 + 30, told=frozenset({"slack"})
    )
