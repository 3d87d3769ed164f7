"""`slack`: POST a message to an incoming webhook.

The default message needs no template: a one-line `text` (what notifications
and old clients show) and Block Kit blocks with the details and a link to the
AMI in the EC2 console. Values from the event and the image (tags, error
messages) are escaped, so a tag such as `<!channel>` cannot ping a channel.
Every string is cut to Slack's block limits, so a long error message cannot
make Slack refuse the whole message.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from pydantic import SecretStr

from amid import jsoncodec
from amid.config import Config, SlackHandlerConfig
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
from amid.handlers.notice import notice_context, notice_sentence
from amid.metrics import Metrics
from amid.templates import TemplateError, digest_context, mentions, render, template_context
from amid.wording import rfc3339

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

_log = structlog.get_logger("amid.handlers.slack")

EMOJI = {
    "available": ":white_check_mark:",
    "failed": ":x:",
    "deregistered": ":wastebasket:",
    "disabled": ":no_entry_sign:",
}
_OTHER_EMOJI = ":grey_question:"
_VERB = {
    "available": "is available",
    "failed": "failed",
    "deregistered": "was deregistered",
    "disabled": "was disabled",
}

# Slack's documented Block Kit limits (characters).
_TEXT_MAX = 4000
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000


def escape(text: str) -> str:
    """Slack mrkdwn control characters, escaped as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verb(state: str) -> str:
    return _VERB.get(state, f"changed state to {state}")


def headline(notification: Notification) -> str:
    """`AMI ami-0123 failed in us-east-1: why`, plain text: the words of the fallback line,
    which PagerDuty's summary reuses too."""
    event = notification.event
    text = f"AMI {event.image_id} {_verb(event.state)}"
    if event.region:
        text += f" in {event.region}"
    if event.error_message:
        text += f": {event.error_message}"
    return text


def default_text(notification: Notification) -> str:
    """The fallback line: image id, state, region, and the error message when there is one."""
    emoji = EMOJI.get(notification.event.state, _OTHER_EMOJI)
    return cut(escape(f"{emoji} {headline(notification)}"), _TEXT_MAX)


def _slack_time(value: str, occurred_at: datetime | None) -> str:
    """Slack's date token shows the time in each reader's own time zone; raw text otherwise."""
    if occurred_at is None:
        return escape(value) or "unknown"
    return f"<!date^{int(occurred_at.timestamp())}^{{date_num}} {{time_secs}}|{escape(value)}>"


def _code(text: str) -> str:
    # A backtick would end the code span early; Slack has no escape for it.
    return escape(text).replace("`", "'")


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": cut(f"*{label}*\n{value}", _FIELD_MAX)}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, _SECTION_MAX)}}


def default_blocks(notification: Notification) -> list[dict[str, Any]]:
    event, image = notification.event, notification.image
    name = image.get("name")
    emoji = EMOJI.get(event.state, _OTHER_EMOJI)
    headline = f"{emoji} AMI {name or event.image_id} {_verb(event.state)}"
    fields = [
        _field("Image", f"<{event.console_url}|{event.image_id}>"),
        _field("State", f"{emoji} {escape(event.state)}"),
        _field("Account", escape(event.account) or "unknown"),
        _field("Region", escape(event.region) or "unknown"),
        _field("Time", _slack_time(event.time, event.occurred_at)),
    ]
    if name:
        fields.append(_field("Name", escape(str(name))))
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": cut(headline, _HEADER_MAX), "emoji": True},
        },
        {"type": "section", "fields": fields},
    ]
    if event.error_message:
        blocks.append(_section(f"*Error*\n```{_code(event.error_message)}```"))
    if image.get("description"):
        blocks.append(_section(f"*Description*\n{escape(str(image['description']))}"))
    tags = image.get("tags")
    if isinstance(tags, dict) and tags:
        listed = "\n".join(
            f"`{_code(str(key))}`: {escape(str(value))}" for key, value in sorted(tags.items())
        )
        blocks.append(_section(f"*Tags*\n{listed}"))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": cut(
                        f"<{event.console_url}|Open in the EC2 console> · event {escape(event.id)}",
                        _SECTION_MAX,
                    ),
                }
            ],
        }
    )
    return blocks


# --- digests ---

