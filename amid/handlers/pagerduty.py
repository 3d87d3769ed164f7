"""`pagerduty`: incidents that open on a failed build and close on the next good one.

Speaks PagerDuty's Events API v2 (SPEC 3e): each event whose state maps to an
action (`actions`: failed -> trigger, available -> resolve by default) is one
POST of `{routing_key, event_action, dedup_key, payload, links, client}`;
PagerDuty correlates a trigger and its resolve by the dedup key, a template
over the event (default `{{ account }}/{{ region }}/{{ image_id }}`). A state
mapped to `none` sends nothing and is a success. Expectation notices trigger
(`overdue`) and resolve (`recovered`) `amid/expectation/<name>`, whatever
`actions` says.

The routing key is a secret: held as SecretStr, masked in `render()` (which
`--dry-run` prints) and scrubbed from error text. HTTP 202 is success; 408,
429 and 5xx are retryable (with `Retry-After`); other answers are permanent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from amid import jsoncodec
from amid.config import PAGERDUTY_SEVERITIES, Config, PagerDutyHandlerConfig
from amid.handlers import http
from amid.handlers.base import (
    ExpectationNotice,
    Notification,
    Sendable,
    report_template_failures,
    single_event,
)
from amid.handlers.notice import notice_context, notice_document, notice_sentence
from amid.handlers.slack import cut, headline
from amid.metrics import Metrics
from amid.templates import TemplateError, mentions, render, template_context
from amid.wording import rfc3339

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

_log = structlog.get_logger("amid.handlers.pagerduty")

MASK = "**********"
CLIENT = "amid"
COMPONENT = "ami"
DEFAULT_SEVERITY = "error"
SUMMARY_MAX = 1024  # PagerDuty's limits, in characters
DEDUP_KEY_MAX = 255
ACCEPTED = frozenset({202})
EXPECTATIONS_GROUP = "amid/expectations"


def expectation_key(name: str) -> str:
    """The dedup key of an expectation's incident: one open incident per expectation."""
    return f"amid/expectation/{name}"[:DEDUP_KEY_MAX]


@dataclass(frozen=True, slots=True)
class Request:
    """One Events API v2 request, without its routing key; and what fell back on the way."""

    body: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    log_context: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return str(self.body["event_action"])

    @property
    def dedup_key(self) -> str:
        return str(self.body["dedup_key"])


