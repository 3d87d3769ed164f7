"""The ConversationStore contract (SPEC 3d), held against every backend: memory, sqlite and
dynamodb (moto). Exactly one claimant per key, the parent kept, replies recorded once,
a released key free again, everything kept `keep` after its last write."""

from __future__ import annotations

import asyncio
from typing import cast

from amid.store.base import (
    Conversation,
    ConversationStore,
    claim_conversation,
    release_conversation,
    reply_in_conversation,
    start_conversation,
)
from tests.store.conftest import FakeClock, Store

HANDLER = "ops-slack"
KEY = "ami-0123456789abcdef0"
KEEP = 30 * 86400.0
LEASE = 30.0
T0 = 1_746_102_896.0
AVAILABLE = (T0, "available 1 May 12:34")
DEREGISTERED = (T0 + 3600, "deregistered 1 May 13:34")
SHOWN_AVAILABLE = '{"text": "available"}'


async def _open(store: Store) -> ConversationStore:
    return cast(ConversationStore, await store.open())


async def _started(conversations: ConversationStore, key: str = KEY) -> Conversation:
    await conversations.change_conversation(HANDLER, key, claim_conversation("a", LEASE), KEEP)
    started = start_conversation("C1", "1733312345.000100", "e1", AVAILABLE, SHOWN_AVAILABLE)
    return await conversations.change_conversation(HANDLER, key, started, KEEP)


class TestClaim:
    async def test_a_key_never_used_has_no_conversation(self, store: Store) -> None:
        assert await (await _open(store)).conversation(HANDLER, KEY) is None

    async def test_the_first_claimant_holds_the_key_and_a_second_does_not(
        self, store: Store
    ) -> None:
        conversations = await _open(store)
        first = await conversations.change_conversation(
            HANDLER, KEY, claim_conversation("a", LEASE), KEEP
        )
        second = await conversations.change_conversation(
            HANDLER, KEY, claim_conversation("b", LEASE), KEEP
        )
        assert first.owner == "a" and not first.started
        assert second.owner == "a", "b sees a's claim and waits for its ts"

    async def test_racing_claimants_on_two_openings_leave_exactly_one_owner(
        self, store: Store
    ) -> None:
        openings = [await _open(store) for _ in range(4)]
        results = await asyncio.gather(
            *(
                opening.change_conversation(
                    HANDLER, KEY, claim_conversation(f"owner-{n}", LEASE), KEEP
                )
                for n, opening in enumerate(openings)
            )
        )
        winners = {result.owner for result in results}
        assert len(winners) == 1
        kept = await openings[0].conversation(HANDLER, KEY)
        assert kept is not None and kept.owner in winners

    async def test_a_claim_that_ran_out_can_be_taken(self, store: Store, clock: FakeClock) -> None:
        conversations = await _open(store)
        await conversations.change_conversation(HANDLER, KEY, claim_conversation("a", LEASE), KEEP)
        clock.advance(LEASE + 1)
        taken = await conversations.change_conversation(
            HANDLER, KEY, claim_conversation("b", LEASE), KEEP
        )
        assert taken.owner == "b"

    async def test_a_released_key_is_free_for_the_next_event(self, store: Store) -> None:
        conversations = await _open(store)
        await conversations.change_conversation(HANDLER, KEY, claim_conversation("a", LEASE), KEEP)
        await conversations.change_conversation(HANDLER, KEY, release_conversation("b"), KEEP)
        held = await conversations.conversation(HANDLER, KEY)
        assert held is not None and held.owner == "a", "only the owner releases"
        await conversations.change_conversation(HANDLER, KEY, release_conversation("a"), KEEP)
        taken = await conversations.change_conversation(
            HANDLER, KEY, claim_conversation("b", LEASE), KEEP
        )
        assert taken.owner == "b"

    async def test_a_started_conversation_is_not_claimed_again(self, store: Store) -> None:
        conversations = await _open(store)
        started = await _started(conversations)
        again = await conversations.change_conversation(
            HANDLER, KEY, claim_conversation("b", LEASE), KEEP
        )
        assert again == started and again.owner is None


