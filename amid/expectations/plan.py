"""What to do about one expectation now: pure, from its config, its stored state and the time.

An episode begins when the expectation falls due with no episode open; it is
named by that due moment, which every replica computes alike from the shared
state. It ends when the expectation is no longer overdue (a matching event moved
the anchor, or a reload changed the period). A late event that leaves it overdue
continues the episode: nobody is told twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from amid.config import ExpectationConfig
from amid.events import AmiStateChange
from amid.expectations.due import Clock, Every, Schedule, due_at
from amid.patterns import Pattern, compile_pattern
from amid.store.base import ExpectationState, NoticeStatus


@dataclass(frozen=True, slots=True)
class Open:
    episode: float


@dataclass(frozen=True, slots=True)
class Close:
    episode: float


Transition = Open | Close


@dataclass(frozen=True, slots=True)
class Owed:
    """Handlers owed one status of one episode."""

    status: NoticeStatus
    episode: float
    handlers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Expectation:
    name: str
    pattern: Pattern | None  # None: every AMI event
    clock: Clock
    grace: float
    notify: tuple[str, ...]
    recovery: bool

    @classmethod
    def from_config(cls, config: ExpectationConfig) -> Expectation:
        clock: Clock
        if config.every is not None:
            clock = Every(config.every)
        else:
            assert config.schedule is not None  # noqa: S101 - the config model guarantees it
            clock = Schedule(config.schedule, config.zone)
        return cls(
            name=config.name,
            pattern=compile_pattern(config.match) if config.match is not None else None,
            clock=clock,
            grace=config.grace,
            notify=tuple(config.notify),
            recovery=config.recovery,
        )

    @property
    def expected(self) -> str:
        """For people: `every 24h`, `on schedule 0 6 * * * in Europe/Berlin`."""
        return self.clock.describe()

    def matches(self, raw: dict[str, Any]) -> bool:
        return self.pattern is None or self.pattern.matches(raw)

    def due(self, state: ExpectationState) -> float:
        return due_at(self.clock, self.grace, state)

    def transition(self, state: ExpectationState, now: float) -> Transition | None:
        """Open an episode when due with none open; end the open one when no longer due.

        Only a due time moved past the episode (a later event, a longer period) ends it:
        a replica whose clock lags the one that opened it must not end it again.
        """
        due = self.due(state)
        if state.episode is None:
            return Open(due) if now >= due else None
        if due > state.episode and now < due:
            return Close(state.episode)
        return None

    def owed(self, state: ExpectationState) -> Iterator[Owed]:
        """The notices not yet sent: `overdue` in the open episode, `recovered` for the ended."""
        if state.episode is not None:
            waiting = tuple(h for h in self.notify if h not in state.told)
            if waiting:
                yield Owed("overdue", state.episode, waiting)
        if self.recovery and state.ended is not None:
            # Only those told it was overdue hear that it came back.
            waiting = tuple(
                h for h in self.notify if h in state.ended_told and h not in state.ended_recovered
            )
            if waiting:
                yield Owed("recovered", state.ended, waiting)

    def next_check(self, state: ExpectationState, now: float, recheck: float) -> float:
        """When to look again with nothing owed: at the due time, or `recheck` while overdue
        (another replica may have seen the event that ends the episode)."""
        if state.episode is not None:
            return now + recheck
        return max(self.due(state), now)


class Expectations:
    """The config's expectations, compiled once; part of the runtime a reload replaces."""

    def __init__(self, configs: Sequence[ExpectationConfig] = ()) -> None:
        self.all = tuple(Expectation.from_config(config) for config in configs)

    def __iter__(self) -> Iterator[Expectation]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    def matching(self, event: AmiStateChange) -> tuple[Expectation, ...]:
        return tuple(e for e in self.all if e.matches(event.raw))
