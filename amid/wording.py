"""Words and times for people and documents, shared by handlers, expectations, silences and
the record: one spelling of a duration and of a moment everywhere."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_duration(seconds: float) -> str:
    """3s, 90m, 1h, 24h, 26h, 7d: one unit, rounded down; hours up to two days."""
    whole = int(max(seconds, 0.0))
    if whole < 120:
        return f"{whole}s"
    if whole < 7200 and whole % 3600:
        return f"{whole // 60}m"
    if whole < 2 * 86400 or whole % 86400:
        return f"{whole // 3600}h"
    return f"{whole // 86400}d"
