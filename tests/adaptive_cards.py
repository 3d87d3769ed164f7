"""Every Teams payload the tests produce is checked by Microsoft's Adaptive Cards library.

`tests/node/validate-adaptive-cards.cjs` runs under node with the npm packages pinned in
`tests/node/package-lock.json` (`make node-tools` installs them; `make test` does it first).
One node process checks a whole list of cards, so a test pays its start-up once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).parent / "node"
VALIDATOR = NODE_DIR / "validate-adaptive-cards.cjs"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"


@dataclass(frozen=True)
class CardCheck:
    problems: list[str]
    markdown: dict[str, str]  # JSON path -> the HTML its markdown renders to


def check_cards(cards: Sequence[Any]) -> list[CardCheck]:
    """Each card checked by the library: its problems and its markdown, rendered."""
    node = shutil.which("node")
    assert node is not None, "node is needed to validate Adaptive Cards: run `make node-tools`"
    assert (NODE_DIR / "node_modules" / "adaptivecards").is_dir(), "run `make node-tools` first"
    done = subprocess.run(
        [node, str(VALIDATOR)],
        input=json.dumps(list(cards)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=NODE_DIR,
    )
    assert done.returncode == 0, done.stderr
    return [CardCheck(item["problems"], item["markdown"]) for item in json.loads(done.stdout)]


def cards_of(payload: Any) -> list[Any]:
    """The Adaptive Cards of a Teams `message`, after checking the envelope Workflows expects."""
    assert isinstance(payload, dict), payload
    assert payload.get("type") == "message", payload
    attachments = payload.get("attachments")
    assert isinstance(attachments, list) and attachments, "at least one attachment"
    for attachment in attachments:
        assert attachment.get("contentType") == CARD_TYPE, attachment
        assert set(attachment) <= {"contentType", "content", "contentUrl"}, attachment
    return [attachment["content"] for attachment in attachments]


def assert_valid_teams_payloads(payloads: Sequence[Any]) -> list[CardCheck]:
    """Every card of every payload is valid for Adaptive Cards 1.4; returns the checks."""
    cards = [card for payload in payloads for card in cards_of(payload)]
    checks = check_cards(cards)
    problems = {i: check.problems for i, check in enumerate(checks) if check.problems}
    assert not problems, json.dumps(problems, indent=2)
    return checks
