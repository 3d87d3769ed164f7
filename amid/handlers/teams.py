"""`teams`: POST an Adaptive Card to a Microsoft Teams Workflows webhook (SPEC 3f).

Office 365 connectors are retired; a Workflows webhook ("When a Teams webhook request
is received") takes a `message` whose attachment is an Adaptive Card. The card is
version 1.4, which every Teams client renders, and carries what the Slack message
carries: a headline with the state's mark, a FactSet (image, state, account, region,
time, name when known), the error for `failed`, the description and tags, and a
button to the AMI in the EC2 console.

Text from events and images cannot become markup: in TextBlocks and facts (which Teams
renders as markdown) every markdown control character is escaped with a backslash, as
CommonMark defines; free text (errors, descriptions) goes in RichTextBlock TextRuns,
which Adaptive Cards never read as markdown.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from amid.config import Config, TeamsHandlerConfig
from amid.handlers.base import Digest, ExpectationNotice, Notification
from amid.handlers.chat import (
    DIGEST_LINES,
    ChatWebhookHandler,
    cut,
    group_value,
    mark,
    verb,
)
from amid.handlers.notice import notice_sentence
from amid.wording import rfc3339

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.4"

# Teams refuses a message past about 28 KB; these keep any card below 20 KB.
_FACT_MAX = 300
_NAME_MAX = 200
_ERROR_MAX = 2000
_DESCRIPTION_MAX = 1000
_TAGS_MAX = 50  # AWS allows 50 tags an image ...
_TAGS_CHARS = 8000  # ... of up to 384 characters: past this many, the rest are counted
_LINE_MAX = 300

_INLINE = re.compile(r"([\\`*_\[\]<>~&|])")  # what can open emphasis, a link, code or HTML
_LINE_START = re.compile(r"^(\s*)([#+\-]|\d+[.)])")  # what can open a heading or a list


def escape(text: str) -> str:
    """`text` as literal characters in Adaptive Cards markdown, on one line."""
    flat = " ".join(text.split())
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), _INLINE.sub(r"\\\1", flat))


def message(
    body: list[dict[str, Any]], actions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The Workflows envelope around one Adaptive Card."""
    card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": VERSION}
    card["body"] = body
    if actions:
        card["actions"] = actions
    return {"type": "message", "attachments": [{"contentType": CARD_TYPE, "content": card}]}


def _headline(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "size": "Large", "weight": "Bolder", "wrap": True}


def _label(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "weight": "Bolder", "wrap": True}


def _subtle(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "isSubtle": True, "size": "Small", "wrap": True}


def _plain(text: str, *, monospace: bool = False) -> dict[str, Any]:
    """Free text, never read as markdown (a TextRun has no markdown)."""
    run: dict[str, Any] = {"type": "TextRun", "text": text}
    if monospace:
        run["fontType"] = "Monospace"
    return {"type": "RichTextBlock", "inlines": [run]}


def _facts(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "FactSet",
        "facts": [
            {"title": escape(cut(title, _FACT_MAX)), "value": escape(cut(value, _FACT_MAX))}
            for title, value in pairs
        ],
    }


def _within(pairs: list[tuple[str, str]], budget: int) -> list[tuple[str, str]]:
    """The first pairs whose characters fit in `budget` (at least one)."""
    kept: list[tuple[str, str]] = []
    for title, value in pairs:
        budget -= min(len(title), _FACT_MAX) + min(len(value), _FACT_MAX)
        if kept and budget < 0:
            break
        kept.append((title, value))
    return kept


def _console(url: str) -> dict[str, Any]:
    return {"type": "Action.OpenUrl", "title": "Open in the EC2 console", "url": url}


class TeamsFormat:
    what = "teams webhook"

    def event(self, notification: Notification) -> dict[str, Any]:
        event, image = notification.event, notification.image
        name = image.get("name")
        headline = (
            f"{mark(event.state)} AMI {cut(str(name or event.image_id), _NAME_MAX)} "
            f"{verb(event.state)}"
        )
        pairs = [
            ("Image", event.image_id),
            ("State", f"{mark(event.state)} {event.state}"),
            ("Account", event.account or "unknown"),
            ("Region", event.region or "unknown"),
            ("Time", event.time or "unknown"),
        ]
        if name:
            pairs.append(("Name", str(name)))
        body = [_headline(escape(headline)), _facts(pairs)]
        if event.error_message:
            body += [_label("Error"), _plain(cut(event.error_message, _ERROR_MAX), monospace=True)]
        if image.get("description"):
            body += [
                _label("Description"),
                _plain(cut(str(image["description"]), _DESCRIPTION_MAX)),
            ]
        tags = image.get("tags")
        if isinstance(tags, dict) and tags:
            listed = sorted((str(key), str(value)) for key, value in tags.items())
            shown = _within(listed[:_TAGS_MAX], _TAGS_CHARS)
            body += [_label("Tags"), _facts(shown)]
            if len(listed) > len(shown):
                body.append(_subtle(f"and {len(listed) - len(shown)} more tags"))
        body.append(_subtle(f"event {escape(event.id)}"))
        return message(body, [_console(event.console_url)])

    def digest(self, digest: Digest) -> dict[str, Any]:
        """The count and the group, a line per event up to 20, then "and N more"."""
        state = digest.state
        body = [_headline(f"{mark(state)} {escape(digest.summary())}")]
        group = " · ".join(f"{path} {group_value(value)}" for path, value in digest.group.items())
        if group:
            body.append(_subtle(escape(group)))
        for notification in digest.notifications[:DIGEST_LINES]:
            body.append(self._line(notification, with_state=state is None))
        more = digest.count - min(digest.count, DIGEST_LINES)
        if more > 0:
            body.append(_subtle(f"and {more} more"))
        return message(body)

    @staticmethod
    def _line(notification: Notification, *, with_state: bool) -> dict[str, Any]:
        event, name = notification.event, notification.image.get("name")
        line = f"• {escape(event.image_id)}"
        if name:
            line += f" **{escape(cut(str(name), _NAME_MAX))}**"
        if with_state:
            line += f" ({escape(event.state)})"
        if event.error_message:
            line += f": {escape(cut(event.error_message, _LINE_MAX))}"
        return {"type": "TextBlock", "text": line, "wrap": True, "spacing": "None"}

    def notice(self, notice: ExpectationNotice) -> dict[str, Any]:
        """`⏰ nightly-golden-ami: no matching AMI event for 26h (expected every 24h)`."""
        pairs = [
            ("Expectation", notice.expectation),
            ("Status", notice.status),
            ("Last match", rfc3339(notice.last_seen) or "never"),
            ("Due", rfc3339(notice.due) or ""),
            ("Expected", notice.expected),
        ]
        return message([_headline(escape(notice_sentence(notice))), _facts(pairs)])

    def text(self, text: str) -> dict[str, Any]:
        return message([{"type": "TextBlock", "text": text, "wrap": True}])

    def accepts(self, payload: Any) -> bool:
        return isinstance(payload, dict) and bool(payload.keys() & {"type", "attachments"})


class TeamsHandler(ChatWebhookHandler):
    def __init__(self, config: TeamsHandlerConfig, resources: HandlerResources) -> None:
        super().__init__(config, TeamsFormat(), resources.http, resources.metrics)

    @classmethod
    def from_config(
        cls, handler: TeamsHandlerConfig, config: Config, resources: HandlerResources
    ) -> TeamsHandler:
        return cls(handler, resources)
