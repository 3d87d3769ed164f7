"""JSON on the hot path (decode, the event's JSON for a body, log lines): orjson.

orjson parses an event in about a third of `json.loads`' time and writes one in a tenth of
`json.dumps`' (docs/benchmarks.md). Its output is what `json.dumps(value,
ensure_ascii=False, separators=(",", ":"))` writes for the values amid sends. What orjson
refuses to read (NaN and Infinity, a lone surrogate escape) or to write (nesting deeper
than 254, an integer beyond 64 bits) goes to the standard library, and so does any text
with 200 or more `{` and `[` (an AMI event has three): a deeply nested document then meets
the standard library's recursion limit when read exactly as when it is written again
(bodies, a hook's stdin). So amid accepts and writes what it did before. Two differences
remain, on values no AWS event carries: an integer beyond 64 bits is read as a float, and
a float's exponent is written `1e-7` where json wrote `1e-07`.

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


_DEEP = 200  # `{` and `[` from which a text is left to json (its recursion limit)


def _orjson_loads(text: str | bytes) -> Any:
    if isinstance(text, str):
        openers = text.count("{") + text.count("[")
    else:
        openers = text.count(b"{") + text.count(b"[")
    if openers >= _DEEP:
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what json may still read; it raises if it cannot
        return json.loads(text)


def _orjson_log(value: Any, **kwargs: Any) -> str:
    """structlog's serializer: its `default` (repr of the unknown) is passed on."""
    try:
        return orjson.dumps(value, default=kwargs.get("default"), option=_OPTIONS).decode("utf-8")
    except TypeError:
        return json.dumps(value, **kwargs)


loads: Callable[[str | bytes], Any] = json.loads if STDLIB else _orjson_loads
"""Parse JSON text; raises ValueError (orjson.JSONDecodeError is one) on bad input."""

dumps: Callable[[Any], str] = _stdlib_text if STDLIB else _orjson_text
"""Compact JSON text, non-ASCII kept as is."""

log_serializer: Callable[..., str] = json.dumps if STDLIB else _orjson_log
"""For structlog's JSONRenderer(serializer=...)."""
