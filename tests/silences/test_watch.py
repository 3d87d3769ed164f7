"""A silence on an expectation, in the watch: the overdue notice waits for the silence's end,
and the watch wakes then. A memory store, a clock the test moves, `check_all` as one wake."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from amid.config import parse_config
from amid.expectations import Expectations
from amid.expectations.watch import Watcher
from amid.handlers import Handler
from amid.metrics import Metrics
from amid.pipeline.process import Runtime
from amid.pipeline.routing import Router
from amid.silences import Silences
from amid.store.memory import MemoryStore
from tests.expectations.test_watch import Flaky
from tests.store.conftest import FakeClock

START = datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp()
NIGHTLY = {"name": "nightly", "every": "10s", "grace": "5s", "notify": ["ops", "pager"]}
# 10:00:00 to 10:00:20 UTC each day: the expectation falls due at 10:00:15, inside it.
FREEZE = {
    "name": "freeze",
    "expectations": ["nightly"],
    "schedule": "0 10 * * *",
    "duration": "20s",
    "handlers": ["ops"],
}


def runtime(handlers: dict[str, Handler]) -> Runtime:
    document: dict[str, Any] = {
        "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
        "defaults": {"retry": {"attempts": 1}},
        "handlers": [{"name": name, "type": "console"} for name in ("ops", "pager")],
        "expectations": [NIGHTLY],
        "silences": [FREEZE],
    }
    config = parse_config(json.dumps(document), env={})
    return Runtime(
        config,
        Router(config.handlers),
        handlers,
        Expectations(config.expectations),
        silences=Silences(config.silences),
    )


async def test_the_held_notice_goes_out_at_the_silences_end_and_only_then() -> None:
    clock = FakeClock(START)
    store = MemoryStore(ttl=3600, clock=clock)
    watcher = Watcher(store, Metrics(), owner="me", lease=30, clock=clock)
    ops, pager = Flaky("ops", 0), Flaky("pager", 0)
    run = runtime({"ops": ops, "pager": pager})

    assert await watcher.check_all(run) == START + 15  # the due moment
    clock.now = START + 15
    wake = await watcher.check_all(run)
    assert (len(ops.sent), len(pager.sent)) == (0, 1), "pager is not covered by the silence"
    assert wake == START + 20 + 0.01, "the watch wakes just after the silence ends"

    clock.now = START + 18  # a wake before the end (another expectation, a reload)
    assert await watcher.check_all(run) == START + 20 + 0.01
    assert ops.sent == []

    clock.now = wake
    await watcher.check_all(run)
    clock.now = wake + 30
    await watcher.check_all(run)
    assert len(ops.sent) == 1 and len(pager.sent) == 1
    assert ops.sent[0].status == "overdue"


async def test_an_episode_that_ends_during_the_silence_sends_nothing() -> None:
    clock = FakeClock(START)
    store = MemoryStore(ttl=3600, clock=clock)
    watcher = Watcher(store, Metrics(), owner="me", lease=30, clock=clock)
    ops = Flaky("ops", 0)
    run = runtime({"ops": ops})
    await watcher.check_all(run)
    clock.now = START + 15
    await watcher.check_all(run)
    await store.saw_expected("nightly", START + 17, now=START + 17)  # the event came
    clock.now = START + 18  # the episode ends, in the silence (the next is due at +32)
    await watcher.check_all(run)
    clock.now = START + 21
    await watcher.check_all(run)
    assert ops.sent == [], "neither the held overdue nor a recovered for it"
