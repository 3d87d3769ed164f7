"""The status page (`GET /`) and `GET /api/v1/events`, served with `metrics.ui: true`.

Read-only and server-rendered: Jinja2 templates from this package (`templates/*.html`)
with autoescape on, so every value (image names and tags are written by anyone who can
tag an image) reaches the page as text. No JavaScript, nothing loaded from elsewhere;
the page refreshes itself every 30 s. The events come through `amid.history.find`, the
read `amid history` makes; the expectations through what `amid expectations` computes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from aiohttp import web

from amid import __version__
from amid.config import Config, SilenceConfig
from amid.history import QueryError, find, moment, public, query_of
from amid.silences import Silence
from amid.store.base import (
    EventRecord,
    ExpectationStore,
    History,
    HistoryQuery,
    LedgerUnavailable,
    SilenceRecord,
    SilenceStore,
)
from amid.tools.expectations import rows as expectation_rows
from amid.wording import human_duration

if TYPE_CHECKING:
    import jinja2

RECENT = 50  # events on the page
FAILURE_WINDOW = 200  # records searched for handlers' recent failures
REFRESH = 30  # seconds


@dataclass(frozen=True, slots=True)
class ActiveSilence:
    """What the page shows of one active silence (SPEC 3g)."""

    name: str  # its name (config) or id (`amid silence add`)
    ends: float  # epoch seconds
    covers: str = ""  # what it holds, in words (its match, image or account)
    handlers: tuple[str, ...] = ()  # empty: every handler
    comment: str = ""
    author: str = ""


# Where the page's silences come from; by default the config's and the store's (see below).
SilenceProvider = Callable[[], Awaitable[Sequence[ActiveSilence]]]


class StatusStore(History, ExpectationStore, SilenceStore, Protocol):
    pass


def active_silences(
    configured: Sequence[SilenceConfig], kept: Sequence[SilenceRecord], now: float
) -> list[ActiveSilence]:
    """The silences in force at `now`: the config's windows open now, then the run-time ones."""
    shown: list[ActiveSilence] = []
    for config in configured:
        span = Silence.from_config(config).active(now)
        if span is not None:
            covers = (
                _words(config.match)
                if config.match is not None
                else "overdue notices of " + ", ".join(config.expectations or ())
            )
            shown.append(
                ActiveSilence(config.name, span.ends, covers, tuple(config.handlers or ()))
            )
    for record in kept:
        if record.starts <= now < record.ends:
            shown.append(
                ActiveSilence(
                    record.id,
                    record.ends,
                    _words(record.match),
                    record.handlers,
                    record.comment,
                    record.author,
                )
            )
    return shown


def _words(pattern: Mapping[str, Any]) -> str:
    return json.dumps(pattern, separators=(", ", ": "), ensure_ascii=False)


@cache
def _templates() -> jinja2.Environment:
    """Built at the first page: with the ui off (the default) amid never imports Jinja2
    here, ~1.9 MiB of RSS (docs/benchmarks.md, Footprint)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("amid.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _console(record: EventRecord) -> str:
    region = quote(record.region or "us-east-1", safe="")
    image = quote(record.image_id, safe="")
    return (
        f"https://{region}.console.aws.amazon.com/ec2/home?region={region}"
        f"#ImageDetails:imageId={image}"
    )


class StatusPage:
    """The two routes; `silences` gives the active silences (by default read from the config
    and the store when the page is asked for)."""

    def __init__(
        self,
        store: StatusStore,
        config: Callable[[], Config],
        *,
        clock: Callable[[], float] = time.time,
        silences: SilenceProvider | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self.silences = silences or self._active_silences

    async def _active_silences(self) -> Sequence[ActiveSilence]:
        """Read when the page is asked for (every 30 s at most per viewer), never per event."""
        kept = await self._store.silences()
        return active_silences(self._config().silences, kept, self._clock())

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/api/v1/events", self.api)

    async def api(self, request: web.Request) -> web.Response:
        params = request.query
        try:
            query = query_of(
                now=self._clock(),
                image_id=params.get("image_id"),
                event_id=params.get("event_id"),
                handler=params.get("handler"),
                since=params.get("since"),
                limit=params.get("limit"),
            )
        except QueryError as error:
            return _json({"error": str(error)}, status=400)
        try:
            found = await find(self._store, query)
        except LedgerUnavailable:
            return _json({"error": "the dedupe store is unavailable"}, status=503)
        return _json({"events": [public(record) for record in found]})

    async def page(self, request: web.Request) -> web.Response:
        now = self._clock()
        try:
            recent = await find(self._store, HistoryQuery(limit=FAILURE_WINDOW))
            expectations = await expectation_rows(self._config(), self._store, now)
            silences = await self.silences()
        except LedgerUnavailable:
            return web.Response(status=503, text="the dedupe store is unavailable\n")
        template = _templates().get_template("status.html")
        html = template.render(
            version=__version__,
            now=moment(now),
            refresh=REFRESH,
            events=[_event_view(record, now) for record in recent[:RECENT]],
            failures=_failures(recent),
            expectations=expectations,
            silences=[
                {
                    "name": s.name,
                    "ends": moment(s.ends),
                    "left": human_duration(s.ends - now),
                    "covers": s.covers,
                    "handlers": ", ".join(s.handlers) or "every handler",
                    "comment": s.comment,
                    "author": s.author,
                }
                for s in silences
            ],
        )
        return web.Response(text=html, content_type="text/html", charset="utf-8")


def _event_view(record: EventRecord, now: float) -> dict[str, Any]:
    return {
        "received": moment(record.received),
        "ago": human_duration(now - record.received),
        "event_id": record.event_id,
        "image_id": record.image_id,
        "console": _console(record),
        "image_name": record.image_name,
        "tags": sorted((record.image_tags or {}).items()),
        "state": record.state,
        "account": record.account,
        "region": record.region,
        "outcome": record.outcome,
        "duplicates": record.duplicates,
        "handlers": [
            {
                "name": name,
                "outcome": entry.outcome if entry else "recorded earlier",
                "attempts": entry.attempts if entry else 0,
                "detail": (
                    (f"silence {entry.silence}" if entry.silence else None)
                    or entry.error
                    or entry.reference
                    or ""
                )
                if entry
                else "",
            }
            for name in record.matched
            for entry in [record.handlers.get(name)]
        ],
    }


def _failures(records: Sequence[EventRecord]) -> list[dict[str, str]]:
    """Each handler's failures among the recent records, newest first."""
    return [
        {
            "handler": name,
            "received": moment(record.received),
            "image_id": record.image_id,
            "event_id": record.event_id,
            "error": entry.error or "",
            "attempts": str(entry.attempts),
        }
        for record in records
        for name, entry in sorted(record.handlers.items())
        if entry.outcome == "failed"
    ]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, sort_keys=True), status=status, content_type="application/json"
    )
