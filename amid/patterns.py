"""EventBridge event patterns: compile once, match against the whole event.

First cut: exact values, nested objects and matching inside arrays. The full
language (prefix, suffix, anything-but, numeric, exists, cidr, wildcard,
equals-ignore-case, $or) is its own issue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class PatternError(ValueError):
    """A pattern EventBridge would refuse; the message names the path inside the pattern."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


_MISSING = object()


@dataclass(frozen=True, slots=True)
class Pattern:
    fields: tuple[tuple[str, Any], ...]

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self.explain(event) is None

    def explain(self, event: Mapping[str, Any]) -> str | None:
        """None when the event matches, else the first part of the pattern that failed."""
        return _explain(self.fields, event, "")


def _explain(fields: tuple[tuple[str, Any], ...], event: Any, path: str) -> str | None:
    for key, expected in fields:
        here = f"{path}.{key}" if path else key
        value = event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(expected, tuple) and expected and isinstance(expected[0], tuple):
            if not isinstance(value, Mapping):
                return f"{here}: missing"
            failure = _explain(expected, value, here)
            if failure is not None:
                return failure
            continue
        candidates = value if isinstance(value, list) else [value]
        if not any(c is not _MISSING and c in expected for c in candidates):
            shown = "missing" if value is _MISSING else repr(value)
            return f"{here}: {shown} is not one of {list(expected)!r}"
    return None


def compile_pattern(pattern: Mapping[str, Any], path: str = "") -> Pattern:
    return Pattern(_compile_fields(pattern, path))


def _compile_fields(pattern: Mapping[str, Any], path: str) -> tuple[tuple[str, Any], ...]:
    if not pattern:
        raise PatternError(path, "an empty object matches nothing")
    fields: list[tuple[str, Any]] = []
    for key, value in pattern.items():
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping):
            fields.append((key, _compile_fields(value, here)))
        elif isinstance(value, list):
            if not value:
                raise PatternError(here, "an empty array matches nothing")
            for item in value:
                if isinstance(item, Mapping | list):
                    raise PatternError(here, "only exact values are supported in this version")
            fields.append((key, tuple(value)))
        else:
            raise PatternError(here, "a pattern value must be an array or an object")
    return tuple(fields)
