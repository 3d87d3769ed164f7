"""Which handlers an event would reach, and why not: `amid check-config --explain`.

One line per handler, in config order, like `amtool config routes test`:
`✓ name` when its `match` fits the event (or it has none), else
`✗ name: <the part of the pattern that failed>`. A pattern on `image` is held
against the image given (`--image FILE`, the `image` object as templates see
it); without one, `? name: ...` says the daemon would describe the image first.
Then a `silenced: ...` line for each config silence that would hold a handler
the event reaches, and when that silence is active.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from amid.config import Config
from amid.events import DETAIL_TYPE, SOURCE
from amid.patterns import compile_pattern, names_field, without_field
from amid.pipeline.enrich import role_for
from amid.pipeline.routing import IMAGE
from amid.silences import Silences
from amid.silences.window import Window
from amid.wording import rfc3339


@dataclass(frozen=True, slots=True)
class RouteExplanation:
    handler: str
    matched: bool
    reason: str | None  # None when matched
    waits: bool = False  # decided only once the image is known


def explain_routes(
    config: Config, event: Mapping[str, Any], image: Mapping[str, Any] | None = None
) -> list[RouteExplanation]:
    """Hold `event` against every handler's `match`, as the router does; patterns on `image`
    against `image` (None: not known, as before the daemon describes it)."""
    not_ami = _not_an_ami_event(event)
    results = []
    for handler in config.handlers:
        if not_ami is not None:
            results.append(RouteExplanation(handler.name, False, not_ami))
            continue
        if handler.match is None:
            results.append(RouteExplanation(handler.name, True, None))
            continue
        if names_field(handler.match, IMAGE):
            results.append(_explain_image_route(handler.name, handler.match, event, image))
            continue
        reason = compile_pattern(handler.match).explain(event)
        results.append(RouteExplanation(handler.name, reason is None, reason))
    return results


def _explain_image_route(
    name: str, match: Mapping[str, Any], event: Mapping[str, Any], image: Mapping[str, Any] | None
) -> RouteExplanation:
    if image is not None:
        reason = compile_pattern(match).explain({**event, IMAGE: dict(image)})
        return RouteExplanation(name, reason is None, reason)
    rest = without_field(match, IMAGE)
    reason = compile_pattern(rest).explain(event) if rest is not None else None
    if reason is not None:
        return RouteExplanation(name, False, reason)
    return RouteExplanation(name, False, "decided by the image, which amid would describe", True)


def describe_plan(config: Config, event: Mapping[str, Any], image: Mapping[str, Any] | None) -> str:
    """The first line of an explanation when some pattern names `image`: which image is used."""
    if image is not None:
        return f"image (given): {json.dumps(image, sort_keys=True, default=str)}"
    detail = event.get("detail")
    image_id = detail.get("ImageId") if isinstance(detail, Mapping) else None
    region, account = str(event.get("region", "")), str(event.get("account", ""))
    role = role_for(config.enrich.role_arn, account, region)
    who = f"as {role}" if role else "with amid's own credentials"
    return f"image: not given (--image FILE); amid would describe {image_id} in {region} {who}"


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
        f"✓ {result.handler}"
        if result.matched
        else f"{'?' if result.waits else '✗'} {result.handler}: {result.reason}"
        for result in results
    ]
    return "\n".join(lines)


def explain_silences(
    config: Config,
    event: Mapping[str, Any],
    image: Mapping[str, Any] | None,
    reached: Sequence[str],
    now: float,
) -> list[str]:
    """`silenced: ...` lines: which config silence would hold which of the `reached` handlers
    for this event, and when it is active. Run-time silences live in the store: see
    `amid silence list`."""
    lines = []
    for silence in Silences(config.silences):
        if silence.pattern is None:
            continue
        covered = [name for name in reached if silence.covers(name)]
        if not covered:
            continue
        if silence.needs_image and image is None:
            if not silence.could_match(event):
                continue
            verdict = "may hold (decided by the image)"
        elif silence.pattern.matches({**event, IMAGE: dict(image)} if image else dict(event)):
            verdict = "would hold"
        else:
            continue
        assert isinstance(silence.when, Window)  # noqa: S101 - config silences recur
        lines.append(
            f"silenced: {silence.ident} {verdict} {', '.join(covered)} "
            f"({silence.when.describe()}; {when_active(silence.when, now)})"
        )
    return lines


def when_active(window: Window, now: float) -> str:
    """`active now until ...` or `next from ... to ...`, in UTC."""
    span = window.next_active(now)
    if span.holds(now):
        return f"active now until {_utc(span.ends)}"
    return f"next from {_utc(span.starts)} to {_utc(span.ends)}"


def _utc(epoch: float) -> str:
    return rfc3339(datetime.fromtimestamp(epoch, UTC)) or "-"
