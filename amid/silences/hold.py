"""Which handlers an active silence holds for an event, and which silence: pure.

A silence is data (Alertmanager's silence.go): a pattern, the handlers it
covers (every handler when none are named), and when it is active: a recurring
`Window` (config) or one `Span` (run-time, from the store). A handler is held
when a silence active now covers it and its pattern fits the event; the first
such silence (config ones first, in config order) names the hold.

A pattern on `image` is held against the event with amid's `image` object, as
routing does (amid/pipeline/routing.py). Until the image is known, a handler a
silence on `image` could hold waits: it is never delivered on missing data.
A silence naming `expectations` holds no events; it holds those expectations'
`overdue` notices to the handlers it covers (`held_notices`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from amid.config import SilenceConfig
from amid.events import AmiStateChange
from amid.patterns import Pattern, compile_pattern, names_field, without_field
from amid.pipeline.routing import IMAGE, with_image
from amid.silences.window import Span, Window
from amid.store.base import SilenceRecord


@dataclass(frozen=True, slots=True)
class Silence:
    ident: str  # the config name, or the run-time id
    handlers: frozenset[str] | None  # None: every handler
    when: Window | Span
    pattern: Pattern | None = None  # None: an expectations silence, holds no events
    precondition: Pattern | None = None  # a pattern on `image`: what the event alone must fit
    needs_image: bool = False
    expectations: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: SilenceConfig) -> Silence:
        window = Window(config.schedule, config.duration, config.zone)
        handlers = frozenset(config.handlers) if config.handlers is not None else None
        if config.match is None:
            return cls(
                config.name, handlers, window, expectations=frozenset(config.expectations or ())
            )
        return cls._matching(config.name, handlers, window, config.match)

    @classmethod
    def from_record(cls, record: SilenceRecord) -> Silence:
        handlers = frozenset(record.handlers) or None
        return cls._matching(record.id, handlers, Span(record.starts, record.ends), record.match)

    @classmethod
    def _matching(
        cls,
        ident: str,
        handlers: frozenset[str] | None,
        when: Window | Span,
        match: Mapping[str, Any],
    ) -> Silence:
        pattern = compile_pattern(match)
        if not names_field(match, IMAGE):
            return cls(ident, handlers, when, pattern)
        rest = without_field(match, IMAGE)
        precondition = compile_pattern(rest) if rest is not None else None
        return cls(ident, handlers, when, pattern, precondition, needs_image=True)

    def active(self, now: float) -> Span | None:
        """The stretch active now, None when the silence is not."""
        if isinstance(self.when, Span):
            return self.when if self.when.holds(now) else None
        return self.when.active(now)

    def covers(self, handler: str) -> bool:
        return self.handlers is None or handler in self.handlers

    def could_match(self, raw: Mapping[str, Any]) -> bool:
        """Before the image is known: False when no image could make the pattern fit `raw`
        (the event)."""
        return self.pattern is not None and (
            self.precondition is None or self.precondition.matches(raw)
        )


@dataclass(frozen=True, slots=True)
class Hold:
    held: dict[str, str] = field(default_factory=dict)  # handler -> the silence holding it
    waiting: tuple[str, ...] = ()  # a silence on `image` might hold them: the image is unknown


def hold(
    silences: Iterable[Silence],
    event: AmiStateChange,
    image: Mapping[str, Any] | None,
    handlers: Sequence[str],
    now: float,
) -> Hold:
    """Which of `handlers` the silences active at `now` hold for `event` (`image` None: not
    known), in the order of `handlers`."""
    active = [s for s in silences if s.pattern is not None and s.active(now) is not None]
    if not active or not handlers:
        return Hold()
    view: Mapping[str, Any] | None = None
    held: dict[str, str] = {}
    waiting: list[str] = []
    for handler in handlers:
        unsure = False
        for silence in active:
            if not silence.covers(handler):
                continue
            if not silence.needs_image:
                assert silence.pattern is not None  # noqa: S101 - filtered above
                if silence.pattern.matches(event.raw):
                    held[handler] = silence.ident
                    break
            elif silence.could_match(event.raw):
                if image is None:
                    unsure = True
                    continue
                view = view if view is not None else with_image(event, image)
                assert silence.pattern is not None  # noqa: S101 - filtered above
                if silence.pattern.matches(view):
                    held[handler] = silence.ident
                    break
        if unsure and handler not in held:
            waiting.append(handler)
    return Hold(held, tuple(waiting))


def held_notices(
    silences: Iterable[Silence], expectation: str, handlers: Sequence[str], now: float
) -> dict[str, float]:
    """The handlers whose `overdue` notices of `expectation` an active silence holds, each with
    the moment to look again: the earliest end among the silences holding it."""
    held: dict[str, float] = {}
    for silence in silences:
        span = silence.active(now) if expectation in silence.expectations else None
        if span is None:
            continue
        for handler in handlers:
            if silence.covers(handler):
                held[handler] = min(held.get(handler, span.ends), span.ends)
    return held


def active_count(silences: Iterable[Silence], now: float) -> int:
    return sum(1 for silence in silences if silence.active(now) is not None)


class Silences:
    """The config's silences, compiled once; part of the runtime a reload replaces."""

    def __init__(self, configs: Sequence[SilenceConfig] = ()) -> None:
        self.all = tuple(Silence.from_config(config) for config in configs)

    def __iter__(self) -> Iterator[Silence]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)
