"""When a silence is active: cron in a time zone, across both daylight-saving changes. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from amid.silences.window import Span, Window

BERLIN = ZoneInfo("Europe/Berlin")


def at(*parts: int, zone: ZoneInfo = BERLIN, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def utc(*parts: int) -> float:
    return at(*parts, zone=ZoneInfo("UTC"))


class TestTheSundayCleanup:
    WINDOW = Window("0 2 * * 0", 3 * 3600, BERLIN)

    def test_it_is_active_from_two_to_five_on_sunday_berlin_time(self) -> None:
        # 2026-12-06 is a Sunday; Berlin is UTC+1 in winter.
        assert self.WINDOW.active(at(2026, 12, 6, 1, 59)) is None
        assert self.WINDOW.active(at(2026, 12, 6, 2, 0)) == Span(
            utc(2026, 12, 6, 1, 0), utc(2026, 12, 6, 4, 0)
        )
        assert self.WINDOW.active(at(2026, 12, 6, 4, 59, 59)) is not None
        assert self.WINDOW.active(at(2026, 12, 6, 5, 0)) is None

    def test_outside_it_the_next_window_is_next_sunday(self) -> None:
        assert self.WINDOW.next_active(at(2026, 12, 7, 12, 0)) == Span(
            at(2026, 12, 13, 2, 0), at(2026, 12, 13, 5, 0)
        )

    def test_inside_it_the_next_active_window_is_the_current_one(self) -> None:
        assert self.WINDOW.next_active(at(2026, 12, 6, 3, 0)).starts == at(2026, 12, 6, 2, 0)


class TestDaylightSaving:
    DAILY = Window("30 2 * * *", 3600, BERLIN)

    def test_a_start_in_the_spring_gap_happens_at_the_first_minute_after_it(self) -> None:
        # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
        span = self.DAILY.next_active(at(2026, 3, 29, 0, 0))
        assert span == Span(utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0))
        assert self.DAILY.active(at(2026, 3, 29, 3, 59)) == span
        assert self.DAILY.active(at(2026, 3, 29, 4, 0)) is None

    def test_the_duration_is_real_time_across_the_spring_change(self) -> None:
        # 01:30 CET + 2h of real time ends at 04:30 CEST, not 03:30.
        window = Window("30 1 * * *", 2 * 3600, BERLIN)
        assert window.active(at(2026, 3, 29, 4, 29)) is not None
        assert window.active(at(2026, 3, 29, 4, 30)) is None

    def test_a_start_in_the_repeated_autumn_hour_happens_once(self) -> None:
        # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 comes twice.
        first = Span(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30))
        assert self.DAILY.active(at(2026, 10, 25, 2, 45, fold=0)) == first
        assert self.DAILY.active(at(2026, 10, 25, 2, 35, fold=1)) is None
        assert self.DAILY.next_start(first.starts) == at(2026, 10, 26, 2, 30)

    def test_the_same_local_start_is_an_hour_later_in_utc_after_the_change(self) -> None:
        before = self.DAILY.next_start(at(2026, 10, 24, 0, 0))
        after = self.DAILY.next_start(at(2026, 10, 26, 0, 0))
        assert datetime.fromtimestamp(before, UTC).hour == 0
        assert datetime.fromtimestamp(after, UTC).hour == 1


class TestAcrossMidnight:
    NIGHTLY = Window("0 22 * * *", 4 * 3600, ZoneInfo("UTC"))

    def test_a_window_that_began_yesterday_is_active_after_midnight(self) -> None:
        assert self.NIGHTLY.active(utc(2026, 12, 5, 1, 30)) == Span(
            utc(2026, 12, 4, 22, 0), utc(2026, 12, 5, 2, 0)
        )

    def test_it_ends_after_its_duration_and_the_next_starts_that_evening(self) -> None:
        assert self.NIGHTLY.active(utc(2026, 12, 5, 2, 0)) is None
        assert self.NIGHTLY.next_active(utc(2026, 12, 5, 2, 0)).starts == utc(2026, 12, 5, 22, 0)

    def test_a_window_longer_than_its_period_is_always_active(self) -> None:
        always = Window("* * * * *", 7200, ZoneInfo("UTC"))
        for second in range(0, 120, 7):
            assert always.active(utc(2026, 12, 5, 1, 0) + second) is not None


class TestFixedSpans:
    SPAN = Span(utc(2026, 12, 5, 10, 0), utc(2026, 12, 5, 11, 0))

    @pytest.mark.parametrize(
        ("moment", "active"),
        [
            ((2026, 12, 5, 9, 59), False),
            ((2026, 12, 5, 10, 0), True),
            ((2026, 12, 5, 10, 59), True),
            ((2026, 12, 5, 11, 0), False),  # an expired silence holds nothing
        ],
    )
    def test_a_span_holds_from_its_start_up_to_its_end(
        self, moment: tuple[int, ...], active: bool
    ) -> None:
        assert self.SPAN.holds(utc(*moment)) is active


def test_a_window_describes_itself_for_people() -> None:
    assert TestTheSundayCleanup.WINDOW.describe() == "0 2 * * 0 in Europe/Berlin for 3h"


def test_a_remembered_answer_is_the_answer_at_any_moment_in_any_order() -> None:
    """`active` keeps its last answer until the next start or end: asked every 7 minutes over
    a week, forwards and backwards, it answers as a fresh window would."""
    kept = Window("0 2 * * 0,3", 3 * 3600, BERLIN)
    moments = [at(2026, 10, 20, 0, 0) + step * 420 for step in range(1440)]
    for moment in [*moments, *reversed(moments)]:
        assert kept.active(moment) == Window("0 2 * * 0,3", 3 * 3600, BERLIN).active(moment)
    assert sum(kept.active(m) is not None for m in moments) > 0
