"""`webhook`: send the event (or a rendered `body`) to any HTTP endpoint.

The URL and header values are secrets: they are held as SecretStr, left out of
`render()` (which `--dry-run` prints), and scrubbed from error text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from pydantic import SecretStr

from amid import jsoncodec
from amid.config import Config, WebhookHandlerConfig
from amid.handlers import http
from amid.handlers.base import (
    Digest,
    ExpectationNotice,
    Notification,
    Sendable,
    log_context,
    report_template_failures,
    single_event,
)
from amid.handlers.notice import notice_context, notice_document
from amid.metrics import Metrics
from amid.templates import TemplateError, digest_context, mentions, render, template_context

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

_log = structlog.get_logger("amid.handlers.webhook")

EVENT_ID_HEADER = "X-Amid-Event-Id"
DIGEST_COUNT_HEADER = "X-Amid-Digest-Count"
MASK = "**********"


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class WebhookHandler:
    def __init__(
        self,
        config: WebhookHandlerConfig,
        http_session: aiohttp.ClientSession,
        metrics: Metrics,
    ) -> None:
        assert config.url is not None  # noqa: S101 - the config model guarantees it
        self.name = config.name
        self._config = config
        self._url: SecretStr = config.url
        self._headers: dict[str, SecretStr] = dict(config.headers)
        # Worked out once, not per request.
        self._configured = frozenset(name.lower() for name in self._headers)
        self._header_values = {
            name: value.get_secret_value() for name, value in self._headers.items()
        }
        self._http = http_session
        self._metrics = metrics

    @classmethod
    def from_config(
        cls, handler: WebhookHandlerConfig, config: Config, resources: HandlerResources
    ) -> WebhookHandler:
        return cls(handler, resources.http, resources.metrics)

    def __repr__(self) -> str:
        return f"WebhookHandler(name={self.name!r})"

    def render(self, message: Sendable) -> dict[str, Any]:
        """The request that would be sent, header values masked and the URL left out."""
        body, public, _ = self._request(message)
        headers = {
            name: MASK if name.lower() in self._configured else value
            for name, value in self._request_headers(public).items()
        }
        return {"method": self._config.method, "headers": headers, "body": body}

    def _request(self, message: Sendable) -> tuple[str, dict[str, str], list[str]]:
        """The body, the public headers and the template failures, for any kind of message."""
        if isinstance(message, Digest):
            body, failures = self._digest_body(message)
            public = {
                "Content-Type": self._config.content_type,
                DIGEST_COUNT_HEADER: str(message.count),
            }
            return body, public, failures
        if isinstance(message, ExpectationNotice):
            body, failures = self._notice_body(message)
            # The notice's id lets the receiver drop a repeat, as an event's id does.
            public = {"Content-Type": self._config.content_type, EVENT_ID_HEADER: message.id}
            return body, public, failures
        notification = single_event(self.name, message)
        body, failures = self._body(notification)
        return body, self._public_headers(notification), failures

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> None:
        body, public, failures = self._request(message)
        report_template_failures(
            self._metrics,
            _log,
            self.name,
            failures,
            log_context(self.name, message),
            "sent the event JSON instead",
        )
        await http.deliver(
            self._http,
            method=self._config.method,
            url=self._url.get_secret_value(),
            body=body.encode("utf-8"),
            headers=self._request_headers(public),
            what="webhook",
            secrets=self._header_values.values(),
        )

    async def aclose(self) -> None:
        return None  # the HTTP session belongs to the daemon

    def _public_headers(self, notification: Notification) -> dict[str, str]:
        return {
            "Content-Type": self._config.content_type,
            # Lets the receiver drop the duplicates that at-least-once delivery allows.
            EVENT_ID_HEADER: notification.event.id,
        }

    def _request_headers(self, public: dict[str, str]) -> dict[str, str]:
        """Configured headers win over the defaults, whatever their case."""
        headers = {
            name: value for name, value in public.items() if name.lower() not in self._configured
        }
        headers.update(self._header_values)
        return headers

    def _body(self, notification: Notification) -> tuple[str, list[str]]:
        default = jsoncodec.dumps(notification.event.raw)
        if self._config.body is None:  # the common case: no template, no context to build
            return default, []
        context = template_context(notification.event, dict(notification.image))
        return self._templated(default, context)

    def _digest_body(self, digest: Digest) -> tuple[str, list[str]]:
        """The digest JSON (SPEC 3b), or the `body` template rendered with the digest's context."""
        default = json.dumps(digest.document(), ensure_ascii=False, separators=(",", ":"))
        return self._templated(default, digest_context(digest))

    def _notice_body(self, notice: ExpectationNotice) -> tuple[str, list[str]]:
        """The `body` template when it reads `expectation`, else the notice JSON (SPEC 3c)."""
        default = notice_body(notice)
        if self._config.body is None or not mentions(self._config.body, "expectation"):
            return default, []
        return self._templated(default, notice_context(notice))

    def _templated(self, default: str, context: dict[str, Any]) -> tuple[str, list[str]]:
        if self._config.body is None:
            return default, []
        try:
            body = render(self._config.body, context)
            if _is_json(self._config.content_type):
                json.loads(body)
        except TemplateError as error:
            return default, [str(error)]
        except ValueError:
            return default, ["body template did not render valid JSON for a JSON content type"]
        return body, []


def notice_body(notice: ExpectationNotice) -> str:
    """`{"expectation", "status", "last_seen", "due", ...}` as the default body."""
    return json.dumps(notice_document(notice), ensure_ascii=False, separators=(",", ":"))
