"""The hot path's JSON (orjson) writes what the standard library wrote, and reads the same."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from amid import jsoncodec
from amid.logs import configure_logging, get_logger


def _stdlib(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _values(*leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON values as AWS writes them: str keys, 64-bit integers, any text."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.text()
    )
    return st.recursive(
        st.one_of(scalars, *leaves),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )


_json_values = _values(st.floats(allow_nan=False, allow_infinity=False))


@given(_values())
def test_dumps_writes_the_bytes_json_dumps_wrote(value: Any) -> None:
    assert jsoncodec.dumps(value) == _stdlib(value)


@given(_json_values)
def test_dumps_writes_the_values_json_dumps_wrote(value: Any) -> None:
    # Floats: the same shortest digits; an exponent may be written 1e-7 where json wrote 1e-07.
    assert json.loads(jsoncodec.dumps(value)) == json.loads(_stdlib(value))
    assert jsoncodec.dumps(1e-7) == "1e-7"


@given(_json_values)
def test_loads_reads_what_json_loads_read(value: Any) -> None:
    text = json.dumps(value)
    assert jsoncodec.loads(text) == json.loads(text)


def test_an_event_keeps_its_non_ascii_text_and_compact_form() -> None:
    event = {"id": "1", "detail": {"ErrorMessage": "échec: 镜像 ✗"}, "n": 1.5, "ok": True}
    assert (
        jsoncodec.dumps(event)
        == '{"id":"1","detail":{"ErrorMessage":"échec: 镜像 ✗"},"n":1.5,"ok":true}'
    )


def test_non_string_keys_and_huge_integers_are_written_as_json_dumps_writes_them() -> None:
    assert jsoncodec.dumps({1: "a", None: 2}) == _stdlib({1: "a", None: 2})
    assert jsoncodec.dumps({"big": 2**70}) == '{"big":1180591620717411303424}'


@pytest.mark.parametrize("text", ["[1,]", "{", '{"a": 1} x', ""])
def test_what_is_not_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads(text)


@pytest.mark.parametrize(
    "text", ['{"a": NaN}', '{"a": -Infinity}', '"\\ud800"', "[" * 300 + "]" * 300]
)
def test_what_orjson_refuses_json_still_reads(text: str) -> None:
    assert repr(jsoncodec.loads(text)) == repr(json.loads(text))


def test_what_orjson_cannot_write_json_still_writes() -> None:
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    assert jsoncodec.dumps(deep) == _stdlib(deep)


def test_the_json_log_line_is_one_object_with_the_values_and_a_repr_for_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    try:
        configure_logging("info", "json")
        get_logger(event_id="e-1").info("event handled", handlers=["w"], who="zoë", odd={1, 2})
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "event handled"
    assert entry["event_id"] == "e-1"
    assert entry["handlers"] == ["w"]
    assert entry["who"] == "zoë"
    assert entry["odd"] == repr({1, 2})  # structlog's fallback for what JSON cannot hold
    assert entry["level"] == "info"
    assert "zoë" in lines[0], "non-ASCII text is kept as it is"
