"""The ImageMemory contract, held against every backend: memory, sqlite and dynamodb (moto)."""

from __future__ import annotations

from typing import cast

from amid.store.base import Store as StoreProtocol
from tests.store.conftest import FakeClock, Store

REGION = "us-east-1"
IMAGE = "ami-0123456789abcdef0"
FACTS = {
    "name": "prod-web-2025-05-01",
    "owner": "111122223333",
    "tags": {"Team": "payments", "Empty": ""},
    "public": False,
}
KEEP = 90 * 86400.0


async def memory_of(store: Store) -> StoreProtocol:
    return cast(StoreProtocol, await store.open())


class TestRemember:
    async def test_remembered_facts_are_recalled_as_they_were(self, store: Store) -> None:
        memory = await memory_of(store)
        await memory.remember(REGION, IMAGE, FACTS, KEEP)
        assert await memory.recall(REGION, IMAGE) == FACTS

    async def test_an_image_never_remembered_is_none(self, store: Store) -> None:
        memory = await memory_of(store)
        assert await memory.recall(REGION, IMAGE) is None

    async def test_images_are_kept_apart_by_region_and_id(self, store: Store) -> None:
        memory = await memory_of(store)
        await memory.remember(REGION, IMAGE, FACTS, KEEP)
        assert await memory.recall("eu-west-1", IMAGE) is None
        assert await memory.recall(REGION, "ami-0fffffffffffffff0") is None

    async def test_remembering_again_replaces_the_facts(self, store: Store) -> None:
        memory = await memory_of(store)
        await memory.remember(REGION, IMAGE, FACTS, KEEP)
        await memory.remember(REGION, IMAGE, {**FACTS, "tags": {"Team": "search"}}, KEEP)
        recalled = await memory.recall(REGION, IMAGE)
        assert recalled is not None and recalled["tags"] == {"Team": "search"}

    async def test_a_recalled_copy_changed_by_the_caller_leaves_the_memory_alone(
        self, store: Store
    ) -> None:
        memory = await memory_of(store)
        await memory.remember(REGION, IMAGE, FACTS, KEEP)
        recalled = await memory.recall(REGION, IMAGE)
        assert recalled is not None
        recalled["tags"]["Team"] = "changed"
        assert await memory.recall(REGION, IMAGE) == FACTS


class TestKeep:
    async def test_facts_are_kept_for_keep_then_forgotten(
        self, store: Store, clock: FakeClock
    ) -> None:
        memory = await memory_of(store)
        await memory.remember(REGION, IMAGE, FACTS, 3600)
        clock.advance(3599)
        assert await memory.recall(REGION, IMAGE) == FACTS
        clock.advance(2)
        assert await memory.recall(REGION, IMAGE) is None

    async def test_remembering_again_renews_the_time_from_the_last_sighting(
        self, store: Store, clock: FakeClock
    ) -> None:
        memory = await memory_of(store)
        await memory.remember(REGION, IMAGE, FACTS, 3600)
        clock.advance(3000)
        await memory.remember(REGION, IMAGE, FACTS, 3600)
        clock.advance(3000)
        assert await memory.recall(REGION, IMAGE) == FACTS

    async def test_image_memory_does_not_follow_the_ledger_ttl(
        self, store: Store, clock: FakeClock
    ) -> None:
        memory = await memory_of(store)  # the ledger's ttl is an hour; the image's keep 90 days
        await memory.remember(REGION, IMAGE, FACTS, KEEP)
        clock.advance(30 * 86400)
        assert await memory.recall(REGION, IMAGE) == FACTS


class TestRememberMany:
    async def test_many_images_are_remembered_at_once(self, store: Store) -> None:
        memory = await memory_of(store)
        images = {f"ami-{n:017x}": {"name": f"img-{n}", "tags": {}} for n in range(60)}
        await memory.remember_many(REGION, images, KEEP)
        for image_id, facts in images.items():
            assert await memory.recall(REGION, image_id) == facts

    async def test_remembering_none_is_fine(self, store: Store) -> None:
        memory = await memory_of(store)
        await memory.remember_many(REGION, {}, KEEP)
        assert await memory.recall(REGION, IMAGE) is None


class TestShared:
    async def test_another_replica_or_a_restart_recalls_what_one_remembered(
        self, durable_store: Store
    ) -> None:
        first = await memory_of(durable_store)
        await first.remember(REGION, IMAGE, FACTS, KEEP)
        await first.aclose()
        second = await memory_of(durable_store)
        assert await second.recall(REGION, IMAGE) == FACTS

    async def test_image_memory_and_event_records_live_side_by_side(self, store: Store) -> None:
        memory = await memory_of(store)
        await memory.remember(REGION, IMAGE, FACTS, KEEP)
        claim = await memory.claim(IMAGE, "a", 30)
        assert claim is not None and not claim.done
        await memory.complete(IMAGE, "a", ["slack"])
        assert await memory.recall(REGION, IMAGE) == FACTS
