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

from amid.config import Config, WebhookHandlerConfig
from amid.handlers import http
from amid.handlers.base import ExpectationNotice, Notification, Sendable, single_event
from amid.handlers.notice import notice_context, notice_document
from amid.metrics import Metrics
from amid.templates import TemplateError, mentions, render, template_context

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

_log = structlog.get_logger("amid.handlers.webhook")

EVENT_ID_HEADER = "X-Amid-Event-Id"
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
        if isinstance(message, ExpectationNotice):
            body, _ = self._notice_body(message)
            ident = message.id
        else:
            notification = single_event(self.name, message)
            body, _ = self._body(notification)
            ident = notification.event.id
        configured = {name.lower() for name in self._headers}
        headers = {
            name: MASK if name.lower() in configured else value
            for name, value in self._request_headers(ident).items()
        }
        return {"method": self._config.method, "headers": headers, "body": body}

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> None:
        if isinstance(message, ExpectationNotice):
            body, failures = self._notice_body(message)
            ident, context = message.id, {"expectation": message.expectation}
        else:
            notification = single_event(self.name, message)
            body, failures = self._body(notification)
            ident, context = notification.event.id, notification.event.log_context()
        for failure in failures:
            self._metrics.template_failures.labels(self.name).inc()
            _log.warning(
                "body template failed; sent the default JSON instead",
                handler=self.name,
                error=failure,
                **context,
            )
        await http.deliver(
            self._http,
            method=self._config.method,
            url=self._url.get_secret_value(),
            body=body.encode("utf-8"),
            headers=self._request_headers(ident),
            what="webhook",
            secrets=[value.get_secret_value() for value in self._headers.values()],
        )

    async def aclose(self) -> None:
        return None  # the HTTP session belongs to the daemon

    def _public_headers(self, ident: str) -> dict[str, str]:
        return {
            "Content-Type": self._config.content_type,
            # Lets the receiver drop the duplicates that at-least-once delivery allows
            # (an event's id, or an expectation notice's).
            EVENT_ID_HEADER: ident,
        }

    def _request_headers(self, ident: str) -> dict[str, str]:
        """Configured headers win over the defaults, whatever their case."""
        headers = {
            name: value
            for name, value in self._public_headers(ident).items()
            if name.lower() not in {configured.lower() for configured in self._headers}
        }
        headers.update({name: value.get_secret_value() for name, value in self._headers.items()})
        return headers

    def _body(self, notification: Notification) -> tuple[str, list[str]]:
        default = json.dumps(notification.event.raw, ensure_ascii=False, separators=(",", ":"))
        if self._config.body is None:
            return default, []
        context = template_context(notification.event, dict(notification.image))
        try:
            body = render(self._config.body, context)
            if _is_json(self._config.content_type):
                json.loads(body)
        except TemplateError as error:
            return default, [str(error)]
        except ValueError:
            return default, ["body template did not render valid JSON for a JSON content type"]
        return body, []

    # --- expectation notices ---

    def _notice_body(self, notice: ExpectationNotice) -> tuple[str, list[str]]:
        """The `body` template when it reads `expectation`, else `notice_body`."""
        source = self._config.body
        if source is None or not mentions(source, "expectation"):
            return notice_body(notice), []
        try:
            body = render(source, notice_context(notice))
            if _is_json(self._config.content_type):
                json.loads(body)
        except TemplateError as error:
            return notice_body(notice), [str(error)]
        except ValueError:
            return notice_body(notice), [
                "body template did not render valid JSON for a JSON content type"
            ]
        return body, []


def notice_body(notice: ExpectationNotice) -> str:
    """`{"expectation", "status", "last_seen", "due", ...}` as the default body."""
    return json.dumps(notice_document(notice), ensure_ascii=False, separators=(",", ":"))
