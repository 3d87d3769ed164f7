"""What every handler type says about an expectation (SPEC 3c): one document, one sentence.

Pure: the handler modules build their payloads from these (slack the sentence,
sns/webhook/shell the document, console both), and templates see the document
as `expectation`.
"""

from __future__ import annotations

from typing import Any

from amid.handlers.base import ExpectationNotice
from amid.wording import human_duration, rfc3339

MARK = {"overdue": "⏰", "recovered": "✅"}


def notice_document(notice: ExpectationNotice) -> dict[str, Any]:
    """The JSON of sns, webhook and shell: `{"expectation", "status", "last_seen", "due", ...}`."""
    return {
        **dict(notice.details),
        "expectation": notice.expectation,
        "status": notice.status,
        "last_seen": rfc3339(notice.last_seen),
        "due": rfc3339(notice.due),
        "expected": notice.expected,
        "at": rfc3339(notice.at),
        "id": notice.id,
    }


def notice_sentence(notice: ExpectationNotice) -> str:
    """`⏰ nightly-golden-ami: no matching AMI event for 26h (expected every 24h)`."""
    mark = MARK[notice.status]
    if notice.status == "overdue":
        since = notice.since or notice.last_seen or notice.due
        silent = human_duration((notice.at - since).total_seconds())
        text = f"{mark} {notice.expectation}: no matching AMI event for {silent}"
        if notice.last_seen is None:
            text += " since amid began watching"
    else:
        late = human_duration((notice.at - notice.due).total_seconds())
        text = f"{mark} {notice.expectation}: a matching AMI event came, {late} after it was due"
    return f"{text} (expected {notice.expected})"


def notice_context(notice: ExpectationNotice) -> dict[str, Any]:
    """What templates see for a notice: `expectation` (the document); event names are empty."""
    return {"expectation": notice_document(notice)}
