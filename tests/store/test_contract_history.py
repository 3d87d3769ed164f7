"""The History contract (the delivery record, SPEC 3h), held against every backend:
memory, sqlite and dynamodb (moto). Records ride on the ledger's `complete` and `release`."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

from amid.store.base import EventRecord, HandlerRecord, HistoryQuery, LeaseLost
from amid.store.base import Store as StoreProtocol
from amid.store.memory import MemoryStore
from tests.store.conftest import LEASE, TTL, FakeClock, Store

IMAGE = "ami-0123456789abcdef0"
TAGS = {"Team": "payments", "Note": "<script>alert(1)</script>"}


async def opened(store: Store) -> StoreProtocol:
    return cast(StoreProtocol, await store.open())


def record(
    event_id: str,
    clock: FakeClock,
    *,
    outcome: str = "handled",
    image_id: str = IMAGE,
    handlers: dict[str, HandlerRecord] | None = None,
) -> EventRecord:
    handlers = (
        {"ops": HandlerRecord("delivered", 1, reference="msg-1")} if handlers is None else handlers
    )
    return EventRecord(
        event_id=event_id,
        image_id=image_id,
        state="available",
        account="111122223333",
        region="us-east-1",
        time="2025-06-15T12:00:00Z",
        received=clock.now,
        outcome=outcome,
        matched=tuple(sorted(handlers)),
        handlers=handlers,
        image_name="prod-web",
        image_tags=TAGS,
        updated=clock.now,
    )


async def handled(
    ledger: StoreProtocol, event_id: str, clock: FakeClock, **kwargs: object
) -> EventRecord:
    kept = record(event_id, clock, **kwargs)  # type: ignore[arg-type]
    assert await ledger.claim(event_id, "me", LEASE) is not None
    await ledger.complete(event_id, "me", delivered=list(kept.handlers), record=kept)
    return kept


class TestWritten:
    async def test_a_completed_event_reads_back_whole(self, store: Store, clock: FakeClock) -> None:
        ledger = await opened(store)
        kept = await handled(ledger, "e1", clock)
        assert await ledger.events(HistoryQuery(event_id="e1")) == [kept]

    async def test_no_record_is_written_without_one(self, store: Store, clock: FakeClock) -> None:
        ledger = await opened(store)
        assert await ledger.claim("e1", "me", LEASE) is not None
        await ledger.complete("e1", "me", delivered=["ops"])
        assert await ledger.events(HistoryQuery()) == []

    async def test_a_retry_then_success_merges_handler_by_handler(
        self, store: Store, clock: FakeClock
    ) -> None:
        ledger = await opened(store)
        first = record(
            "e1",
            clock,
            outcome="retry",
            handlers={
                "ops": HandlerRecord("delivered", 1, reference="msg-1"),
                "hook": HandlerRecord("failed", 3, error="webhook answered HTTP 500"),
            },
        )
        assert await ledger.claim("e1", "me", LEASE) is not None
        await ledger.release("e1", "me", record=first)
        clock.advance(60)
        second = replace(
            record("e1", clock, handlers={"hook": HandlerRecord("delivered", 2, reference="r2")}),
            matched=("hook", "ops"),
        )
        assert await ledger.claim("e1", "me", LEASE) is not None
        await ledger.complete("e1", "me", delivered=["hook"], record=second)
        (kept,) = await ledger.events(HistoryQuery(event_id="e1"))
        assert kept.outcome == "handled"
        assert kept.received == first.received  # when it first came
        assert kept.handlers == {
            "ops": HandlerRecord("delivered", 1, reference="msg-1"),
            "hook": HandlerRecord("delivered", 5, reference="r2"),
        }

    async def test_a_release_no_longer_held_still_writes_its_record(
        self, store: Store, clock: FakeClock
    ) -> None:
        ledger = await opened(store)
        assert await ledger.claim("e1", "other", LEASE) is not None
        await ledger.release("e1", "me", record=record("e1", clock, outcome="retry"))
        (kept,) = await ledger.events(HistoryQuery(event_id="e1"))
        assert kept.outcome == "retry"

    async def test_a_refused_completion_writes_no_record(
        self, store: Store, clock: FakeClock
    ) -> None:
        ledger = await opened(store)
        try:
            await ledger.complete("e1", "me", delivered=["ops"], record=record("e1", clock))
        except LeaseLost:
            pass
        assert await ledger.events(HistoryQuery(event_id="e1")) == []

    async def test_a_claim_of_a_done_event_counts_the_copy_on_its_record(
        self, store: Store, clock: FakeClock
    ) -> None:
        ledger = await opened(store)
        kept = await handled(ledger, "e1", clock)
        for _ in range(2):
            claim = await ledger.claim("e1", "another", LEASE)
            assert claim is not None and claim.done
        (read,) = await ledger.events(HistoryQuery(event_id="e1"))
        assert read == replace(kept, duplicates=2)

    async def test_a_copy_of_an_event_with_no_record_leaves_none(
        self, store: Store, clock: FakeClock
    ) -> None:
        ledger = await opened(store)
        assert await ledger.claim("e1", "me", LEASE) is not None
        await ledger.complete("e1", "me", delivered=["ops"])
        assert await ledger.claim("e1", "me", LEASE) is not None
        assert await ledger.events(HistoryQuery()) == []


class TestRead:
    async def test_newest_first_with_a_limit(self, store: Store, clock: FakeClock) -> None:
        ledger = await opened(store)
        for number in range(5):
            await handled(ledger, f"e{number}", clock)
            clock.advance(10)
        read = await ledger.events(HistoryQuery(limit=3))
        assert [r.event_id for r in read] == ["e4", "e3", "e2"]

    async def test_newest_by_when_it_was_received_not_by_when_it_was_written(
        self, store: Store, clock: FakeClock
    ) -> None:
        ledger = await opened(store)
        await handled(ledger, "late", clock)
        clock.advance(-100)  # received earlier, its delivery ended after the other's
        await handled(ledger, "early", clock)
        read = await ledger.events(HistoryQuery(limit=1))
        assert [r.event_id for r in read] == ["late"]

    async def test_by_image(self, store: Store, clock: FakeClock) -> None:
        ledger = await opened(store)
        await handled(ledger, "e1", clock)
        clock.advance(1)
        await handled(ledger, "e2", clock, image_id="ami-0fffffffffffffff0")
        clock.advance(1)
        await handled(ledger, "e3", clock)
        read = await ledger.events(HistoryQuery(image_id=IMAGE))
        assert [r.event_id for r in read] == ["e3", "e1"]

    async def test_by_handler(self, store: Store, clock: FakeClock) -> None:
        ledger = await opened(store)
        await handled(ledger, "e1", clock)
        clock.advance(1)
        await handled(ledger, "e2", clock, handlers={"pager": HandlerRecord("delivered", 1)})
        read = await ledger.events(HistoryQuery(handler="pager"))
        assert [r.event_id for r in read] == ["e2"]

    async def test_since(self, store: Store, clock: FakeClock) -> None:
        ledger = await opened(store)
        await handled(ledger, "old", clock)
        clock.advance(600)
        await handled(ledger, "new", clock)
        read = await ledger.events(HistoryQuery(since=clock.now - 300))
        assert [r.event_id for r in read] == ["new"]

    async def test_records_are_kept_for_the_ttl_then_forgotten(
        self, store: Store, clock: FakeClock
    ) -> None:
        ledger = await opened(store)
        await handled(ledger, "e1", clock)
        clock.advance(TTL - 60)
        assert len(await ledger.events(HistoryQuery(event_id="e1"))) == 1
        clock.advance(120)
        assert await ledger.events(HistoryQuery(event_id="e1")) == []
        assert await ledger.events(HistoryQuery()) == []

    async def test_another_store_over_the_same_data_reads_them(
        self, durable_store: Store, clock: FakeClock
    ) -> None:
        kept = await handled(await opened(durable_store), "e1", clock)
        other = await opened(durable_store)
        assert await other.events(HistoryQuery(image_id=IMAGE)) == [kept]


async def test_memory_keeps_a_bounded_recent_window(clock: FakeClock) -> None:
    memory = MemoryStore(ttl=TTL, clock=clock)
    memory.history_max = 3
    for number in range(5):
        await handled(cast(StoreProtocol, memory), f"e{number}", clock)
        clock.advance(1)
    read = await memory.events(HistoryQuery(limit=10))
    assert [r.event_id for r in read] == ["e4", "e3", "e2"]


async def test_create_table_adds_the_record_indexes_to_a_table_made_before_them(
    moto_url: str,
) -> None:
    from aiobotocore.session import get_session

    from amid.store.dynamodb import DynamoStore, create_table
    from tests.conftest import REGION

    async with get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=moto_url
    ) as client:
        await client.create_table(
            TableName="amid-before-history",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        await create_table(client, "amid-before-history")
        table = (await client.describe_table(TableName="amid-before-history"))["Table"]
        assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {
            "history-by-image",
            "history-recent",
        }
        clock = FakeClock()
        store = DynamoStore(client, "amid-before-history", ttl=TTL, clock=clock)
        kept = await handled(cast(StoreProtocol, store), "e1", clock)
        assert await store.events(HistoryQuery(image_id=IMAGE)) == [kept]
        assert await store.events(HistoryQuery()) == [kept]
