"""Which handlers an event reaches: each handler's `match`, compiled once. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amid.config import HandlerConfig
from amid.events import AmiStateChange
from amid.pipeline.patterns import Pattern, compile_pattern


@dataclass(frozen=True, slots=True)
class Route:
    handler: str
    pattern: Pattern | None  # None: every AMI event


class Router:
    def __init__(self, handlers: Sequence[HandlerConfig]) -> None:
        self.handler_configs = {h.name: h for h in handlers}
        self.routes = tuple(
            Route(h.name, compile_pattern(h.match) if h.match is not None else None)
            for h in handlers
        )

    def route(self, event: AmiStateChange) -> tuple[str, ...]:
        """The names of the handlers whose `match` fits the whole event, in config order."""
        return tuple(
            route.handler
            for route in self.routes
            if route.pattern is None or route.pattern.matches(event.raw)
        )
