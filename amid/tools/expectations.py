"""`amid expectations`: each expectation's last match, next due time and status, from the store."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from amid.config import Config
from amid.expectations import Expectation, Expectations
from amid.store.base import ExpectationState, ExpectationStore


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    last_match: str
    next_due: str
    status: str


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def row(expectation: Expectation, state: ExpectationState | None, now: float) -> Row:
    """One line of the table; pure."""
    if state is None:
        return Row(expectation.name, "-", "-", "not watched yet (amid has not run with it)")
    due = expectation.due(state)
    if state.episode is not None:
        told = ", ".join(sorted(state.told)) or "nobody yet"
        status = f"OVERDUE since {_when(state.episode)} (told: {told})"
    elif now >= due:
        status = "OVERDUE (amid has not noticed yet: is it running?)"
    else:
        status = "ok"
    last = _when(state.last_seen) if state.last_seen is not None else "never"
    return Row(expectation.name, last, _when(due), status)


async def rows(config: Config, store: ExpectationStore, now: float) -> list[Row]:
    return [
        row(expectation, await store.expectation(expectation.name), now)
        for expectation in Expectations(config.expectations)
    ]


def table(rows: Iterable[Row]) -> str:
    lines = [("NAME", "LAST MATCH", "NEXT DUE", "STATUS")]
    lines += [(r.name, r.last_match, r.next_due, r.status) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True))
        + "  "
        + line[3]
        for line in lines
    )
