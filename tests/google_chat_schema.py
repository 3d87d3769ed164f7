"""Every Google Chat payload the tests produce is checked against the shapes Google documents.

A JSON Schema written from the Chat API reference (REST v1: `Message`, `CardWithId`,
`GoogleAppsCardV1Card` and its `CardHeader`, `Section`, `Widget`, `TextParagraph`,
`DecoratedText`, `ButtonList`, `Button`, `OnClick`, `OpenLink`; `Thread`): the fields a
create request may carry, their types and enums, what is required, and "exactly one
of" where a Widget or an OnClick holds one kind. Kinds amid does not send (images,
inputs, grids...) are admitted as objects, so the schema says nothing about them. Limits
that a schema cannot say (4,096 characters of text, 100 widgets a card) are checked
beside it.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

MAX_TEXT = 4096
MAX_WIDGETS = 100


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _one_of(kinds: dict[str, Any], also: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object holding exactly one of `kinds` (a protobuf `oneof`), plus `also`."""
    return {
        **_object({**kinds, **(also or {})}),
        "oneOf": [{"required": [kind]} for kind in kinds],
    }


_STRING = {"type": "string"}
_OBJECT = {"type": "object"}
_TEXT = {"type": "string", "minLength": 1}

_OPEN_LINK = _object(
    {
        "url": {"type": "string", "pattern": "^https?://"},
        "openAs": {"enum": ["FULL_SIZE", "OVERLAY"]},
        "onClose": {"enum": ["NOTHING", "RELOAD"]},
    },
    required=("url",),
)
_ON_CLICK = _one_of(
    {
        "action": _OBJECT,
        "openLink": _OPEN_LINK,
        "openDynamicLinkAction": _OBJECT,
        "card": _OBJECT,
        "overflowMenu": _OBJECT,
    }
)
_BUTTON = _object(
    {
        "text": _STRING,
        "icon": _OBJECT,
        "color": _OBJECT,
        "onClick": _ON_CLICK,
        "disabled": {"type": "boolean"},
        "altText": _STRING,
        "type": {"enum": ["TYPE_UNSPECIFIED", "OUTLINED", "FILLED", "FILLED_TONAL", "BORDERLESS"]},
    },
    required=("onClick",),
)
_WIDGET = _one_of(
    {
        "textParagraph": _object(
            {
                "text": _TEXT,
                "maxLines": {"type": "integer", "minimum": 0},
                "textSyntax": {"enum": ["TEXT_SYNTAX_UNSPECIFIED", "HTML", "MARKDOWN"]},
            },
            required=("text",),
        ),
        "decoratedText": _object(
            {
                "icon": _OBJECT,
                "startIcon": _OBJECT,
                "startIconVerticalAlignment": _STRING,
                "topLabel": _STRING,
                "topLabelText": _OBJECT,
                "text": _TEXT,
                "contentText": _OBJECT,
                "wrapText": {"type": "boolean"},
                "bottomLabel": _STRING,
                "bottomLabelText": _OBJECT,
                "onClick": _ON_CLICK,
                "button": _BUTTON,
                "switchControl": _OBJECT,
                "endIcon": _OBJECT,
            },
            required=("text",),
        ),
        "buttonList": _object({"buttons": {"type": "array", "items": _BUTTON, "minItems": 1}}),
        "divider": _object({}),
        "image": _OBJECT,
        "textInput": _OBJECT,
        "selectionInput": _OBJECT,
        "dateTimePicker": _OBJECT,
        "grid": _OBJECT,
        "columns": _OBJECT,
        "chipList": _OBJECT,
        "carousel": _OBJECT,
    },
    also={
        "horizontalAlignment": {
            "enum": ["HORIZONTAL_ALIGNMENT_UNSPECIFIED", "START", "CENTER", "END"]
        }
    },
)
_HEADER = _object(
    {
        "title": _TEXT,
        "subtitle": _STRING,
        "imageType": {"enum": ["SQUARE", "CIRCLE"]},
        "imageUrl": _STRING,
        "imageAltText": _STRING,
    },
    required=("title",),
)
_SECTION = _object(
    {
        "header": _STRING,
        "widgets": {"type": "array", "items": _WIDGET, "minItems": 1},
        "collapsible": {"type": "boolean"},
        "uncollapsibleWidgetsCount": {"type": "integer", "minimum": 0},
        "collapseControl": _OBJECT,
    },
)
_CARD = _object(
    {
        "header": _HEADER,
        "sections": {"type": "array", "items": _SECTION, "minItems": 1},
        "sectionDividerStyle": {
            "enum": ["DIVIDER_STYLE_UNSPECIFIED", "SOLID_DIVIDER", "NO_DIVIDER"]
        },
        "cardActions": {"type": "array", "items": _OBJECT},
        "name": _STRING,
        "fixedFooter": _OBJECT,
        "displayStyle": {"enum": ["DISPLAY_STYLE_UNSPECIFIED", "PEEK", "REPLACE"]},
        "peekCardHeader": _HEADER,
    }
)
MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **_object(
        {
            "text": {"type": "string", "maxLength": MAX_TEXT},
            "cardsV2": {
                "type": "array",
                "items": _object({"cardId": _STRING, "card": _CARD}, required=("card",)),
            },
            "thread": _object({"name": _STRING, "threadKey": _TEXT}),
            "fallbackText": _STRING,
            "accessoryWidgets": {"type": "array", "items": _OBJECT},
            "privateMessageViewer": _OBJECT,
            "attachment": {"type": "array", "items": _OBJECT},
            "quotedMessageMetadata": _OBJECT,
        }
    ),
    "anyOf": [{"required": ["text"]}, {"required": ["cardsV2"]}],
}

_VALIDATOR = Draft202012Validator(MESSAGE_SCHEMA)


def problems(payload: Any) -> list[str]:
    """What is wrong with `payload` as a Chat `Message`; empty when nothing is."""
    found = [f"{error.json_path}: {error.message}" for error in _VALIDATOR.iter_errors(payload)]
    if isinstance(payload, dict):
        for index, item in enumerate(payload.get("cardsV2") or []):
            sections = item.get("card", {}).get("sections", []) if isinstance(item, dict) else []
            widgets = sum(len(s.get("widgets", [])) for s in sections if isinstance(s, dict))
            if widgets > MAX_WIDGETS:
                found.append(f"$.cardsV2[{index}]: {widgets} widgets; Chat drops those past 100")
    return found


def assert_valid_chat_payload(payload: Any) -> None:
    found = problems(payload)
    assert not found, "\n".join(found)
