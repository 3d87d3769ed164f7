"""When an expectation falls due: pure arithmetic on epoch seconds, the clock passed in.

- `every P`: an event at least every P; due P after the anchor (then `grace` more).
- `schedule C` (five-field cron, in a time zone): at least one event between each
  two consecutive cron times. The window holding the anchor is satisfied; the first
  whole window after it must hold an event: due at that window's end (plus grace).
  cronsim computes the times in the zone, across daylight-saving changes as Debian
  cron does (a time skipped by a spring-forward runs at the first minute after it).

The anchor is the last matching event, or when amid first ran with the expectation,
whichever is later: an event timed before the clock started cannot make it due sooner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim

from amid.store.base import ExpectationState
from amid.wording import human_duration


@dataclass(frozen=True, slots=True)
class Every:
    period: float

    def window_end(self, anchor: float) -> float:
        return anchor + self.period

    def describe(self) -> str:
        return f"every {human_duration(self.period)}"


@dataclass(frozen=True, slots=True)
class Schedule:
    expression: str
    zone: ZoneInfo

    def window_end(self, anchor: float) -> float:
        times = CronSim(self.expression, datetime.fromtimestamp(anchor, self.zone))
        next(times)  # the end of the window that holds the anchor
        return next(times).timestamp()  # the end of the first whole window after it

    def describe(self) -> str:
        return f"on schedule {self.expression} in {self.zone.key}"


Clock = Every | Schedule


def anchor(state: ExpectationState) -> float:
    """What the clock counts from: the last matching event, or the clock's start if later."""
    if state.last_seen is None:
        return state.started
    return max(state.last_seen, state.started)


def due_at(clock: Clock, grace: float, state: ExpectationState) -> float:
    """The moment the expectation is overdue without another matching event (ms precision)."""
    return round(clock.window_end(anchor(state)) + grace, 3)


def event_time(occurred: float | None, received: float) -> float:
    """A matching event counts at its `time`; else, or when that is in the future, on receipt."""
    if occurred is None:
        return round(received, 3)
    return round(min(occurred, received), 3)
