"""Which handlers an event would reach, and why not: `amid check-config --explain`.

One line per handler, in config order, like `amtool config routes test`:
`✓ name` when its `match` fits the event (or it has none), else
`✗ name: <the part of the pattern that failed>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amid.config import Config
from amid.events import DETAIL_TYPE, SOURCE
from amid.pipeline.patterns import compile_pattern


@dataclass(frozen=True, slots=True)
class RouteExplanation:
    handler: str
    matched: bool
    reason: str | None  # None when matched


def explain_routes(config: Config, event: Mapping[str, Any]) -> list[RouteExplanation]:
    """Hold `event` against every handler's `match`, as the router does."""
    not_ami = _not_an_ami_event(event)
    results = []
    for handler in config.handlers:
        if not_ami is not None:
            results.append(RouteExplanation(handler.name, False, not_ami))
            continue
        if handler.match is None:
            results.append(RouteExplanation(handler.name, True, None))
            continue
        reason = compile_pattern(handler.match).explain(event)
        results.append(RouteExplanation(handler.name, reason is None, reason))
    return results


def _not_an_ami_event(event: Mapping[str, Any]) -> str | None:
    # the daemon ignores these before routing, so no handler would see them
    source, detail_type = event.get("source"), event.get("detail-type")
    if source != SOURCE or detail_type != DETAIL_TYPE:
        return (
            f"ignored before routing: source {source!r}, detail-type {detail_type!r}"
            f" is not {SOURCE!r}, {DETAIL_TYPE!r}"
        )
    return None


def format_explanation(results: Iterable[RouteExplanation]) -> str:
    lines: Sequence[str] = [
        f"✓ {result.handler}" if result.matched else f"✗ {result.handler}: {result.reason}"
        for result in results
    ]
    return "\n".join(lines)
