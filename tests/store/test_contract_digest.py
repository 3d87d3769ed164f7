"""Ledger.record_digest, held against every backend: one atomic write for a whole digest."""

from __future__ import annotations

import pytest

from amid.store.base import Claim, LeaseLost, Ledger
from tests.store.conftest import LEASE, TTL, FakeClock, Store

EVENTS = [f"7f1c0b8e-0000-4000-8000-{number:012d}" for number in range(1, 4)]
# The most one digest carries (DigestConfig.max_events): one DynamoDB transaction.
HUNDRED = [f"5e0a0000-0000-4000-8000-{number:012d}" for number in range(100)]


async def claim_all(ledger: Ledger, events: list[str], owner: str) -> None:
    for event in events:
        assert await ledger.claim(event, owner, LEASE) is not None


class TestRecordDigest:
    async def test_every_event_of_the_digest_is_recorded_for_the_handler(
        self, ledger: Ledger
    ) -> None:
        await claim_all(ledger, EVENTS, "a")
        await ledger.record_digest("slack", EVENTS, "a")
        for event in EVENTS:
            await ledger.release(event, "a")
            assert await ledger.claim(event, "b", LEASE) == Claim(frozenset({"slack"}))

    async def test_a_digest_of_a_hundred_events_is_recorded_whole(self, ledger: Ledger) -> None:
        await claim_all(ledger, HUNDRED, "a")
        await ledger.record_digest("slack", HUNDRED, "a")
        for event in HUNDRED:
            assert await ledger.claim(event, "a", LEASE) == Claim(frozenset({"slack"}))

    async def test_nothing_is_recorded_when_one_event_is_held_by_another_owner(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await claim_all(ledger, EVENTS, "a")
        clock.advance(LEASE + 1)
        await ledger.extend(EVENTS[0], "a", LEASE)
        await ledger.extend(EVENTS[2], "a", LEASE)
        assert await ledger.claim(EVENTS[1], "b", LEASE) is not None  # took over the lapsed one
        with pytest.raises(LeaseLost):
            await ledger.record_digest("slack", EVENTS, "a")
        assert await ledger.claim(EVENTS[0], "a", LEASE) == Claim(frozenset())
        assert await ledger.claim(EVENTS[2], "a", LEASE) == Claim(frozenset())
        assert await ledger.claim(EVENTS[1], "b", LEASE) == Claim(frozenset())

    async def test_nothing_is_recorded_when_one_event_was_released(self, ledger: Ledger) -> None:
        await claim_all(ledger, EVENTS, "a")
        await ledger.release(EVENTS[2], "a")
        with pytest.raises(LeaseLost):
            await ledger.record_digest("slack", EVENTS, "a")
        assert await ledger.claim(EVENTS[0], "a", LEASE) == Claim(frozenset())

    async def test_a_digest_record_and_other_handlers_records_add_up(self, ledger: Ledger) -> None:
        await claim_all(ledger, EVENTS, "a")
        await ledger.record_delivery(EVENTS[0], "audit", "a")
        await ledger.record_digest("slack", EVENTS, "a")
        await ledger.complete(EVENTS[0], "a", delivered=["hook"])
        assert await ledger.claim(EVENTS[0], "b", LEASE) == Claim(
            frozenset({"audit", "slack", "hook"}), done=True
        )

    async def test_digests_of_two_handlers_over_the_same_events_both_count(
        self, ledger: Ledger
    ) -> None:
        await claim_all(ledger, EVENTS, "a")
        await ledger.record_digest("slack", EVENTS, "a")
        await ledger.record_digest("sns", EVENTS[:2], "a")
        assert await ledger.claim(EVENTS[0], "a", LEASE) == Claim(frozenset({"slack", "sns"}))
        assert await ledger.claim(EVENTS[2], "a", LEASE) == Claim(frozenset({"slack"}))

    async def test_the_record_survives_another_owner_taking_over_a_lapsed_lease(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        # The claim that takes the event over rewrites what the store holds for it;
        # a digest's record must come through that and make the handler a duplicate.
        await claim_all(ledger, EVENTS, "a")
        await ledger.record_digest("slack", EVENTS, "a")
        clock.advance(LEASE + 1)
        assert await ledger.claim(EVENTS[0], "b", LEASE) == Claim(frozenset({"slack"}))
        clock.advance(LEASE + 1)
        assert await ledger.claim(EVENTS[0], "c", LEASE) == Claim(frozenset({"slack"}))

    async def test_a_lapsed_lease_nobody_took_over_still_records(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await claim_all(ledger, EVENTS, "a")
        clock.advance(LEASE + 1)
        await ledger.record_digest("slack", EVENTS, "a")
        assert await ledger.claim(EVENTS[1], "b", LEASE) == Claim(frozenset({"slack"}))

    async def test_recording_the_same_digest_twice_changes_nothing(self, ledger: Ledger) -> None:
        await claim_all(ledger, EVENTS, "a")
        await ledger.record_digest("slack", EVENTS, "a")
        await ledger.record_digest("slack", EVENTS, "a")
        assert await ledger.claim(EVENTS[0], "a", LEASE) == Claim(frozenset({"slack"}))

    async def test_an_empty_digest_records_nothing(self, ledger: Ledger) -> None:
        await ledger.record_digest("slack", [], "a")
        assert await ledger.claim(EVENTS[0], "a", LEASE) == Claim(frozenset())

    async def test_the_record_is_forgotten_with_the_event_after_the_ttl(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await claim_all(ledger, EVENTS, "a")
        await ledger.record_digest("slack", EVENTS, "a")
        await ledger.complete(EVENTS[0], "a")
        clock.advance(TTL + 2)
        assert await ledger.claim(EVENTS[0], "b", LEASE) == Claim(frozenset())

    async def test_a_durable_ledger_keeps_the_record_across_close_and_reopen(
        self, durable_store: Store
    ) -> None:
        first = await durable_store.open()
        await claim_all(first, EVENTS, "a")
        await first.record_digest("slack", EVENTS, "a")
        await first.aclose()
        second = await durable_store.open()
        for event in EVENTS:
            await second.release(event, "a")
            assert await second.claim(event, "b", LEASE) == Claim(frozenset({"slack"}))
