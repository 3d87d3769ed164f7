"""Due-time arithmetic and the episode rules, pure: every time is passed in, no clock runs."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from amid.config import ExpectationConfig
from amid.expectations.due import Every, Schedule, anchor, due_at, event_time
from amid.expectations.plan import Close, Expectation, Open, Owed
from amid.store.base import ExpectationState
from amid.wording import human_duration

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0
DAY = 24 * HOUR


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def expectation(**config: object) -> Expectation:
    fields: dict[str, object] = {"name": "nightly", "notify": ["slack", "pager"], **config}
    if "schedule" not in fields and "every" not in fields:
        fields["every"] = "24h"
    return Expectation.from_config(ExpectationConfig.model_validate(fields))


START = at("2026-11-20T12:00:00+00:00")


class TestEvery:
    def test_due_one_period_and_the_grace_after_the_last_matching_event(self) -> None:
        state = ExpectationState("nightly", started=START, last_seen=START + HOUR)
        assert due_at(Every(DAY), 2 * HOUR, state) == START + HOUR + DAY + 2 * HOUR

    def test_without_grace_it_is_due_exactly_one_period_later(self) -> None:
        state = ExpectationState("nightly", started=START, last_seen=START)
        assert due_at(Every(2.0), 0.0, state) == START + 2.0

    def test_on_the_first_run_the_clock_counts_from_when_amid_started_with_it(self) -> None:
        state = ExpectationState("nightly", started=START)
        assert due_at(Every(DAY), HOUR, state) == START + DAY + HOUR

    def test_an_event_timed_before_the_clock_started_does_not_make_it_due_sooner(self) -> None:
        state = ExpectationState("nightly", started=START, last_seen=START - 5 * DAY)
        assert anchor(state) == START
        assert due_at(Every(DAY), 0.0, state) == START + DAY

    def test_it_describes_itself_as_people_say_it(self) -> None:
        assert Every(DAY).describe() == "every 24h"
        assert Every(2.0).describe() == "every 2s"
        assert Every(7 * DAY).describe() == "every 7d"


class TestSchedule:
    def test_due_at_the_end_of_the_first_whole_window_after_the_last_event(self) -> None:
        # The event at 07:00 lies in [Fri 06:00, Sat 06:00); [Sat 06:00, Sun 06:00) must hold one.
        schedule = Schedule("0 6 * * *", ZoneInfo("UTC"))
        state = ExpectationState(
            "nightly", started=START, last_seen=at("2026-11-20T07:00:00+00:00")
        )
        assert due_at(schedule, HOUR, state) == at("2026-11-22T07:00:00+00:00")

    def test_an_event_exactly_at_a_cron_time_opens_that_window(self) -> None:
        schedule = Schedule("0 6 * * *", ZoneInfo("UTC"))
        state = ExpectationState(
            "nightly", started=START, last_seen=at("2026-11-21T06:00:00+00:00")
        )
        assert due_at(schedule, 0.0, state) == at("2026-11-23T06:00:00+00:00")

    def test_cron_times_are_local_across_the_spring_daylight_saving_change(self) -> None:
        # Berlin moves from CET (+1) to CEST (+2) on 2026-03-29: 06:00 local is 04:00 UTC after.
        schedule = Schedule("0 6 * * *", BERLIN)
        state = ExpectationState("nightly", started=0.0, last_seen=at("2026-03-28T07:00:00+01:00"))
        assert due_at(schedule, 0.0, state) == at("2026-03-30T04:00:00+00:00")

    def test_cron_times_are_local_across_the_autumn_daylight_saving_change(self) -> None:
        # Back to CET on 2026-10-25: the window that day is 25 hours long.
        schedule = Schedule("0 6 * * *", BERLIN)
        state = ExpectationState("nightly", started=0.0, last_seen=at("2026-10-24T07:00:00+02:00"))
        assert due_at(schedule, 0.0, state) == at("2026-10-26T05:00:00+00:00")
        assert at("2026-10-26T06:00:00+01:00") - at("2026-10-25T06:00:00+01:00") == DAY

    def test_a_cron_time_skipped_by_spring_forward_falls_on_the_first_minute_after_it(self) -> None:
        # 02:30 does not exist in Berlin on 2026-03-29; Debian cron runs such a job at 03:00.
        schedule = Schedule("30 2 * * *", BERLIN)
        state = ExpectationState("nightly", started=0.0, last_seen=at("2026-03-27T03:00:00+01:00"))
        assert due_at(schedule, 0.0, state) == at("2026-03-29T03:00:00+02:00")

    def test_the_grace_is_added_after_the_window_ends(self) -> None:
        schedule = Schedule("0 6 * * 1", ZoneInfo("UTC"))  # Mondays
        state = ExpectationState("weekly", started=at("2026-11-18T00:00:00+00:00"))  # a Wednesday
        assert due_at(schedule, 2 * HOUR, state) == at("2026-11-30T08:00:00+00:00")

    def test_it_describes_the_expression_and_the_zone(self) -> None:
        assert Schedule("0 6 * * *", BERLIN).describe() == "on schedule 0 6 * * * in Europe/Berlin"


class TestEventTime:
    def test_an_event_counts_at_its_own_time_when_it_arrives_late(self) -> None:
        assert event_time(START - HOUR, received=START) == START - HOUR

    def test_an_event_without_a_parsable_time_counts_when_it_was_received(self) -> None:
        assert event_time(None, received=START + 0.1234) == START + 0.123

    def test_an_event_timed_in_the_future_counts_when_it_was_received(self) -> None:
        # A clock far ahead must not silence the expectation until then.
        assert event_time(START + DAY, received=START) == START


class TestLateAndOutOfOrderEvents:
    def test_the_last_seen_time_only_moves_forward(self) -> None:
        state = ExpectationState("nightly", started=START).seen(START + 2 * HOUR)
        assert state.seen(START + HOUR).last_seen == START + 2 * HOUR
        assert state.seen(START + 3 * HOUR).last_seen == START + 3 * HOUR

    def test_events_in_any_order_leave_the_latest_time(self) -> None:
        times = [START + 5, START + 1, START + 9, START + 3]
        state = ExpectationState("nightly", started=START)
        for moment in times:
            state = state.seen(moment)
        assert state.last_seen == START + 9

    def test_a_late_event_that_leaves_it_overdue_continues_the_episode(self) -> None:
        rule = expectation(every="1h")
        due = START + HOUR
        state = ExpectationState("nightly", started=START).opened(due)
        # Three hours later an event arrives that happened 90 minutes after the start.
        late = state.seen(START + 1.5 * HOUR)
        assert rule.transition(late, START + 3 * HOUR) is None
        assert (
            list(rule.owed(late.marked(due, "overdue", "slack").marked(due, "overdue", "pager")))
            == []
        )

    def test_a_late_event_that_makes_it_current_again_ends_the_episode(self) -> None:
        rule = expectation(every="1h")
        due = START + HOUR
        state = ExpectationState("nightly", started=START).opened(due).seen(START + 1.5 * HOUR)
        assert rule.transition(state, START + 2 * HOUR) == Close(due)


class TestEpisodes:
    def test_nothing_happens_before_the_due_time(self) -> None:
        rule = expectation(every="2s", grace="1s")
        state = ExpectationState("nightly", started=START)
        assert rule.transition(state, START + 2.999) is None
        assert list(rule.owed(state)) == []

    def test_at_the_due_time_an_episode_named_by_that_moment_opens(self) -> None:
        rule = expectation(every="2s", grace="1s")
        state = ExpectationState("nightly", started=START)
        assert rule.transition(state, START + 3.0) == Open(START + 3.0)

    def test_an_open_episode_owes_overdue_to_every_handler_not_yet_told(self) -> None:
        rule = expectation()
        state = ExpectationState("nightly", started=START).opened(START + DAY)
        assert list(rule.owed(state)) == [Owed("overdue", START + DAY, ("slack", "pager"))]
        told = state.marked(START + DAY, "overdue", "slack")
        assert list(rule.owed(told)) == [Owed("overdue", START + DAY, ("pager",))]

    def test_a_replica_whose_clock_lags_the_due_moment_does_not_end_the_episode(self) -> None:
        rule = expectation(every="2s", grace="1s")
        state = ExpectationState("nightly", started=START).opened(START + 3.0)
        assert rule.transition(state, START + 2.8) is None

    def test_an_episode_that_stays_overdue_is_not_opened_again(self) -> None:
        rule = expectation()
        state = ExpectationState("nightly", started=START).opened(START + DAY)
        assert rule.transition(state, START + 30 * DAY) is None

    def test_a_matching_event_ends_the_episode_and_owes_recovered_to_those_told(self) -> None:
        rule = expectation()
        episode = START + DAY
        state = (
            ExpectationState("nightly", started=START)
            .opened(episode)
            .marked(episode, "overdue", "slack")
            .seen(START + DAY + HOUR)
        )
        assert rule.transition(state, START + DAY + HOUR) == Close(episode)
        ended = state.closed(episode)
        assert ended.episode is None and ended.ended == episode
        assert list(rule.owed(ended)) == [Owed("recovered", episode, ("slack",))]
        assert list(rule.owed(ended.marked(episode, "recovered", "slack"))) == []

    def test_without_recovery_an_ended_episode_owes_nothing(self) -> None:
        rule = expectation(recovery=False)
        episode = START + DAY
        state = ExpectationState("nightly", started=START).opened(episode)
        state = state.marked(episode, "overdue", "slack").closed(episode)
        assert list(rule.owed(state)) == []

    def test_a_handler_told_overdue_while_the_episode_ended_is_owed_recovered(self) -> None:
        episode = START + DAY
        state = ExpectationState("nightly", started=START).opened(episode).closed(episode)
        late = state.marked(episode, "overdue", "pager")
        assert late.ended_told == {"pager"}
        assert list(expectation().owed(late)) == [Owed("recovered", episode, ("pager",))]

    def test_a_handler_no_longer_in_notify_is_owed_nothing(self) -> None:
        episode = START + DAY
        state = ExpectationState("nightly", started=START).opened(episode)
        state = state.marked(episode, "overdue", "gone").closed(episode)
        assert list(expectation().owed(state)) == []

    def test_the_watch_looks_again_at_the_due_time_or_now_and_then_while_overdue(self) -> None:
        rule = expectation(every="2s", grace="1s")
        state = ExpectationState("nightly", started=START)
        assert rule.next_check(state, START + 1, recheck=30) == START + 3
        assert rule.next_check(state.opened(START + 3), START + 4, recheck=30) == START + 34

    def test_closing_or_marking_another_episode_changes_nothing(self) -> None:
        state = ExpectationState("nightly", started=START).opened(START + DAY)
        assert state.closed(START + 2 * DAY) == state
        assert state.marked(START + 2 * DAY, "overdue", "slack") == state
        assert state.marked(START + DAY, "recovered", "slack") == state


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (3, "3s"),
        (119, "119s"),
        (90 * 60, "90m"),
        (HOUR, "1h"),
        (50 * HOUR, "50h"),
        (DAY, "24h"),
        (26 * HOUR, "26h"),
        (26.5 * HOUR, "26h"),
        (3 * DAY, "3d"),
    ],
)
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