DIGEST_LINES = 20  # events listed by name; the rest are counted
_DIGEST_EMOJI = ":package:"
_NAME_MAX = 100
_ERROR_MAX = 200


def _digest_line(notification: Notification, with_state: bool) -> str:
    """`• ami-0123 *name* (state): error`; each part cut on its own, so no markup is split."""
    event, name = notification.event, notification.image.get("name")
    line = f"• <{event.console_url}|{escape(event.image_id)}>"
    if name:
        line += f" *{escape(cut(str(name), _NAME_MAX))}*"
    if with_state:
        line += f" ({escape(event.state)})"
    if event.error_message:
        line += f": {escape(cut(event.error_message, _ERROR_MAX))}"
    return line


def _packed(lines: list[str], limit: int) -> list[str]:
    """Lines joined into as few texts of at most `limit` characters as they fit in."""
    texts: list[str] = []
    for line in lines:
        if texts and len(texts[-1]) + 1 + len(line) <= limit:
            texts[-1] += "\n" + line
        else:
            texts.append(cut(line, limit))
    return texts


def _group_value(value: object) -> str:
    return "none" if value is None else value if isinstance(value, str) else json.dumps(value)


def digest_payload(digest: Digest) -> dict[str, Any]:
    """One message for a group: the count and the group, a line per event up to 20, "and N
    more"; at most 24 blocks and 3,000 characters a text, within Slack's limits (50, 3,000)."""
    state = digest.state
    headline = f"{EMOJI.get(state, _OTHER_EMOJI) if state else _DIGEST_EMOJI} {digest.summary()}"
    group = " · ".join(
        f"`{_code(path)}` {escape(_group_value(value))}" for path, value in digest.group.items()
    )
    listed = [_digest_line(n, state is None) for n in digest.notifications[:DIGEST_LINES]]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": cut(headline, _HEADER_MAX), "emoji": True},
        },
    ]
    if group:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(group, _SECTION_MAX)}]}
        )
    blocks += [_section(text) for text in _packed(listed, _SECTION_MAX)]
    more = digest.count - len(listed)
    if more > 0:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {more} more"}]}
        )
    return {"text": cut(escape(headline), _TEXT_MAX), "blocks": blocks}


