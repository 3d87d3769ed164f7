"""The AMI state-change event as the rest of amid sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DETAIL_TYPE = "EC2 AMI State Change"
SOURCE = "aws.ec2"
KNOWN_STATES = frozenset({"available", "failed", "deregistered", "disabled"})


@dataclass(frozen=True, slots=True)
class AmiStateChange:
    """One `EC2 AMI State Change` event. `raw` is the whole event, extra fields kept."""

    id: str
    image_id: str
    state: str
    error_message: str
    account: str
    region: str
    time: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = self.raw["detail"]
        return detail

    @property
    def state_label(self) -> str:
        """The metric label for the state: bounded, unknown states become `other`."""
        return self.state if self.state in KNOWN_STATES else "other"

    @property
    def occurred_at(self) -> datetime | None:
        """The event's `time`, or None when it does not parse (the seed examples' placeholder)."""
        try:
            parsed = datetime.fromisoformat(self.time.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None

    @property
    def console_url(self) -> str:
        region = self.region or "us-east-1"
        return (
            f"https://{region}.console.aws.amazon.com/ec2/home?region={region}"
            f"#ImageDetails:imageId={self.image_id}"
        )

    def log_context(self) -> dict[str, str]:
        return {"event_id": self.id, "image_id": self.image_id, "state": self.state}


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    """A valid EventBridge event that is not an AMI state change: deleted, not handled."""

    id: str
    detail_type: str
    source: str
