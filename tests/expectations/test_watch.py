"""The watch on its own: a memory store, a clock the test moves, real console handlers.

`check_all` is one wake of the daemon's task; the tests call it where the task
would wake, so no test waits for time to pass.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest

from amid.config import parse_config
from amid.events import AmiStateChange
from amid.expectations import Expectations
from amid.expectations.watch import Watcher, notice_id
from amid.handlers import Handler
from amid.handlers.base import ExpectationNotice, HandlerError, Sendable
from amid.handlers.console import ConsoleHandler
from amid.metrics import Metrics
from amid.pipeline.decode import decode
from amid.pipeline.process import Runtime
from amid.pipeline.routing import Router
from amid.store.memory import MemoryStore
from amid.tools.offline import synthetic_event
from tests.store.conftest import FakeClock

START = 1_750_000_000.0


class Flaky:
    """A handler that fails its first `failures` sends (a unit test of the watch, not of a handler)."""

    def __init__(self, name: str, failures: int) -> None:
        self.name = name
        self.failures = failures
        self.sent: list[ExpectationNotice] = []

    def render(self, message: Sendable) -> Any:
        return {}

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise HandlerError("down", retryable=True, reason="http_500")
        assert isinstance(message, ExpectationNotice)
        self.sent.append(message)

    async def aclose(self) -> None:
        return None


def runtime(expectations: list[dict[str, Any]], handlers: dict[str, Handler]) -> Runtime:
    config = parse_config(
        json.dumps(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                "defaults": {"retry": {"attempts": 1}},
                "handlers": [{"name": name, "type": "console"} for name in handlers],
                "expectations": expectations,
            }
        ),
        env={},
    )
    return Runtime(config, Router(config.handlers), handlers, Expectations(config.expectations))


NIGHTLY = {
    "name": "nightly",
    "match": {"detail": {"State": ["available"]}},
    "every": "10s",
    "grace": "5s",
    "notify": ["ops"],
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(ttl=3600, clock=clock)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def watcher(store: MemoryStore, metrics: Metrics, clock: FakeClock) -> Watcher:
    return Watcher(store, metrics, owner="me", lease=30, clock=clock)


def console(name: str = "ops") -> tuple[ConsoleHandler, io.StringIO]:
    out = io.StringIO()
    config = parse_config(
        json.dumps(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/1/q"},
                "handlers": [{"name": name, "type": "console"}],
            }
        ),
        env={},
    )
    return ConsoleHandler(config.handlers[0], Metrics(), stream=out), out  # type: ignore[arg-type]


def available(**changes: Any) -> AmiStateChange:
    raw = synthetic_event("available")
    raw.update(changes)
    event = decode(json.dumps(raw))
    assert isinstance(event, AmiStateChange)
    return event


def overdue(metrics: Metrics, name: str = "nightly") -> float | None:
    return metrics.registry.get_sample_value("amid_expectation_overdue", {"expectation": name})


def sent(metrics: Metrics, handler: str, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "amid_expectation_notifications_total",
        {"expectation": "nightly", "handler": handler, "status": status},
    )
    return value or 0.0


class TestOverdue:
    async def test_the_first_wake_starts_the_clock_and_sleeps_until_due(
        self, watcher: Watcher, store: MemoryStore, metrics: Metrics
    ) -> None:
        handler, out = console()
        wake = await watcher.check_all(runtime([NIGHTLY], {"ops": handler}))
        assert wake == START + 15
        assert (await store.expectation("nightly")) is not None
        assert out.getvalue() == ""
        assert overdue(metrics) == 0

    async def test_at_the_due_time_each_handler_is_told_once(
        self, watcher: Watcher, clock: FakeClock, metrics: Metrics
    ) -> None:
        handler, out = console()
        run = runtime([NIGHTLY], {"ops": handler})
        await watcher.check_all(run)
        clock.advance(15)
        wake = await watcher.check_all(run)
        clock.advance(60)
        await watcher.check_all(run)
        lines = out.getvalue().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(
            "[ops] ⏰ nightly: no matching AMI event for 15s since amid began watching "
            "(expected every 10s)"
        )
        assert wake == START + 15 + 30  # overdue: looks again now and then
        assert overdue(metrics) == 1
        assert sent(metrics, "ops", "overdue") == 1

    async def test_a_matching_event_ends_the_episode_with_one_recovered(
        self, watcher: Watcher, clock: FakeClock, metrics: Metrics
    ) -> None:
        handler, out = console()
        run = runtime([NIGHTLY], {"ops": handler})
        await watcher.check_all(run)
        clock.advance(20)
        await watcher.check_all(run)
        await watcher.saw(available(), run, clock())
        wake = await watcher.check_all(run)
        await watcher.check_all(run)
        lines = out.getvalue().splitlines()
        assert [line.split(":")[0] for line in lines] == ["[ops] ⏰ nightly", "[ops] ✅ nightly"]
        assert overdue(metrics) == 0
        assert sent(metrics, "ops", "recovered") == 1
        assert wake == pytest.approx(clock() + 15, abs=1)  # the event's time, to the second

    async def test_a_sighting_wakes_the_watch_only_when_something_may_be_owed(
        self, watcher: Watcher, store: MemoryStore, clock: FakeClock
    ) -> None:
        handler, _ = console()
        run = runtime([NIGHTLY], {"ops": handler})
        await watcher.saw(available(), run, clock())
        assert watcher.woken  # never checked yet: look now
        await watcher.check_all(run)
        watcher._wake.clear()  # what the watch's loop does before it sleeps
        clock.advance(1)
        await watcher.saw(available(), run, clock())
        state = await store.expectation("nightly")
        assert state is not None and state.last_seen == pytest.approx(clock(), abs=1)
        assert not watcher.woken  # nothing owed: the later due time is found at the next wake
        clock.advance(20)
        await watcher.check_all(run)  # overdue now: an episode is open
        watcher._wake.clear()
        await watcher.saw(available(), run, clock())
        assert watcher.woken  # the sighting may end the episode: look at once

    async def test_an_event_matching_no_expectation_changes_nothing(
        self, watcher: Watcher, store: MemoryStore, clock: FakeClock
    ) -> None:
        handler, _ = console()
        run = runtime([NIGHTLY], {"ops": handler})
        await watcher.check_all(run)
        failed = decode(json.dumps(synthetic_event("failed")))
        assert isinstance(failed, AmiStateChange)
        await watcher.saw(failed, run, clock())
        state = await store.expectation("nightly")
        assert state is not None and state.last_seen is None

    async def test_without_expectations_the_watch_sleeps_until_woken(
        self, watcher: Watcher
    ) -> None:
        handler, _ = console()
        assert await watcher.check_all(runtime([], {"ops": handler})) == math.inf


class TestFailedSends:
    async def test_a_failed_send_is_tried_again_on_a_later_wake_and_delivered_once(
        self, watcher: Watcher, clock: FakeClock, metrics: Metrics
    ) -> None:
        flaky = Flaky("ops", failures=2)
        run = runtime([NIGHTLY], {"ops": flaky})  # type: ignore[dict-item]
        await watcher.check_all(run)
        clock.advance(15)
        first = await watcher.check_all(run)
        assert flaky.sent == [] and START + 15 < first <= START + 16  # backoff ~1 s
        clock.advance(first - clock())
        second = await watcher.check_all(run)
        assert flaky.sent == [] and second - clock() > 1  # the backoff grows
        clock.advance(second - clock())
        await watcher.check_all(run)
        await watcher.check_all(run)
        assert [notice.status for notice in flaky.sent] == ["overdue"]
        assert sent(metrics, "ops", "overdue") == 1

    async def test_one_handler_failing_does_not_repeat_the_other(
        self, watcher: Watcher, clock: FakeClock
    ) -> None:
        handler, out = console()
        flaky = Flaky("pager", failures=1)
        run = runtime(
            [{**NIGHTLY, "notify": ["ops", "pager"]}],
            {"ops": handler, "pager": flaky},  # type: ignore[dict-item]
        )
        await watcher.check_all(run)
        clock.advance(15)
        await watcher.check_all(run)
        clock.advance(5)
        await watcher.check_all(run)
        assert len(out.getvalue().splitlines()) == 1
        assert len(flaky.sent) == 1


class TestAcrossRestartsAndReplicas:
    async def test_a_notice_recorded_in_the_ledger_but_not_marked_is_not_sent_again(
        self, watcher: Watcher, store: MemoryStore, clock: FakeClock
    ) -> None:
        # A crash after the ledger recorded the send, before the expectation state was marked.
        handler, out = console()
        run = runtime([NIGHTLY], {"ops": handler})
        await watcher.check_all(run)
        due = START + 15
        await store.open_episode("nightly", due)
        ident = notice_id("nightly", due, "overdue")
        await store.claim(ident, "crashed", 30)
        await store.record_delivery(ident, "ops", "crashed")
        clock.advance(60)  # the crashed replica's lease has lapsed
        await watcher.check_all(run)
        assert out.getvalue() == ""
        state = await store.expectation("nightly")
        assert state is not None and state.told == {"ops"}

    async def test_while_another_replica_holds_the_notice_nothing_is_sent(
        self, watcher: Watcher, store: MemoryStore, clock: FakeClock
    ) -> None:
        handler, out = console()
        run = runtime([NIGHTLY], {"ops": handler})
        await watcher.check_all(run)
        clock.advance(15)
        await store.claim(notice_id("nightly", START + 15, "overdue"), "other", 30)
        wake = await watcher.check_all(run)
        assert out.getvalue() == ""
        assert wake > clock()

    async def test_two_watchers_on_one_store_tell_each_handler_once(
        self, store: MemoryStore, clock: FakeClock
    ) -> None:
        handler, out = console()
        run = runtime([NIGHTLY], {"ops": handler})
        a = Watcher(store, Metrics(), owner="a", lease=30, clock=clock)
        b = Watcher(store, Metrics(), owner="b", lease=30, clock=clock)
        await a.check_all(run)
        clock.advance(15)
        await b.check_all(run)
        await a.check_all(run)
        assert len(out.getvalue().splitlines()) == 1


class TestReload:
    async def test_a_removed_expectation_sends_nothing_more_and_its_series_go(
        self, watcher: Watcher, clock: FakeClock, metrics: Metrics
    ) -> None:
        handler, out = console()
        await watcher.check_all(runtime([NIGHTLY], {"ops": handler}))
        clock.advance(15)
        assert await watcher.check_all(runtime([], {"ops": handler})) == math.inf
        assert out.getvalue() == ""
        assert overdue(metrics) is None

    async def test_a_longer_period_after_a_reload_ends_the_episode(
        self, watcher: Watcher, clock: FakeClock
    ) -> None:
        handler, out = console()
        await watcher.check_all(runtime([NIGHTLY], {"ops": handler}))
        clock.advance(15)
        await watcher.check_all(runtime([NIGHTLY], {"ops": handler}))
        longer = runtime([{**NIGHTLY, "every": "1h"}], {"ops": handler})
        wake = await watcher.check_all(longer)
        assert [line.split(":")[0] for line in out.getvalue().splitlines()] == [
            "[ops] ⏰ nightly",
            "[ops] ✅ nightly",
        ]
        assert wake == clock() + 300  # due in an hour; the watch never sleeps more than 5 min
