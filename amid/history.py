"""What amid did with each event: the one read that `amid history` and the status page share.

The store keeps the record (`History`, store/base.py); this module turns the
asker's words (`--since 2h`, `?limit=20`) into a `HistoryQuery`, reads, and gives the
one JSON shape of a record (`--json` lines and `GET /api/v1/events` alike). Only the
rendering differs between the command and the page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from amid.config import parse_duration
from amid.store.base import EventRecord, History, HistoryQuery
from amid.wording import rfc3339

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


class QueryError(ValueError):
    """A parameter that cannot be used; the message is one line for the asker."""


def query_of(
    *,
    now: float,
    image_id: str | None = None,
    event_id: str | None = None,
    handler: str | None = None,
    since: str | None = None,
    limit: str | int | None = None,
) -> HistoryQuery:
    """The query from an asker's words; raises QueryError naming the bad one."""
    since_epoch = None
    if since is not None:
        try:
            since_epoch = now - parse_duration(since)
        except ValueError as error:
            raise QueryError(f"since: {error}") from None
    count = DEFAULT_LIMIT
    if limit is not None:
        try:
            count = int(limit)
        except ValueError:
            raise QueryError(f"limit: {limit!r} is not a whole number") from None
        if not 1 <= count <= MAX_LIMIT:
            raise QueryError(f"limit: must be between 1 and {MAX_LIMIT}")
    return HistoryQuery(
        image_id=image_id or None,
        event_id=event_id or None,
        handler=handler or None,
        since=since_epoch,
        limit=count,
    )


async def find(store: History, query: HistoryQuery) -> list[EventRecord]:
    """The records, newest first: the one read behind the command, the page and the API."""
    return await store.events(query)


def moment(epoch: float) -> str:
    return rfc3339(datetime.fromtimestamp(epoch, UTC)) or ""


def public(record: EventRecord) -> dict[str, Any]:
    """One record as JSON for people's tools: times in RFC 3339."""
    shown = record.as_json()
    shown["received"] = moment(record.received)
    shown["updated"] = moment(record.updated) if record.updated else None
    return shown
