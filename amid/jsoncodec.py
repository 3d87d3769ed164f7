"""JSON on the hot path (decode, the event's JSON for a body, log lines): orjson.

orjson parses an event in about a third of `json.loads`' time and writes one in a tenth of
`json.dumps`' (docs/benchmarks.md). Its output is what `json.dumps(value,
ensure_ascii=False, separators=(",", ":"))` writes for the values amid sends. Where it
differs from the standard library, it is on inputs no AWS event carries: NaN and Infinity
are refused (they are not JSON), a lone surrogate escape is refused, and an integer beyond
64 bits is read as a float.

`AMID_JSON=json` (read at import) uses the standard library's json instead, with the same
output, so the bench can measure what orjson saves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import orjson

ENV = "AMID_JSON"
STDLIB = os.environ.get(ENV, "").strip().lower() == "json"

_OPTIONS = orjson.OPT_NON_STR_KEYS  # as json.dumps does: 1 -> "1"


def _orjson_text(value: Any) -> str:
    try:
        return orjson.dumps(value, option=_OPTIONS).decode("utf-8")
    except TypeError:  # an integer beyond 64 bits, or a type orjson does not write
        return _stdlib_text(value)


def _stdlib_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _orjson_log(value: Any, **kwargs: Any) -> str:
    """structlog's serializer: its `default` (repr of the unknown) is passed on."""
    try:
        return orjson.dumps(value, default=kwargs.get("default"), option=_OPTIONS).decode("utf-8")
    except TypeError:
        return json.dumps(value, **kwargs)


loads: Callable[[str | bytes], Any] = json.loads if STDLIB else orjson.loads
"""Parse JSON text; raises ValueError (orjson.JSONDecodeError is one) on bad input."""

dumps: Callable[[Any], str] = _stdlib_text if STDLIB else _orjson_text
"""Compact JSON text, non-ASCII kept as is."""

log_serializer: Callable[..., str] = json.dumps if STDLIB else _orjson_log
"""For structlog's JSONRenderer(serializer=...)."""