class TestConversation:
    async def test_the_parent_is_kept_with_its_channel_ts_and_history(self, store: Store) -> None:
        conversations = await _open(store)
        await _started(conversations)
        kept = await (await _open(store)).conversation(HANDLER, KEY)
        assert kept == Conversation(
            channel="C1",
            ts="1733312345.000100",
            history=(AVAILABLE,),
            replies=(("e1", "1733312345.000100"),),
            shown=SHOWN_AVAILABLE,
            shown_at=T0,
        )

    async def test_a_reply_is_recorded_once(self, store: Store) -> None:
        conversations = await _open(store)
        await _started(conversations)
        step = reply_in_conversation("e2", "1733312346.000101", DEREGISTERED, '{"text": "d"}')
        await conversations.change_conversation(HANDLER, KEY, step, KEEP)
        again = reply_in_conversation("e2", "1733312399.000109", DEREGISTERED, '{"text": "d"}')
        kept = await conversations.change_conversation(HANDLER, KEY, again, KEEP)
        assert kept.history == (AVAILABLE, DEREGISTERED)
        assert kept.reply_to("e2") == "1733312346.000101"
        assert kept.shown == '{"text": "d"}'

    async def test_an_older_event_arriving_late_goes_into_the_history_not_the_parent(
        self, store: Store
    ) -> None:
        conversations = await _open(store)
        await _started(conversations)
        earlier = (T0 - 60, "failed 1 May 12:33")
        step = reply_in_conversation("e0", "1733312347.000102", earlier, '{"text": "f"}')
        kept = await conversations.change_conversation(HANDLER, KEY, step, KEEP)
        assert kept.history == (earlier, AVAILABLE), "the history line is in time order"
        assert kept.shown == SHOWN_AVAILABLE and kept.shown_at == T0

    async def test_replies_of_racing_events_are_all_kept(self, store: Store) -> None:
        openings = [await _open(store) for _ in range(3)]
        await _started(openings[0])
        await asyncio.gather(
            *(
                opening.change_conversation(
                    HANDLER,
                    KEY,
                    reply_in_conversation(f"e{n}", f"1.{n}", (T0 + n, f"s{n}"), f'"s{n}"'),
                    KEEP,
                )
                for n, opening in enumerate(openings, start=2)
            )
        )
        kept = await openings[0].conversation(HANDLER, KEY)
        assert kept is not None
        assert [text for _, text in kept.history] == [AVAILABLE[1], "s2", "s3", "s4"]
        assert kept.shown == '"s4"', "the newest event's message, whoever wrote last"

    async def test_a_restart_moves_the_parent_and_keeps_the_history(self, store: Store) -> None:
        conversations = await _open(store)
        await _started(conversations)
        step = start_conversation("C1", "1733399999.000200", "e3", DEREGISTERED, '"d"')
        kept = await conversations.change_conversation(HANDLER, KEY, step, KEEP)
        assert kept.ts == "1733399999.000200"
        assert kept.history == (AVAILABLE, DEREGISTERED)

    async def test_keys_and_handlers_are_kept_apart(self, store: Store) -> None:
        conversations = await _open(store)
        await _started(conversations)
        assert await conversations.conversation(HANDLER, "ami-other") is None
        assert await conversations.conversation("other-slack", KEY) is None

    async def test_a_long_key_is_kept_too(self, store: Store) -> None:
        conversations = await _open(store)
        key = "pipeline/" + "x" * 3000
        await _started(conversations, key)
        kept = await conversations.conversation(HANDLER, key)
        assert kept is not None and kept.started


class TestKeeping:
    async def test_kept_for_keep_after_the_last_write(self, store: Store, clock: FakeClock) -> None:
        conversations = await _open(store)
        await _started(conversations)
        clock.advance(KEEP - 10)
        assert await conversations.conversation(HANDLER, KEY) is not None
        await conversations.change_conversation(
            HANDLER, KEY, reply_in_conversation("e2", "2.0", DEREGISTERED, '"d"'), KEEP
        )
        clock.advance(KEEP - 10)
        assert await conversations.conversation(HANDLER, KEY) is not None, "renewed by the reply"
        clock.advance(20)
        assert await conversations.conversation(HANDLER, KEY) is None

    async def test_an_expired_conversation_starts_afresh(
        self, store: Store, clock: FakeClock
    ) -> None:
        conversations = await _open(store)
        await _started(conversations)
        clock.advance(KEEP + 1)
        fresh = await conversations.change_conversation(
            HANDLER, KEY, claim_conversation("b", LEASE), KEEP
        )
        assert fresh.owner == "b" and not fresh.started and fresh.history == ()

    async def test_a_durable_store_keeps_conversations_across_openings(
        self, durable_store: Store
    ) -> None:
        await _started(cast(ConversationStore, await durable_store.open()))
        reopened = cast(ConversationStore, await durable_store.open())
        kept = await reopened.conversation(HANDLER, KEY)
        assert kept is not None and kept.ts == "1733312345.000100"
