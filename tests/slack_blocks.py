"""Every Slack payload the tests produce is checked with the Block Kit models of `slack-sdk`."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import Block

MAX_BLOCKS = 50  # Slack refuses a message with more
MAX_TEXT = 4000  # the top-level `text` fallback


def assert_valid_slack_payload(payload: Any) -> None:
    """Parses as Block Kit and passes validate_json(); within the message limits; has `text`."""
    assert isinstance(payload, dict), payload
    text = payload.get("text")
    assert isinstance(text, str) and text.strip(), "a `text` fallback for notifications"
    assert len(text) <= MAX_TEXT
    blocks = payload.get("blocks", [])
    assert len(blocks) <= MAX_BLOCKS, f"{len(blocks)} blocks"
    for raw in blocks:
        block = Block.parse(raw)
        assert block is not None, f"not a Block Kit block: {raw}"
        block.validate_json()  # raises SlackObjectFormationError past a limit
