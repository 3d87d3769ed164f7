"""The retry policy: which failures are retried, how long between tries, what is counted."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from amid.config import RetryConfig
from amid.events import AmiStateChange
from amid.handlers.base import HandlerError, Notification
from amid.metrics import Metrics
from amid.pipeline.decode import decode
from amid.pipeline.deliver import deliver
from amid.tools.offline import synthetic_event


class ScriptedHandler:
    """A fake destination for one stage's unit test: raises the scripted errors, then succeeds."""

    name = "scripted"

    def __init__(self, *errors: BaseException | None, delay: float = 0.0) -> None:
        self.script = list(errors)
        self.calls: list[float] = []
        self.delay = delay

    def render(self, notification: Notification) -> Any:
        return {}

    async def pace(self) -> None:
        return None

    async def send(self, notification: Notification) -> None:
        self.calls.append(time.monotonic())
        if self.delay:
            await asyncio.sleep(self.delay)
        error = self.script.pop(0) if self.script else None
        if error is not None:
            raise error

    async def aclose(self) -> None:
        return None


def note() -> Notification:
    event = decode(json.dumps(synthetic_event("failed")))
    assert isinstance(event, AmiStateChange)
    return Notification(event, {})


FAST = RetryConfig(attempts=4, initial_backoff=0.001, max_backoff=0.01)


def retryable(reason: str = "http_500", retry_after: float | None = None) -> HandlerError:
    return HandlerError("boom", retryable=True, reason=reason, retry_after=retry_after)


async def test_retryable_errors_are_retried_until_success():
    handler = ScriptedHandler(retryable(), retryable())
    metrics = Metrics()
    result = await deliver(handler, note(), timeout=1, retry=FAST, metrics=metrics)
    assert (result.delivered, result.attempts) == (True, 3)
    assert (
        metrics.registry.get_sample_value(
            "amid_handler_attempts_total", {"handler": "scripted", "outcome": "error"}
        )
        == 2
    )


async def test_attempts_is_the_total_number_of_tries():
    handler = ScriptedHandler(*[retryable()] * 10)
    metrics = Metrics()
    result = await deliver(handler, note(), timeout=1, retry=FAST, metrics=metrics)
    assert (result.delivered, result.attempts, result.reason) == (False, 4, "http_500")
    assert (
        metrics.registry.get_sample_value(
            "amid_notifications_total", {"handler": "scripted", "outcome": "failed"}
        )
        == 1
    )
    assert (
        metrics.registry.get_sample_value(
            "amid_notification_failures_total", {"handler": "scripted", "reason": "http_500"}
        )
        == 1
    )


async def test_a_permanent_error_is_not_retried_in_process():
    handler = ScriptedHandler(HandlerError("gone", retryable=False, reason="http_404"))
    result = await deliver(handler, note(), timeout=1, retry=FAST, metrics=Metrics())
    assert (result.delivered, result.attempts, result.retryable) == (False, 1, False)


async def test_retry_after_is_honoured_never_shortened():
    handler = ScriptedHandler(retryable("http_429", retry_after=0.3))
    result = await deliver(handler, note(), timeout=1, retry=FAST, metrics=Metrics())
    assert result.delivered
    assert handler.calls[1] - handler.calls[0] >= 0.3


async def test_a_retry_after_longer_than_60_seconds_ends_the_in_process_tries():
    handler = ScriptedHandler(retryable("http_503", retry_after=120))
    result = await deliver(handler, note(), timeout=1, retry=FAST, metrics=Metrics())
    assert (result.delivered, result.attempts, result.reason) == (False, 1, "http_503")


async def test_a_try_that_outlives_the_timeout_counts_as_a_timeout_and_is_retried():
    handler = ScriptedHandler(delay=0.5)
    metrics = Metrics()
    result = await deliver(
        handler,
        note(),
        timeout=0.05,
        retry=RetryConfig(attempts=2, initial_backoff=0.001, max_backoff=0.001),
        metrics=metrics,
    )
    assert (result.delivered, result.attempts, result.reason) == (False, 2, "timeout")
    assert (
        metrics.registry.get_sample_value(
            "amid_handler_attempts_total", {"handler": "scripted", "outcome": "timeout"}
        )
        == 2
    )


async def test_an_unexpected_exception_is_contained_and_retried():
    handler = ScriptedHandler(RuntimeError("bug"))
    result = await deliver(handler, note(), timeout=1, retry=FAST, metrics=Metrics())
    assert (result.delivered, result.attempts) == (True, 2)


class ReferencingHandler(ScriptedHandler):
    async def send(self, notification: Notification) -> str | None:
        await super().send(notification)
        return f"ref-{len(self.calls)}"


async def test_the_destinations_reference_of_the_successful_try_is_kept_for_the_record():
    handler = ReferencingHandler(retryable())
    result = await deliver(handler, note(), timeout=1.0, retry=FAST, metrics=Metrics())
    assert result.delivered
    assert result.reference == "ref-2"
