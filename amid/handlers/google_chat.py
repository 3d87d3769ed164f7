"""`google_chat`: POST a message with a card to a Google Chat space's webhook (SPEC 3f).

The body is a Chat API `Message`: a `text` line (what notifications show), one card
in `cardsV2` with the details and a button to the AMI in the EC2 console, and
`thread.threadKey` = the rendered `thread_by` (default `{{ image_id }}`). The URL gets
`messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`, so one image's messages share
a thread (the first one starts it) and amid keeps no state for it.

Text from events and images cannot become markup: `<`, `>` and `&` are escaped in the
text line (no `<users/all>` mention, no `<url|link>`) and in every card text that Chat
reads as HTML (textParagraph, decoratedText), so no tag is rendered. Plain-text places
(card and section headers, labels, buttons) hold only amid's own words and the image id.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from amid.config import Config, GoogleChatHandlerConfig
from amid.handlers.base import Digest, ExpectationNotice, Notification, Sendable
from amid.handlers.chat import (
    DIGEST_LINES,
    ChatWebhookHandler,
    cut,
    group_value,
    mark,
    verb,
)
from amid.handlers.notice import MARK as NOTICE_MARK
from amid.handlers.notice import notice_context, notice_sentence
from amid.templates import TemplateError, digest_context, mentions, render, template_context
from amid.wording import rfc3339

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

REPLY_OPTION = "messageReplyOption"
REPLY_FALLBACK = "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
CARD_ID = "amid"

# Chat's limits: 4,096 characters of text, 100 widgets a card (more are dropped).
_TEXT_MAX = 4000
_TITLE_MAX = 200
_FIELD_MAX = 500
_ERROR_MAX = 2000
_DESCRIPTION_MAX = 1000
_TAGS_MAX = 40
_LINE_MAX = 300
_NAME_MAX = 100
_THREAD_KEY_MAX = 1000


def escape(text: str) -> str:
    """`<`, `>` and `&` as entities: literal in the text line and in card HTML."""
    return html.escape(text, quote=False)


def _card(header: dict[str, str], sections: list[dict[str, Any]], text: str) -> dict[str, Any]:
    return {
        "text": cut(text, _TEXT_MAX),
        "cardsV2": [{"cardId": CARD_ID, "card": {"header": header, "sections": sections}}],
    }


def _field(label: str, value: str) -> dict[str, Any]:
    return {
        "decoratedText": {
            "topLabel": label,
            "text": escape(cut(value, _FIELD_MAX)),
            "wrapText": True,
        }
    }


def _paragraph(text: str) -> dict[str, Any]:
    """`text` is HTML already escaped where it came from an event."""
    return {"textParagraph": {"text": text}}


def _escaped_block(text: str, limit: int) -> str:
    return escape(cut(text, limit)).replace("\n", "<br>")


def _console_button(url: str) -> dict[str, Any]:
    return {
        "buttonList": {
            "buttons": [{"text": "Open in the EC2 console", "onClick": {"openLink": {"url": url}}}]
        }
    }


class GoogleChatFormat:
    what = "google chat webhook"

    def event(self, notification: Notification) -> dict[str, Any]:
        event, image = notification.event, notification.image
        name = image.get("name")
        text = f"{mark(event.state)} AMI {event.image_id} {verb(event.state)}"
        if event.region:
            text += f" in {event.region}"
        fields = [
            _field("Image", event.image_id),
            _field("State", f"{mark(event.state)} {event.state}"),
            _field("Account", event.account or "unknown"),
            _field("Region", event.region or "unknown"),
            _field("Time", event.time or "unknown"),
        ]
        if name:
            fields.append(_field("Name", str(name)))
        fields.append(_field("Event", event.id))
        sections: list[dict[str, Any]] = [{"widgets": fields}]
        if event.error_message:
            error = (
                f'<font color="#d93025">{_escaped_block(event.error_message, _ERROR_MAX)}</font>'
            )
            sections.append({"header": "Error", "widgets": [_paragraph(error)]})
        if image.get("description"):
            description = _escaped_block(str(image["description"]), _DESCRIPTION_MAX)
            sections.append({"header": "Description", "widgets": [_paragraph(description)]})
        tags = image.get("tags")
        if isinstance(tags, dict) and tags:
            listed = sorted((str(key), str(value)) for key, value in tags.items())
            widgets = [
                _paragraph(
                    f"<b>{escape(cut(key, _FIELD_MAX))}</b>: {escape(cut(value, _FIELD_MAX))}"
                )
                for key, value in listed[:_TAGS_MAX]
            ]
            if len(listed) > _TAGS_MAX:
                widgets.append(_paragraph(f"and {len(listed) - _TAGS_MAX} more tags"))
            sections.append({"header": "Tags", "widgets": widgets})
        sections.append({"widgets": [_console_button(event.console_url)]})
        header = {
            "title": cut(f"{mark(event.state)} AMI {verb(event.state)}", _TITLE_MAX),
            "subtitle": cut(event.image_id, _TITLE_MAX),
        }
        return _card(header, sections, escape(text))

    def digest(self, digest: Digest) -> dict[str, Any]:
        """The count and the group, a line per event up to 20, then "and N more"."""
        state = digest.state
        headline = f"{mark(state)} {digest.summary()}"
        widgets: list[dict[str, Any]] = []
        group = " · ".join(f"{path} {group_value(value)}" for path, value in digest.group.items())
        if group:
            widgets.append(_paragraph(f"<i>{escape(group)}</i>"))
        for notification in digest.notifications[:DIGEST_LINES]:
            widgets.append(_paragraph(self._line(notification, with_state=state is None)))
        more = digest.count - min(digest.count, DIGEST_LINES)
        if more > 0:
            widgets.append(_paragraph(f"and {more} more"))
        header = {"title": cut(headline, _TITLE_MAX)}
        return _card(header, [{"widgets": widgets}], escape(headline))

    @staticmethod
    def _line(notification: Notification, *, with_state: bool) -> str:
        event, name = notification.event, notification.image.get("name")
        line = f"• <b>{escape(event.image_id)}</b>"
        if name:
            line += f" {escape(cut(str(name), _NAME_MAX))}"
        if with_state:
            line += f" ({escape(event.state)})"
        if event.error_message:
            line += f": {escape(cut(' '.join(event.error_message.split()), _LINE_MAX))}"
        return line

    def notice(self, notice: ExpectationNotice) -> dict[str, Any]:
        """`⏰ nightly-golden-ami: no matching AMI event for 26h (expected every 24h)`."""
        sentence = notice_sentence(notice)
        widgets = [
            _paragraph(escape(sentence)),
            _field("Last match", rfc3339(notice.last_seen) or "never"),
            _field("Due", rfc3339(notice.due) or ""),
            _field("Expected", notice.expected),
        ]
        header = {
            "title": f"{NOTICE_MARK[notice.status]} Expectation {notice.status}",
            "subtitle": cut(notice.expectation, _TITLE_MAX),
        }
        return _card(header, [{"widgets": widgets}], escape(sentence))

    def text(self, text: str) -> dict[str, Any]:
        return {"text": cut(text, _TEXT_MAX)}

    def accepts(self, payload: Any) -> bool:
        return isinstance(payload, dict) and bool(payload.keys() & {"text", "cardsV2"})


def with_reply_option(url: str) -> str:
    """The webhook URL with `messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`; its own
    parameters (`key`, `token`) kept byte for byte, a `messageReplyOption` of its own replaced."""
    parts = urlsplit(url)
    kept = [
        pair for pair in parts.query.split("&") if pair and pair.split("=", 1)[0] != REPLY_OPTION
    ]
    query = "&".join([*kept, f"{REPLY_OPTION}={REPLY_FALLBACK}"])
    return urlunsplit(parts._replace(query=query))


class GoogleChatHandler(ChatWebhookHandler):
    def __init__(self, config: GoogleChatHandlerConfig, resources: HandlerResources) -> None:
        super().__init__(config, GoogleChatFormat(), resources.http, resources.metrics)
        self._thread_by = config.thread_by
        self._post_url = with_reply_option(self._url.get_secret_value())
        # The key and token, alone or decoded, must not show in an error either.
        self._secrets = [
            value for _, value in parse_qsl(urlsplit(self._url.get_secret_value()).query) if value
        ]

    @classmethod
    def from_config(
        cls, handler: GoogleChatHandlerConfig, config: Config, resources: HandlerResources
    ) -> GoogleChatHandler:
        return cls(handler, resources)

    def post_url(self) -> str:
        return self._post_url

    def secrets(self) -> Iterable[str]:
        return self._secrets

    def addressed(
        self, payload: dict[str, Any], message: Sendable, failures: list[str]
    ) -> dict[str, Any]:
        """Threaded by the rendered `thread_by`, unless a `payload_template` named a thread."""
        key = self.thread_key(message, failures)
        if key and "thread" not in payload:
            payload["thread"] = {"threadKey": key}
        return payload

    def thread_key(self, message: Sendable, failures: list[str]) -> str:
        """An event's: `thread_by` (its image id when that fails). A digest's: `thread_by` with
        the digest's context (often empty: a thread of its own). A notice's: one thread per
        expectation, so overdue and recovered meet."""
        source = self._thread_by
        if isinstance(message, ExpectationNotice):
            if not mentions(source, "expectation"):
                return f"expectation-{message.expectation}"
            context = notice_context(message)
        elif isinstance(message, Digest):
            context = digest_context(message)
        else:
            context = template_context(message.event, dict(message.image))
        try:
            key = render(source, context).strip()
        except TemplateError as error:
            failures.append(f"thread_by: {error}")
            key = message.event.image_id if isinstance(message, Notification) else ""
        return cut(key, _THREAD_KEY_MAX)
