"""Which handlers an event reaches: each handler's `match`, compiled once. Pure.

A pattern may name `image` at its top level (SPEC 3a): it is then held against
the event with amid's `image` object in place of any `image` field the event
has. Such a route is decided only once the image is known; until then, its
`precondition` (the pattern without `image`) says whether it could match at all,
so an event that no image route could take is never described for routing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amid.config import HandlerConfig
from amid.events import AmiStateChange
from amid.patterns import Pattern, compile_pattern, names_field, without_field

IMAGE = "image"


@dataclass(frozen=True, slots=True)
class Route:
    handler: str
    pattern: Pattern | None  # None: every AMI event
    needs_image: bool = False
    precondition: Pattern | None = None  # image routes: what the event alone must match

    def could_match(self, event: AmiStateChange) -> bool:
        """Before the image is known: False when no image could make the pattern match."""
        return self.precondition is None or self.precondition.matches(event.raw)


def _route(handler: HandlerConfig) -> Route:
    if handler.match is None:
        return Route(handler.name, None)
    pattern = compile_pattern(handler.match)
    if not names_field(handler.match, IMAGE):
        return Route(handler.name, pattern)
    rest = without_field(handler.match, IMAGE)
    precondition = compile_pattern(rest) if rest is not None else None
    return Route(handler.name, pattern, needs_image=True, precondition=precondition)


def with_image(event: AmiStateChange, image: Mapping[str, Any]) -> dict[str, Any]:
    """What an image pattern is held against: the event, `image` = amid's image object."""
    return {**event.raw, IMAGE: dict(image)}


class Router:
    def __init__(self, handlers: Sequence[HandlerConfig]) -> None:
        self.handler_configs = {h.name: h for h in handlers}
        self.routes = tuple(_route(h) for h in handlers)
        self.image_routes = tuple(route for route in self.routes if route.needs_image)

    def needs_image(self, event: AmiStateChange) -> tuple[str, ...]:
        """The handlers whose decision waits for the image: their pattern names `image` and
        the rest of it fits the event. Empty for most events: they are routed as they are."""
        return tuple(route.handler for route in self.image_routes if route.could_match(event))

    def route(
        self, event: AmiStateChange, image: Mapping[str, Any] | None = None
    ) -> tuple[str, ...]:
        """The handlers whose `match` fits, in config order. With `image` None (not known),
        the routes that need it are left out: see `needs_image` for those."""
        view: Mapping[str, Any] | None = None
        matched = []
        for route in self.routes:
            if route.pattern is None:
                matched.append(route.handler)
            elif not route.needs_image:
                if route.pattern.matches(event.raw):
                    matched.append(route.handler)
            elif image is not None and route.could_match(event):
                view = view if view is not None else with_image(event, image)
                if route.pattern.matches(view):
                    matched.append(route.handler)
        return tuple(matched)
