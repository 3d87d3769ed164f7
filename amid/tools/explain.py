"""Which handlers an event would reach, and why not: `amid check-config --explain`.

One line per handler, in config order, like `amtool config routes test`:
`✓ name` when its `match` fits the event (or it has none), else
`✗ name: <the part of the pattern that failed>`. A pattern on `image` is held
against the image given (`--image FILE`, the `image` object as templates see
it); without one, `? name: ...` says the daemon would describe the image first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amid.config import Config
from amid.events import DETAIL_TYPE, SOURCE
from amid.patterns import compile_pattern, names_field, without_field
from amid.pipeline.enrich import role_for
from amid.pipeline.routing import IMAGE


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
