"""The pipeline stage on its own: what it writes to the ledger, and when."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from typing import Any

from amid.config import parse_config
from amid.handlers.base import Notification
from amid.metrics import Metrics
from amid.pipeline.process import Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.store.base import EventRecord
from amid.store.memory import MemoryStore
from amid.tools.offline import synthetic_event


class SpyLedger(MemoryStore):
    """The memory ledger, noting every write: a unit test of the stage, not of a store."""

    def __init__(self) -> None:
        super().__init__(ttl=3600)
        self.writes: list[tuple[str, tuple[str, ...]]] = []

    async def record_delivery(self, event_id: str, handler: str, owner: str) -> None:
        self.writes.append(("record", (handler,)))
        await super().record_delivery(event_id, handler, owner)

    async def complete(
        self,
        event_id: str,
        owner: str,
        delivered: Collection[str] = (),
        record: EventRecord | None = None,
    ) -> None:
        self.writes.append(("complete", tuple(delivered)))
        await super().complete(event_id, owner, delivered, record)


class GatedHandler:
    def __init__(self, name: str, gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.gate = gate
        self.sent = 0

    def render(self, notification: Notification) -> Any:
        return {}

    async def pace(self) -> None:
        return None

    async def send(self, notification: Notification) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.sent += 1

    async def aclose(self) -> None:
        return None


def runtime_with(*handlers: GatedHandler) -> Runtime:
    config = parse_config(
        json.dumps(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                "handlers": [{"name": h.name, "type": "console"} for h in handlers],
            }
        ),
        env={},
    )
    return Runtime(config, Router(config.handlers), {h.name: h for h in handlers})


async def test_one_handler_costs_one_claim_and_one_complete():
    ledger = SpyLedger()
    pipeline = Pipeline(ledger=ledger, metrics=Metrics(), owner="me", lease=30)
    outcome = await pipeline.process(json.dumps(synthetic_event()), runtime_with(GatedHandler("a")))
    assert outcome.label == "handled"
    assert ledger.writes == [("complete", ("a",))]


async def test_a_success_is_recorded_at_once_while_another_handler_still_runs():
    ledger = SpyLedger()
    gate = asyncio.Event()
    fast, slow = GatedHandler("fast"), GatedHandler("slow", gate)
    pipeline = Pipeline(ledger=ledger, metrics=Metrics(), owner="me", lease=30)
    task = asyncio.create_task(
        pipeline.process(json.dumps(synthetic_event()), runtime_with(fast, slow))
    )
    for _ in range(100):
        if ledger.writes:
            break
        await asyncio.sleep(0.01)
    assert ledger.writes == [("record", ("fast",))], "recorded before the slow one finishes"
    gate.set()
    outcome = await task
    assert outcome.label == "handled"
    assert ledger.writes == [("record", ("fast",)), ("complete", ("slow",))]


async def test_a_duplicate_calls_nothing_and_writes_nothing():
    ledger = SpyLedger()
    handler = GatedHandler("a")
    pipeline = Pipeline(ledger=ledger, metrics=Metrics(), owner="me", lease=30)
    body = json.dumps(synthetic_event())
    await pipeline.process(body, runtime_with(handler))
    outcome = await pipeline.process(body, runtime_with(handler))
    assert outcome.label == "duplicate" and outcome.delete
    assert handler.sent == 1
    assert ledger.writes == [("complete", ("a",))]


async def test_an_event_no_handler_matches_is_handled_not_a_duplicate():
    ledger = SpyLedger()
    config = parse_config(
        json.dumps(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                "handlers": [
                    {"name": "a", "type": "console", "match": {"detail": {"State": ["failed"]}}}
                ],
            }
        ),
        env={},
    )
    handler = GatedHandler("a")
    runtime = Runtime(config, Router(config.handlers), {"a": handler})
    pipeline = Pipeline(ledger=ledger, metrics=Metrics(), owner="me", lease=30)
    body = json.dumps(synthetic_event("available"))
    first = await pipeline.process(body, runtime)
    second = await pipeline.process(body, runtime)
    assert (first.label, first.delete) == ("handled", True)
    assert (second.label, second.delete) == ("duplicate", True)
    assert handler.sent == 0
