"""What the `teams` and `google_chat` handlers share (SPEC 3f): one way to compose and send.

Each of them is a webhook that takes one JSON message, like `slack`. This module holds
the part that does not depend on the destination's format: which payload a message
gets (the whole-body `payload_template`, the text `template`, or the default), the
template failures counted and logged, the rate limit shared per webhook, and one POST
through `http.deliver` (so the retry and error classes are those of the webhook
handler). A format module (`teams.py`, `google_chat.py`) supplies a `ChatFormat`: pure
functions from a message to a payload, tested against golden files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

import aiohttp
import structlog
from pydantic import SecretStr

from amid import jsoncodec
from amid.config import ChatWebhookConfig
from amid.handlers import http, ratelimit
from amid.handlers.base import (
    Digest,
    ExpectationNotice,
    Notification,
    Sendable,
    log_context,
    report_template_failures,
    single_event,
)
from amid.handlers.notice import notice_context
from amid.metrics import Metrics
from amid.templates import TemplateError, digest_context, mentions, render, template_context

_log = structlog.get_logger("amid.handlers.chat")

# Unicode, not Slack's `:x:` short codes: Teams and Google Chat show them as they are.
MARK = {"available": "✅", "failed": "❌", "deregistered": "🗑️", "disabled": "🚫"}
OTHER_MARK = "❔"
DIGEST_MARK = "📦"
VERB = {
    "available": "is available",
    "failed": "failed",
    "deregistered": "was deregistered",
    "disabled": "was disabled",
}
DIGEST_LINES = 20  # events listed by name; the rest are counted ("and N more")


def mark(state: str | None) -> str:
    return MARK.get(state, OTHER_MARK) if state else DIGEST_MARK


def verb(state: str) -> str:
    return VERB.get(state, f"changed state to {state}")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def group_value(value: object) -> str:
    return "none" if value is None else value if isinstance(value, str) else json.dumps(value)


class ChatFormat(Protocol):
    """One destination's message format: pure functions, each returning the JSON body."""

    what: str  # names the destination in errors: "teams webhook"

    def event(self, notification: Notification) -> dict[str, Any]: ...

    def digest(self, digest: Digest) -> dict[str, Any]: ...

    def notice(self, notice: ExpectationNotice) -> dict[str, Any]: ...

    def text(self, text: str) -> dict[str, Any]:
        """The message for a rendered `template`: the text in the destination's shape."""
        ...

    def accepts(self, payload: Any) -> bool:
        """Whether a rendered `payload_template` is a body this destination can take."""
        ...


class ChatWebhookHandler:
    """A handler that posts one JSON message per notification, digest or notice."""

    def __init__(
        self,
        config: ChatWebhookConfig,
        fmt: ChatFormat,
        http_session: aiohttp.ClientSession,
        metrics: Metrics,
        pool: ratelimit.RateLimiterPool = ratelimit.WEBHOOKS,
    ) -> None:
        assert config.webhook_url is not None  # noqa: S101 - the config model guarantees it
        self.name = config.name
        self._config = config
        self._format = fmt
        self._url: SecretStr = config.webhook_url
        self._http = http_session
        self._metrics = metrics
        self._limit = pool.acquire(self._url.get_secret_value(), config.rate_limit)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def render(self, message: Sendable) -> dict[str, Any]:
        """The JSON body `send` would post (the URL is never part of it)."""
        return self.compose(message)[0]

    async def pace(self) -> None:
        """One message per 1/rate_limit seconds per webhook, shared by its handlers."""
        await self._limit.wait()

    async def send(self, message: Sendable) -> str | None:
        payload, failures = self.compose(message)
        context = log_context(self.name, message)
        report_template_failures(
            self._metrics, _log, self.name, failures, context, "used the default instead"
        )
        await http.deliver(
            self._http,
            method="POST",
            url=self.post_url(),
            body=jsoncodec.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
            what=self._format.what,
            secrets=self.secrets(),
        )
        return None

    async def aclose(self) -> None:
        self._limit.release()

    # --- for the format's handler class to refine ---

    def post_url(self) -> str:
        return self._url.get_secret_value()

    def secrets(self) -> Iterable[str]:
        """What error text must not show beyond the URL itself (`http.deliver` hides that)."""
        return ()

    def addressed(
        self, payload: dict[str, Any], message: Sendable, failures: list[str]
    ) -> dict[str, Any]:
        """The payload with what the destination adds to every message (a thread key)."""
        return payload

    # --- composing ---

    def compose(self, message: Sendable) -> tuple[dict[str, Any], list[str]]:
        """The payload, and the template failures that made it fall back to the default.

        Events: `payload_template`, else `template`, else the default message. Digests:
        the same templates with the digest's context. Notices: the templates only when
        they read `expectation` (an event template knows nothing of one), else the default.
        """
        failures: list[str] = []
        config, fmt = self._config, self._format
        if isinstance(message, Digest):
            context = digest_context(message)
            use = (config.payload_template, config.template)
        elif isinstance(message, ExpectationNotice):
            context = notice_context(message)
            use = (
                _reading(config.payload_template, "expectation"),
                _reading(config.template, "expectation"),
            )
        else:
            notification = single_event(self.name, message)
            context = template_context(notification.event, dict(notification.image))
            use = (config.payload_template, config.template)
        payload_template, text_template = use
        payload: dict[str, Any] | None = None
        if payload_template is not None:
            try:
                payload = self._parse_payload(render(payload_template, context))
            except TemplateError as error:
                failures.append(f"payload_template: {error}")
        if payload is None and text_template is not None:
            try:
                text = render(text_template, context).strip()
                if not text:
                    raise TemplateError("template rendered empty text")
                payload = fmt.text(text)
            except TemplateError as error:
                failures.append(f"template: {error}")
        if payload is None:
            if isinstance(message, Digest):
                payload = fmt.digest(message)
            elif isinstance(message, ExpectationNotice):
                payload = fmt.notice(message)
            else:
                payload = fmt.event(single_event(self.name, message))
        return self.addressed(payload, message, failures), failures

    def _parse_payload(self, text: str) -> dict[str, Any]:
        try:
            payload = json.loads(text)
        except ValueError:
            raise TemplateError("payload_template did not render valid JSON") from None
        if not isinstance(payload, dict) or not self._format.accepts(payload):
            raise TemplateError(
                f"payload_template must render a JSON object a {self._format.what} takes"
            )
        return payload


def _reading(source: str | None, name: str) -> str | None:
    """The template when it reads `name`, else None."""
    return source if source is not None and mentions(source, name) else None
