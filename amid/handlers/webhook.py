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
from amid.handlers.base import Notification
from amid.metrics import Metrics
from amid.templates import TemplateError, render, template_context

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

    def render(self, notification: Notification) -> dict[str, Any]:
        """The request that would be sent, header values masked and the URL left out."""
        body, _ = self._body(notification)
        headers = {
            name: MASK if name.lower() in self._configured else value
            for name, value in self._request_headers(notification).items()
        }
        return {"method": self._config.method, "headers": headers, "body": body}

    async def pace(self) -> None:
        return None

    async def send(self, notification: Notification) -> None:
        body, failures = self._body(notification)
        for failure in failures:
            self._metrics.template_failures.labels(self.name).inc()
            _log.warning(
                "body template failed; sent the event JSON instead",
                handler=self.name,
                error=failure,
                **notification.event.log_context(),
            )
        await http.deliver(
            self._http,
            method=self._config.method,
            url=self._url.get_secret_value(),
            body=body.encode("utf-8"),
            headers=self._request_headers(notification),
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

    def _request_headers(self, notification: Notification) -> dict[str, str]:
        """Configured headers win over the defaults, whatever their case."""
        headers = {
            name: value
            for name, value in self._public_headers(notification).items()
            if name.lower() not in self._configured
        }
        headers.update(self._header_values)
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
