"""Shared HTTP classification: status -> HandlerError, Retry-After in both forms, scrubbing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from amid.handlers.http import classify_status, parse_retry_after, scrub

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("2", 2.0),
            (" 120 ", 120.0),
            ("0", 0.0),
            ("Thu, 01 May 2025 12:00:30 GMT", 30.0),
            ("Thu, 01 May 2025 11:00:00 GMT", 0.0),  # in the past: now
        ],
    )
    def test_seconds_and_http_dates_become_seconds_from_now(
        self, value: str, seconds: float
    ) -> None:
        assert parse_retry_after(value, now=lambda: NOW) == seconds

    @pytest.mark.parametrize("value", [None, "", "soon", "-5", "1e3"])
    def test_absent_or_malformed_value_is_none(self, value: str | None) -> None:
        assert parse_retry_after(value, now=lambda: NOW) is None


class TestClassifyStatus:
    @pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
    def test_2xx_is_success(self, status: int) -> None:
        assert classify_status(status, {}, what="x") is None

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
    def test_408_429_and_5xx_are_retryable(self, status: int) -> None:
        error = classify_status(status, {}, what="x")
        assert error is not None and error.retryable and error.reason == f"http_{status}"

    @pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 410, 413, 422])
    def test_other_statuses_are_permanent_and_ignore_retry_after(self, status: int) -> None:
        error = classify_status(status, {"Retry-After": "5"}, what="x")
        assert error is not None and not error.retryable and error.retry_after is None

    def test_retry_after_is_read_on_a_retryable_status(self) -> None:
        error = classify_status(503, {"Retry-After": "7"}, what="x")
        assert error is not None and error.retry_after == 7


def test_scrub_removes_secrets_and_control_characters() -> None:
    text = scrub("bad\r\ntoken=abc123 at https://h/p/abc123", ["https://h/p/abc123", "abc123"])
    assert text == "bad token=*** at ***"
