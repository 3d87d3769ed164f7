"""The road tells the watcher: claimed first copies move the clock, nothing else does."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from amid.expectations.watch import Watcher
from amid.metrics import Metrics
from amid.pipeline.process import Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.store.base import LedgerUnavailable
from amid.store.memory import MemoryStore
from amid.tools.offline import synthetic_event
from tests.expectations.test_watch import NIGHTLY, console, runtime


class FailingExpectations(MemoryStore):
    """The memory store whose expectation writes fail (a unit test of the stage)."""

    async def saw_expected(self, name: str, at: float, now: float) -> None:
        raise LedgerUnavailable("expectation state unavailable")


def pipeline(store: MemoryStore) -> Pipeline:
    metrics = Metrics()
    watcher = Watcher(store, metrics, owner="me", lease=30)
    return Pipeline(ledger=store, metrics=metrics, owner="me", lease=30, watcher=watcher)


def event_at(time: str, **changes: Any) -> dict[str, Any]:
    event = synthetic_event("available")
    event["time"] = time
    event.update(changes)
    return event


def epoch(time: str) -> float:
    return datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()


async def test_a_matching_event_moves_the_clock_to_its_time() -> None:
    store = MemoryStore(ttl=3600)
    handler, _ = console()
    outcome = await pipeline(store).process(
        json.dumps(event_at("2026-01-01T10:00:00Z")), runtime([NIGHTLY], {"ops": handler})
    )
    state = await store.expectation("nightly")
    assert outcome.label == "handled"
    assert state is not None and state.last_seen == epoch("2026-01-01T10:00:00Z")


async def test_a_duplicate_copy_changes_nothing() -> None:
    store = MemoryStore(ttl=3600)
    handler, _ = console()
    road = pipeline(store)
    run = runtime([NIGHTLY], {"ops": handler})
    first = event_at("2026-01-01T10:00:00Z")
    await road.process(json.dumps(first), run)
    # The same event id again, even one claiming a later time: a duplicate.
    copy = {**first, "time": "2026-01-01T11:00:00Z"}
    outcome = await road.process(json.dumps(copy), run)
    state = await store.expectation("nightly")
    assert outcome.label == "duplicate"
    assert state is not None and state.last_seen == epoch("2026-01-01T10:00:00Z")


async def test_an_event_matching_an_expectation_and_no_handler_is_deleted() -> None:
    store = MemoryStore(ttl=3600)
    handler, out = console()
    run = runtime([NIGHTLY], {"ops": handler})
    run = Runtime(run.config, Router([]), {}, run.expectations)  # no handler matches anything
    outcome = await pipeline(store).process(json.dumps(event_at("2026-01-01T10:00:00Z")), run)
    assert (outcome.label, outcome.delete) == ("handled", True)
    assert out.getvalue() == ""


async def test_when_the_store_cannot_take_the_event_the_message_stays_and_no_handler_runs() -> None:
    store = FailingExpectations(ttl=3600)
    handler, out = console()
    outcome = await pipeline(store).process(
        json.dumps(event_at("2026-01-01T10:00:00Z")), runtime([NIGHTLY], {"ops": handler})
    )
    assert (outcome.label, outcome.delete, outcome.reason) == ("retry", False, "ledger_unavailable")
    assert out.getvalue() == ""
    # The claim was given back: another replica may take the redelivery at once.
    assert await store.claim(outcome.event.id if outcome.event else "", "other", 30) is not None


async def test_an_event_the_expectation_does_not_match_leaves_its_clock_alone() -> None:
    store = MemoryStore(ttl=3600)
    handler, _ = console()
    failed = event_at("2026-01-01T10:00:00Z")
    failed["detail"]["State"] = "failed"
    await pipeline(store).process(json.dumps(failed), runtime([NIGHTLY], {"ops": handler}))
    assert await store.expectation("nightly") is None
