"""The Ledger contract, held against every backend: memory, sqlite and dynamodb (moto)."""

from __future__ import annotations

import asyncio

import pytest

from amid.store.base import Claim, LeaseLost, Ledger
from tests.store.conftest import LEASE, TTL, FakeClock, Store

EVENT = "7f1c0b8e-0000-4000-8000-000000000001"
OTHER_EVENT = "7f1c0b8e-0000-4000-8000-000000000002"


class TestClaim:
    async def test_a_first_claim_holds_the_event_with_nothing_delivered(
        self, ledger: Ledger
    ) -> None:
        assert await ledger.claim(EVENT, "a", LEASE) == Claim(frozenset())

    async def test_another_owner_is_refused_while_the_lease_is_live(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        clock.advance(LEASE - 1)
        assert await ledger.claim(EVENT, "b", LEASE) is None

    async def test_another_owner_takes_the_event_once_the_lease_has_expired(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        clock.advance(LEASE + 1)
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset())
        assert await ledger.claim(EVENT, "a", LEASE) is None

    async def test_the_same_owner_can_claim_again_while_it_holds_the_lease(
        self, ledger: Ledger
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.record_delivery(EVENT, "slack", "a")
        assert await ledger.claim(EVENT, "a", LEASE) == Claim(frozenset({"slack"}))

    async def test_release_lets_another_owner_claim_at_once(self, ledger: Ledger) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.release(EVENT, "a")
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset())

    async def test_release_by_an_owner_that_does_not_hold_the_event_changes_nothing(
        self, ledger: Ledger
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.release(EVENT, "b")
        assert await ledger.claim(EVENT, "b", LEASE) is None

    async def test_concurrent_claims_of_one_event_have_exactly_one_winner(
        self, store: Store
    ) -> None:
        # One ledger per owner: separate connections (sqlite) or requests (dynamodb)
        # racing at the store itself.
        owners = [f"replica-{number}" for number in range(12)]
        ledgers = [await store.open() for _ in owners]
        claims = await asyncio.gather(
            *(
                ledger.claim(EVENT, owner, LEASE)
                for ledger, owner in zip(ledgers, owners, strict=True)
            )
        )
        winners = [owner for owner, claim in zip(owners, claims, strict=True) if claim is not None]
        assert len(winners) == 1
        loser = next(owner for owner in owners if owner != winners[0])
        with pytest.raises(LeaseLost):
            await ledgers[0].record_delivery(EVENT, "audit", loser)


class TestDelivery:
    async def test_a_recorded_handler_is_returned_by_the_next_claim(self, ledger: Ledger) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.release(EVENT, "a")
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset({"slack"}))

    async def test_recording_without_holding_the_event_raises_lease_lost(
        self, ledger: Ledger
    ) -> None:
        with pytest.raises(LeaseLost):
            await ledger.record_delivery(EVENT, "slack", "a")
        assert await ledger.claim(EVENT, "a", LEASE) == Claim(frozenset())

    async def test_a_completed_event_is_returned_done_without_being_held(
        self, ledger: Ledger
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.complete(EVENT, "a")
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset({"slack"}), done=True)
        with pytest.raises(LeaseLost):
            await ledger.record_delivery(EVENT, "sns", "b")

    async def test_completing_twice_raises_lease_lost(self, ledger: Ledger) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.complete(EVENT, "a")
        with pytest.raises(LeaseLost):
            await ledger.complete(EVENT, "a")

    async def test_a_stale_owner_can_neither_record_nor_complete(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        clock.advance(LEASE + 1)
        await ledger.claim(EVENT, "b", LEASE)
        with pytest.raises(LeaseLost):
            await ledger.record_delivery(EVENT, "slack", "a")
        with pytest.raises(LeaseLost):
            await ledger.complete(EVENT, "a")
        await ledger.release(EVENT, "b")
        assert await ledger.claim(EVENT, "c", LEASE) == Claim(frozenset())

    async def test_a_lapsed_lease_nobody_took_over_still_records(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        # A slow store or a long handler can outlive the lease; unless another owner
        # claimed the event since, the success is still this owner's to record.
        await ledger.claim(EVENT, "a", LEASE)
        clock.advance(LEASE + 1)
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.complete(EVENT, "a", delivered=["sns"])
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(
            frozenset({"slack", "sns"}), done=True
        )

    async def test_records_of_different_events_do_not_mix(self, ledger: Ledger) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.claim(OTHER_EVENT, "a", LEASE)
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.record_delivery(OTHER_EVENT, "sns", "a")
        await ledger.complete(EVENT, "a")
        assert await ledger.claim(EVENT, "a", LEASE) == Claim(frozenset({"slack"}), done=True)
        assert await ledger.claim(OTHER_EVENT, "a", LEASE) == Claim(frozenset({"sns"}))


class TestLease:
    async def test_extend_prolongs_the_lease(self, ledger: Ledger, clock: FakeClock) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        clock.advance(LEASE - 5)
        assert await ledger.extend(EVENT, "a", LEASE) is True
        clock.advance(LEASE - 5)
        assert await ledger.claim(EVENT, "b", LEASE) is None
        clock.advance(10)
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset())

    async def test_extend_returns_false_once_the_lease_is_lost(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        clock.advance(LEASE + 1)
        await ledger.claim(EVENT, "b", LEASE)
        assert await ledger.extend(EVENT, "a", LEASE) is False
        assert await ledger.extend(EVENT, "never-claimed", LEASE) is False


class TestRetention:
    async def test_an_event_is_forgotten_entirely_after_the_ttl(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.record_delivery(EVENT, "slack", "a")
        await ledger.complete(EVENT, "a")
        clock.advance(TTL + 2)
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset())

    async def test_an_event_is_remembered_within_the_ttl(
        self, ledger: Ledger, clock: FakeClock
    ) -> None:
        await ledger.claim(EVENT, "a", LEASE)
        await ledger.complete(EVENT, "a")
        clock.advance(TTL - 2)
        assert await ledger.claim(EVENT, "b", LEASE) == Claim(frozenset(), done=True)

    async def test_a_durable_ledger_survives_close_and_reopen(self, durable_store: Store) -> None:
        first = await durable_store.open()
        await first.claim(EVENT, "a", LEASE)
        await first.record_delivery(EVENT, "slack", "a")
        await first.complete(EVENT, "a")
        await first.aclose()
        second = await durable_store.open()
        assert await second.claim(EVENT, "b", LEASE) == Claim(frozenset({"slack"}), done=True)