class SlackHandler:
    def __init__(
        self,
        config: SlackHandlerConfig,
        http_session: aiohttp.ClientSession,
        metrics: Metrics,
        pool: ratelimit.RateLimiterPool = ratelimit.WEBHOOKS,
    ) -> None:
        assert config.webhook_url is not None  # noqa: S101 - the config model guarantees it
        self.name = config.name
        self._config = config
        self._url: SecretStr = config.webhook_url
        self._http = http_session
        self._metrics = metrics
        self._limit = pool.acquire(self._url.get_secret_value(), config.rate_limit)

    @classmethod
    def from_config(
        cls, handler: SlackHandlerConfig, config: Config, resources: HandlerResources
    ) -> SlackHandler:
        if handler.app:  # a bot token: one conversation per key (slack_app.py)
            from amid.handlers.slack_app import SlackAppHandler

            return SlackAppHandler.build(handler, config, resources)
        return cls(handler, resources.http, resources.metrics)

    def __repr__(self) -> str:
        return f"SlackHandler(name={self.name!r})"

    def render(self, message: Sendable) -> dict[str, Any]:
        if isinstance(message, Digest):
            return self._compose_digest(message)[0]
        if isinstance(message, ExpectationNotice):
            return self._compose_notice(message)[0]
        notification = single_event(self.name, message)
        payload, _ = self._compose(notification)
        return payload

    async def pace(self) -> None:
        """One message per 1/rate_limit seconds per webhook, shared by its handlers."""
        await self._limit.wait()

    async def send(self, message: Sendable) -> str | None:
        if isinstance(message, Digest):
            payload, failures = self._compose_digest(message)
        elif isinstance(message, ExpectationNotice):
            payload, failures = self._compose_notice(message)
        else:
            payload, failures = self._compose(single_event(self.name, message))
        report_template_failures(
            self._metrics,
            _log,
            self.name,
            failures,
            log_context(self.name, message),
            "sent the default message",
        )
        body = jsoncodec.dumps(payload).encode("utf-8")
        await http.deliver(
            self._http,
            method="POST",
            url=self._url.get_secret_value(),
            body=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
            what="slack webhook",
        )
        return None  # a webhook answers "ok": no reference

    async def aclose(self) -> None:
        self._limit.release()

    def _compose(self, notification: Notification) -> tuple[dict[str, Any], list[str]]:
        """The payload, and the template failures that made it fall back to the default."""
        failures: list[str] = []
        context = template_context(notification.event, dict(notification.image))
        payload: dict[str, Any] | None = None
        if self._config.payload_template is not None:
            try:
                payload = _parse_payload(render(self._config.payload_template, context))
            except TemplateError as error:
                failures.append(f"payload_template: {error}")
        if payload is None:
            payload = self._message(notification, context, failures)
        return self._addressed(payload), failures

    def _addressed(self, payload: dict[str, Any]) -> dict[str, Any]:
        for key in ("username", "icon_emoji", "channel"):
            value = getattr(self._config, key)
            if value is not None:
                payload.setdefault(key, value)
        return payload

    def _compose_digest(self, digest: Digest) -> tuple[dict[str, Any], list[str]]:
        """As `_compose`, with the digest's context and default message."""
        failures: list[str] = []
        context = digest_context(digest)
        if self._config.payload_template is not None:
            try:
                payload = _parse_payload(render(self._config.payload_template, context))
            except TemplateError as error:
                failures.append(f"payload_template: {error}")
            else:
                return self._addressed(payload), failures
        if self._config.template is not None:
            try:
                text = _render_text(self._config.template, context)
            except TemplateError as error:
                failures.append(f"template: {error}")
            else:
                payload = {"text": cut(text, _TEXT_MAX), "blocks": [_section(text)]}
                return self._addressed(payload), failures
        return self._addressed(digest_payload(digest)), failures

    def _message(
        self, notification: Notification, context: dict[str, Any], failures: list[str]
    ) -> dict[str, Any]:
        if self._config.template is not None:
            try:
                text = _render_text(self._config.template, context)
            except TemplateError as error:
                failures.append(f"template: {error}")
            else:
                return {"text": cut(text, _TEXT_MAX), "blocks": [_section(text)]}
        return {"text": default_text(notification), "blocks": default_blocks(notification)}

    # --- expectation notices ---

    def _compose_notice(self, notice: ExpectationNotice) -> tuple[dict[str, Any], list[str]]:
        """The handler's templates when they read `expectation`, else `notice_payload`."""
        failures: list[str] = []
        context = notice_context(notice)
        payload: dict[str, Any] | None = None
        config = self._config
        if config.payload_template is not None and mentions(config.payload_template, "expectation"):
            try:
                payload = _parse_payload(render(config.payload_template, context))
            except TemplateError as error:
                failures.append(f"payload_template: {error}")
        if (
            payload is None
            and config.template is not None
            and mentions(config.template, "expectation")
        ):
            try:
                text = _render_text(config.template, context)
            except TemplateError as error:
                failures.append(f"template: {error}")
            else:
                payload = {"text": cut(text, _TEXT_MAX), "blocks": [_section(text)]}
        if payload is None:
            payload = notice_payload(notice)
        return self._addressed(payload), failures


def notice_payload(notice: ExpectationNotice) -> dict[str, Any]:
    """`⏰ nightly-golden-ami: no matching AMI event for 26h (expected every 24h)`, and details."""
    text = cut(escape(notice_sentence(notice)), _TEXT_MAX)
    last = rfc3339(notice.last_seen)
    due = rfc3339(notice.due) or ""
    details = [
        f"Last match: {_slack_time(last, notice.last_seen) if last else 'never'}",
        f"Due: {_slack_time(due, notice.due)}",
        f"expectation {escape(notice.expectation)}",
    ]
    return {
        "text": text,
        "blocks": [
            _section(text),
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": cut(" · ".join(details), _SECTION_MAX)}],
            },
        ],
    }


def _render_text(source: str, context: dict[str, Any]) -> str:
    text = render(source, context).strip()
    if not text:
        raise TemplateError("template rendered empty text")  # Slack refuses an empty section
    return text


def _parse_payload(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError:
        raise TemplateError("payload_template did not render valid JSON") from None
    if not isinstance(payload, dict) or not payload.keys() & {"text", "blocks", "attachments"}:
        raise TemplateError("payload_template must render a JSON object with text or blocks")
    return payload
