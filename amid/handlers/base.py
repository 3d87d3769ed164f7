"""The one small interface every handler type implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from amid.events import AmiStateChange


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
    """What a handler is asked to deliver: the event and, when enrichment is on, its image."""

    event: AmiStateChange
    image: Mapping[str, Any]
    attempt: int = 1


class Handler(Protocol):
    name: str

    def render(self, notification: Notification) -> Any:
        """What `send` would deliver, JSON-able, without sending (`--dry-run`)."""
        ...

    async def pace(self) -> None:
        """Wait until the destination accepts another send (a rate limit).

        Called before each try, outside the handler's timeout: waiting for a turn
        is not the destination being slow.
        """
        ...

    async def send(self, notification: Notification) -> None:
        """Deliver once; raise HandlerError on failure."""
        ...

    async def aclose(self) -> None:
        """Release what the handler holds; idempotent."""
        ...
