"""`amid history`: what amid did with each event, as a table a person reads at 100 columns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from amid.history import moment, public
from amid.store.base import EventRecord

WIDTH = 100


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def _tries(count: int) -> str:
    return f"{count} try" if count == 1 else f"{count} tries"


def lines(records: Iterable[EventRecord]) -> Iterator[str]:
    """Per event: a heading line, a line of what it was, a line per handler; pure."""
    yield f"{'RECEIVED':<20}  {'IMAGE':<21}  {'STATE':<12}  OUTCOME"
    for record in records:
        when = moment(record.received).replace("T", " ").removesuffix("Z") + "Z"
        outcome = record.outcome
        if record.duplicates:
            copies = "copy" if record.duplicates == 1 else "copies"
            outcome += f" (+{record.duplicates} duplicate {copies})"
        yield _fit(f"{when:<20}  {record.image_id:<21}  {record.state:<12}  {outcome}")
        about = f"    event {record.event_id}  {record.account} {record.region}"
        if record.image_name is not None:
            about += f"  {record.image_name!r}"
        yield _fit(about)
        if not record.matched:
            yield "    (no handler matched)"
        for name in record.matched:
            entry = record.handlers.get(name)
            if entry is None:
                yield _fit(f"    -> {name:<16} (recorded before this record was kept)")
                continue
            detail = entry.error or entry.reference or ""
            if entry.silence is not None:
                detail = f"by silence {entry.silence}"
            line = f"    -> {name:<16} {entry.outcome:<9} {_tries(entry.attempts):<8} {detail}"
            yield _fit(line.rstrip())


def json_lines(records: Iterable[EventRecord]) -> Iterator[str]:
    for record in records:
        yield json.dumps(public(record), sort_keys=True)
