"""The one small interface every handler type implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from amid.events import AmiStateChange

if TYPE_CHECKING:
    from amid.metrics import Metrics


class HandlerError(Exception):
    """A failed send, classified where it happened.

    `retryable` decides whether another in-process try can help; `reason` is a
    bounded metric label (http_500, timeout, exit_1, ...); `retry_after` is a
    delay the destination asked for (HTTP Retry-After), honoured as a minimum.
    The message must never hold a secret (webhook URL, token, header value).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        reason: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Notification:
    """One event for one handler and, when enrichment is on, its image."""

    event: AmiStateChange
    image: Mapping[str, Any]
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Digest:
    """Several events of one group for one handler, sent as one message (SPEC 3b)."""

    notifications: tuple[Notification, ...]
    group: Mapping[str, Any]  # each `group_by` path -> the group's value (None when missing)
    attempt: int = 1

    @property
    def count(self) -> int:
        return len(self.notifications)

    @property
    def events(self) -> list[AmiStateChange]:
        return [notification.event for notification in self.notifications]

    @property
    def state(self) -> str | None:
        """The one state of every event in it, else None."""
        states = {event.state for event in self.events}
        return states.pop() if len(states) == 1 else None

    def document(self) -> dict[str, Any]:
        """The digest as JSON (SPEC 3b): SNS's Message, a webhook's body, a hook's stdin."""
        return {
            "count": self.count,
            "group": dict(self.group),
            "events": [event.raw for event in self.events],
        }

    def summary(self) -> str:
        """For people: `120 AMIs deregistered in 111122223333 us-east-1`."""
        events = self.events
        what = f"{self.count} AMIs {self.state or 'changed state'}"
        where = [
            values.pop()
            for values in ({e.account for e in events}, {e.region for e in events})
            if len(values) == 1 and next(iter(values))
        ]
        return f"{what} in {' '.join(where)}" if where else what


@dataclass(frozen=True, slots=True)
class ExpectationNotice:
    """An expectation overdue, or recovered: the AMI event that did not come (SPEC 3c)."""

    expectation: str
    status: Literal["overdue", "recovered"]
    last_seen: datetime | None  # the last matching event; None when none came yet
    due: datetime  # when it became overdue (the episode's name)
    expected: str  # how often, for people: "every 24h", "schedule 0 6 * * * in Europe/Berlin"
    details: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    id: str = ""  # one per expectation, episode and status: receivers may drop repeats by it
    since: datetime | None = None  # what the clock counts from: last_seen, else amid's first run
    checked: datetime | None = None  # when amid composed the notice (default: due)

    @property
    def at(self) -> datetime:
        return self.checked or self.due


# Everything `deliver` can hand to a handler.
Sendable = Notification | Digest | ExpectationNotice


def single_event(handler: str, message: Sendable) -> Notification:
    """`message` as one event; a kind this handler type cannot send yet is a permanent error."""
    if isinstance(message, Notification):
        return message
    raise HandlerError(
        f"handler {handler} cannot send a {type(message).__name__} yet",
        retryable=False,
        reason="unsupported",
    )


def log_context(handler: str, message: Sendable) -> dict[str, Any]:
    """What a log line about `message` carries: the event's ids, the digest's size or the
    expectation's name."""
    if isinstance(message, Digest):
        return {"digest_events": message.count}
    if isinstance(message, ExpectationNotice):
        return {"expectation": message.expectation}
    return single_event(handler, message).event.log_context()


def report_template_failures(
    metrics: Metrics,
    log: Any,
    handler: str,
    failures: list[str],
    context: Mapping[str, Any],
    instead: str = "used the default",
) -> None:
    """A template that failed at run time fell back (SPEC 3): count it and say so, once each."""
    for failure in failures:
        metrics.template_failures.labels(handler).inc()
        log.warning(f"template failed; {instead}", handler=handler, error=failure, **context)


class Handler(Protocol):
    name: str

    def render(self, message: Sendable) -> Any:
        """What `send` would deliver, JSON-able, without sending (`--dry-run`)."""
        ...

    async def pace(self) -> None:
        """Wait until the destination accepts another send (a rate limit).

        Called before each try, outside the handler's timeout: waiting for a turn
        is not the destination being slow.
        """
        ...

    async def send(self, message: Sendable) -> str | None:
        """Deliver once; raise HandlerError on failure.

        Returns the destination's reference to what it received, where it gives one (an
        SNS MessageId, a PagerDuty dedup key, a Slack channel and ts), for the delivery
        record; None where there is none.
        """
        ...

    async def aclose(self) -> None:
        """Release what the handler holds; idempotent."""
        ...