class PagerDutyHandler:
    def __init__(
        self,
        config: PagerDutyHandlerConfig,
        http_session: aiohttp.ClientSession,
        metrics: Metrics,
    ) -> None:
        assert config.routing_key is not None  # noqa: S101 - the config model guarantees it
        self.name = config.name
        self._config = config
        self._routing_key = config.routing_key
        self._http = http_session
        self._metrics = metrics
        metrics.prime_incidents(self.name)

    @classmethod
    def from_config(
        cls, handler: PagerDutyHandlerConfig, config: Config, resources: HandlerResources
    ) -> PagerDutyHandler:
        return cls(handler, resources.http, resources.metrics)

    def __repr__(self) -> str:
        return f"PagerDutyHandler(name={self.name!r})"

    def render(self, message: Sendable) -> dict[str, Any] | str:
        """The request that would be sent, its routing key masked; or why nothing would be."""
        request = self.request(message)
        if request is None:
            state = single_event(self.name, message).event.state
            return f"nothing is sent: actions maps {state} to none"
        return {
            "method": "POST",
            "url": self._config.events_url,
            "body": {"routing_key": MASK, **request.body},
        }

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> str | None:
        """One request; returns the dedup key (PagerDuty's handle on the alert), or None
        when the event's state maps to `none` and nothing is sent."""
        request = self.request(message)
        if request is None:
            return None
        report_template_failures(
            self._metrics, _log, self.name, request.failures, request.log_context
        )
        key = self._routing_key.get_secret_value()
        body = jsoncodec.dumps({"routing_key": key, **request.body})
        await http.deliver(
            self._http,
            method="POST",
            url=self._config.events_url,
            body=body.encode("utf-8"),
            headers={"Content-Type": "application/json"},
            what="pagerduty",
            secrets=(key,),
            accept=ACCEPTED,
        )
        self._metrics.incidents.labels(self.name, request.action).inc()
        return request.dedup_key

    async def aclose(self) -> None:
        return None  # the HTTP session belongs to the daemon

    # --- composing ----------------------------------------------------------

    def request(self, message: Sendable) -> Request | None:
        """The request for any message this handler takes; None when nothing is to be sent."""
        if isinstance(message, ExpectationNotice):
            return self._notice_request(message)
        notification = single_event(self.name, message)
        event = notification.event
        action = self._config.action_for(event.state)
        if action == "none":
            return None
        failures: list[str] = []
        context = template_context(event, dict(notification.image))
        body: dict[str, Any] = {
            "event_action": action,
            "dedup_key": self._dedup_key(notification, context, failures),
        }
        if action == "trigger":
            payload: dict[str, Any] = {
                "summary": cut(headline(notification), SUMMARY_MAX),
                "source": event.image_id,
                "severity": self._severity(context, failures),
            }
            if event.occurred_at is not None:  # else PagerDuty stamps it on arrival
                payload["timestamp"] = rfc3339(event.occurred_at)
            payload |= {
                "component": COMPONENT,
                "group": f"{event.account}/{event.region}",
                "class": event.state,
                "custom_details": custom_details(notification),
            }
            body["payload"] = payload
            body["links"] = [
                {"href": event.console_url, "text": f"AMI {event.image_id} in the EC2 console"}
            ]
            body["client"] = CLIENT
        return Request(body, failures, event.log_context())

    def _notice_request(self, notice: ExpectationNotice) -> Request:
        """`overdue` triggers `amid/expectation/<name>`, `recovered` resolves it."""
        body: dict[str, Any] = {
            "event_action": "trigger" if notice.status == "overdue" else "resolve",
            "dedup_key": expectation_key(notice.expectation),
        }
        failures: list[str] = []
        if notice.status == "overdue":
            body["payload"] = {
                "summary": cut(notice_sentence(notice), SUMMARY_MAX),
                "source": notice.expectation,
                "severity": self._severity(notice_context(notice), failures, notice=True),
                "timestamp": rfc3339(notice.at),
                "component": COMPONENT,
                "group": EXPECTATIONS_GROUP,
                "class": notice.status,
                "custom_details": notice_document(notice),
            }
            body["client"] = CLIENT
        return Request(body, failures, {"expectation": notice.expectation})

    def _dedup_key(
        self, notification: Notification, context: dict[str, Any], failures: list[str]
    ) -> str:
        key = ""
        try:
            key = render(self._config.dedup_key, context).strip()
        except TemplateError as error:
            failures.append(f"dedup_key: {error}")
        else:
            if not key:
                failures.append("dedup_key: rendered empty")
        if not key:
            event = notification.event
            key = f"{event.account}/{event.region}/{event.image_id}"
        return key[:DEDUP_KEY_MAX]

    def _severity(
        self, context: dict[str, Any], failures: list[str], *, notice: bool = False
    ) -> str:
        """The configured value, or the template's; `error` when the template fails. A notice
        renders the template only when it reads `expectation` (as every handler does)."""
        source = self._config.severity
        if source in PAGERDUTY_SEVERITIES:
            return source
        if notice and not mentions(source, "expectation"):
            return DEFAULT_SEVERITY
        try:
            value = render(source, context).strip().lower()
        except TemplateError as error:
            failures.append(f"severity: {error}")
            return DEFAULT_SEVERITY
        if value not in PAGERDUTY_SEVERITIES:
            allowed = ", ".join(PAGERDUTY_SEVERITIES)
            failures.append(f"severity: rendered {cut(value, 40)!r}, not one of {allowed}")
            return DEFAULT_SEVERITY
        return value


def custom_details(notification: Notification) -> dict[str, Any]:
    """The event's detail and, when enrichment knows them, the image's name and tags."""
    details: dict[str, Any] = {"detail": dict(notification.event.detail)}
    image = {
        key: notification.image[key] for key in ("name", "tags") if notification.image.get(key)
    }
    if image:
        details["image"] = image
    return details
