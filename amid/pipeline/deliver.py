"""One notification to one handler: per-try timeout, retries for retryable errors, metrics, logs."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from amid.config import RetryConfig
from amid.handlers.base import Digest, Handler, HandlerError, Sendable
from amid.logs import get_logger
from amid.metrics import Metrics

# A destination asking us to wait longer than this is better served by SQS redelivery.
MAX_IN_PROCESS_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    handler: str
    delivered: bool
    attempts: int
    reason: str | None = None  # bounded label of the last failure
    retryable: bool = True
    retry_after: float | None = None  # what the destination asked for on the last try
    reference: str | None = None  # the destination's reference (Handler.send), for the record
    silence: str | None = None  # held by this silence (its name or id): not sent, owed nothing
    error: str | None = None  # the last HandlerError's text (never a secret), for the record


def _retry_worthwhile(error: BaseException) -> bool:
    return (
        isinstance(error, HandlerError)
        and error.retryable
        and (error.retry_after is None or error.retry_after <= MAX_IN_PROCESS_RETRY_AFTER)
    )


class _BackoffHonouringRetryAfter:
    """Exponential backoff with jitter, never shorter than the destination's Retry-After."""

    def __init__(self, retry: RetryConfig) -> None:
        self._initial = retry.initial_backoff
        self._max = retry.max_backoff

    def delay(self, failed_tries: int, error: BaseException | None) -> float:
        jitter = random.uniform(0, self._initial)  # noqa: S311 - spreading retries, not crypto
        delay: float = min(self._initial * 2.0 ** (failed_tries - 1) + jitter, self._max)
        if isinstance(error, HandlerError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    def after(self, state: RetryCallState) -> float:
        """tenacity's wait, for the tries after the first (see deliver)."""
        error = state.outcome.exception() if state.outcome else None
        return self.delay(state.attempt_number + 1, error)


async def deliver(
    handler: Handler,
    message: Sendable,
    *,
    timeout: float,
    retry: RetryConfig,
    metrics: Metrics,
    log: Any = None,
) -> DeliveryResult:
    """Send with retries; total: returns a result, never raises (cancellation aside)."""
    base_log = log or get_logger()
    attempts = 0
    reference: str | None = None
    events = message.count if isinstance(message, Digest) else 1  # notifications are per event

    def failing() -> Any:  # bound only when there is something to say
        return base_log.bind(handler=handler.name)

    async def one_try() -> None:
        nonlocal attempts, reference
        attempts += 1
        await handler.pace()
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                reference = await handler.send(
                    message if message.attempt == attempts else replace(message, attempt=attempts)
                )
            outcome = "success"
        except TimeoutError:
            outcome = "timeout"
            raise HandlerError(
                f"no answer within {timeout:g}s", retryable=True, reason="timeout"
            ) from None
        except HandlerError as error:
            failing().warning(
                "handler attempt failed",
                attempt=attempts,
                reason=error.reason,
                retryable=error.retryable,
                error=str(error),
            )
            raise
        except Exception as error:
            failing().exception("handler raised unexpectedly", attempt=attempts)
            raise HandlerError(
                f"unexpected {type(error).__name__}", retryable=True, reason="unexpected"
            ) from error
        finally:
            metrics.handler_attempts.labels(handler.name, outcome).inc()
            metrics.handler_duration.labels(handler.name).observe(time.perf_counter() - started)

    backoff = _BackoffHonouringRetryAfter(retry)
    try:
        try:
            await one_try()  # the common case pays for no retry machinery
        except HandlerError as first:
            if retry.attempts == 1 or not _retry_worthwhile(first):
                raise
            await asyncio.sleep(backoff.delay(1, first))
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(retry.attempts - 1),
                wait=backoff.after,
                retry=retry_if_exception(_retry_worthwhile),
                reraise=True,
            ):
                with attempt:
                    await one_try()
    except HandlerError as error:
        metrics.notifications.labels(handler.name, "failed").inc(events)
        metrics.notification_failures.labels(handler.name, error.reason).inc(events)
        failing().error(
            "notification failed",
            attempt=attempts,
            reason=error.reason,
            retryable=error.retryable,
            error=str(error),
        )
        return DeliveryResult(
            handler.name,
            False,
            attempts,
            error.reason,
            error.retryable,
            error.retry_after,
            error=str(error),
        )
    metrics.notifications.labels(handler.name, "delivered").inc(events)
    # "event handled" says it at info; below the configured level this call does nothing.
    base_log.debug("notification delivered", handler=handler.name, attempt=attempts)
    return DeliveryResult(handler.name, True, attempts, reference=reference)
