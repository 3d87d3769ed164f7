"""When a silence is active: pure arithmetic on epoch seconds, the clock passed in.

A config silence starts at each time of its five-field cron `schedule`, read in
its time zone, and lasts `duration` real seconds. cronsim computes the times in
the zone across daylight-saving changes as Debian cron does (as for
expectations, amid/expectations/due.py): a start skipped by a spring-forward
happens at the first minute after the gap, a start repeated by a fall-back
happens once. A run-time silence is one fixed span, `starts` to `ends`.

The window that holds a moment is the one that began last at or before it, so a
window that began before amid started is active.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim

from amid.wording import human_duration

# A window never outlasts this (SPEC 3g): the longest `duration` and `add --for`.
LONGEST = 90 * 86400.0


@dataclass(frozen=True, slots=True)
class Span:
    """One active stretch: from `starts` (included) to `ends` (excluded)."""

    starts: float
    ends: float

    def holds(self, now: float) -> bool:
        return self.starts <= now < self.ends


@dataclass(frozen=True, slots=True)
class Window:
    """Recurring: each `schedule` time in `zone`, for `duration` seconds."""

    schedule: str
    duration: float
    zone: ZoneInfo
    # The last answer of `active`, (from, until, span): the same until the next start or end.
    # The road asks for every event; cronsim takes ~90 us to answer afresh.
    _memo: list[tuple[float, float, Span | None]] = field(
        default_factory=list, compare=False, repr=False
    )

    def last_start(self, now: float) -> float:
        """The latest start at or before `now`."""
        # cronsim's reverse walk yields times strictly before where it begins: begin a
        # minute late and skip a start still in the future (at most one).
        begin = datetime.fromtimestamp(now + 60, self.zone)
        for moment in itertools.islice(CronSim(self.schedule, begin, reverse=True), 2):
            if moment.timestamp() <= now:
                return moment.timestamp()
        raise AssertionError("two cron times within a minute")  # pragma: no cover

    def next_start(self, now: float) -> float:
        """The first start after `now`."""
        return next(CronSim(self.schedule, datetime.fromtimestamp(now, self.zone))).timestamp()

    def active(self, now: float) -> Span | None:
        """The window that holds `now`, None when none does."""
        if self._memo:
            since, until, known = self._memo[0]
            if since <= now < until:
                return known
        starts = self.last_start(now)
        span: Span | None = Span(starts, starts + self.duration)
        if span is not None and not span.holds(now):
            span = None
        following = self.next_start(now)
        self._memo[:] = [(now, min(following, span.ends) if span else following, span)]
        return span

    def next_active(self, now: float) -> Span:
        """The window active now, else the next one to begin."""
        current = self.active(now)
        if current is not None:
            return current
        starts = self.next_start(now)
        return Span(starts, starts + self.duration)

    def describe(self) -> str:
        """For people: `0 2 * * 0 in Europe/Berlin for 3h`."""
        return f"{self.schedule} in {self.zone.key} for {human_duration(self.duration)}"
