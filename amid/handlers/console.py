"""`console`: one line per event on stdout. The demo's handler, and a safe first try."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from amid.config import Config, ConsoleHandlerConfig
from amid.handlers.base import Digest, ExpectationNotice, Notification, Sendable, single_event
from amid.handlers.notice import notice_context, notice_sentence
from amid.metrics import Metrics
from amid.templates import TemplateError, digest_context, mentions, render, template_context
from amid.wording import rfc3339

_MARK = {"available": "✅", "failed": "❌", "deregistered": "🗑️", "disabled": "⏸️"}


def default_line(notification: Notification) -> str:
    event = notification.event
    line = f"{_MARK.get(event.state, '•')} {event.image_id} is {event.state} in {event.region}"
    if event.error_message:
        line += f": {event.error_message}"
    return f"{line} (account {event.account}, event {event.id})"


def digest_lines(digest: Digest) -> str:
    """A header line for the group, then a line per event."""
    mark = _MARK.get(digest.state or "", "•")
    lines = [f"{mark} {digest.summary()} (digest)"]
    lines += [f"    {default_line(notification)}" for notification in digest.notifications]
    return "\n".join(lines)


def notice_line(notice: ExpectationNotice) -> str:
    """An expectation's notice: the sentence, then when the last match came and when it was due."""
    last = rfc3339(notice.last_seen) or "never"
    return f"{notice_sentence(notice)}; last match {last}, due {rfc3339(notice.due)}"


class ConsoleHandler:
    def __init__(
        self, config: ConsoleHandlerConfig, metrics: Metrics, stream: TextIO | None = None
    ) -> None:
        self.name = config.name
        self._template = config.template
        self._metrics = metrics
        self._stream = stream

    @classmethod
    def from_config(
        cls, handler: ConsoleHandlerConfig, config: Config, resources: Any
    ) -> ConsoleHandler:
        return cls(handler, resources.metrics)

    def render(self, message: Sendable) -> str:
        if isinstance(message, Digest):
            return self._templated(digest_context(message), lambda: digest_lines(message))
        if isinstance(message, ExpectationNotice):
            return self._render_notice(message)
        notification = single_event(self.name, message)
        context = template_context(notification.event, dict(notification.image))
        return self._templated(context, lambda: default_line(notification))

    def _templated(self, context: dict[str, Any], default: Callable[[], str]) -> str:
        if self._template is None:
            return default()
        try:
            return render(self._template, context)
        except TemplateError:
            self._metrics.template_failures.labels(self.name).inc()
            return default()

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> None:
        stream = self._stream or sys.stdout
        stream.write(f"[{self.name}] {self.render(message)}\n")
        stream.flush()

    async def aclose(self) -> None:
        return None

    # --- expectation notices ---

    def _render_notice(self, notice: ExpectationNotice) -> str:
        """The handler's template when it reads `expectation`, else the default line."""
        if self._template is None or not mentions(self._template, "expectation"):
            return notice_line(notice)
        return self._templated(notice_context(notice), lambda: notice_line(notice))
