"""Which handlers an active silence holds for an event, and which silence. Pure."""

from __future__ import annotations

import json
from typing import Any

from amid.config import SilenceConfig
from amid.events import AmiStateChange
from amid.pipeline.decode import decode
from amid.silences import Silence, Silences, held_notices, hold
from amid.store.base import SilenceRecord
from amid.tools.offline import synthetic_event

NOW = 1_796_000_000.0
HANDLERS = ["ops-slack", "audit", "pager"]


def event(state: str = "deregistered", account: str = "111122223333") -> AmiStateChange:
    decoded = decode(json.dumps(synthetic_event(state, "ami-0aaaaaaaaaaaaaaa1", account=account)))
    assert isinstance(decoded, AmiStateChange)
    return decoded


def configured(**fields: Any) -> Silence:
    base: dict[str, Any] = {
        "name": "sunday-cleanup",
        "match": {"account": ["111122223333"], "detail": {"State": ["deregistered"]}},
        "schedule": "* * * * *",
        "duration": "2h",  # longer than its period: active at any moment
    }
    return Silence.from_config(SilenceConfig.model_validate({**base, **fields}))


def added(match: dict[str, Any], handlers: tuple[str, ...] = (), ends: float = NOW + 60) -> Silence:
    return Silence.from_record(
        SilenceRecord("c0ffee000001", match, handlers, NOW - 60, ends, "alice", "migration")
    )


class TestEvents:
    def test_an_active_silence_holds_the_handlers_it_names_and_no_others(self) -> None:
        found = hold([configured(handlers=["ops-slack"])], event(), None, HANDLERS, NOW)
        assert found.held == {"ops-slack": "sunday-cleanup"}
        assert found.waiting == ()

    def test_a_silence_naming_no_handler_holds_every_one(self) -> None:
        found = hold([configured()], event(), None, HANDLERS, NOW)
        assert found.held == dict.fromkeys(HANDLERS, "sunday-cleanup")

    def test_an_event_the_pattern_does_not_fit_is_not_held(self) -> None:
        assert hold([configured()], event(account="999988887777"), None, HANDLERS, NOW).held == {}
        assert hold([configured()], event("available"), None, HANDLERS, NOW).held == {}

    def test_a_silence_outside_its_window_holds_nothing(self) -> None:
        sunday_only = configured(schedule="0 2 * * 0", duration="1h")
        # NOW is a Monday.
        assert hold([sunday_only], event(), None, HANDLERS, NOW).held == {}

    def test_an_expired_run_time_silence_holds_nothing(self) -> None:
        ended = added({"account": ["111122223333"]}, ends=NOW - 1)
        assert hold([ended], event(), None, HANDLERS, NOW).held == {}

    def test_the_first_silence_that_holds_a_handler_names_the_hold(self) -> None:
        run_time = added({"detail": {"ImageId": ["ami-0aaaaaaaaaaaaaaa1"]}}, ("audit", "pager"))
        found = hold([configured(handlers=["audit"]), run_time], event(), None, HANDLERS, NOW)
        assert found.held == {"audit": "sunday-cleanup", "pager": "c0ffee000001"}


ON_IMAGE = {"account": ["111122223333"], "image": {"tags": {"Team": ["payments"]}}}


class TestImage:
    def test_a_silence_on_the_image_is_held_against_the_image(self) -> None:
        silence = configured(match=ON_IMAGE)
        payments = {"tags": {"Team": "payments"}}
        assert hold([silence], event(), payments, ["audit"], NOW).held == {
            "audit": "sunday-cleanup"
        }
        assert hold([silence], event(), {"tags": {"Team": "web"}}, ["audit"], NOW).held == {}

    def test_with_the_image_unknown_the_handlers_it_could_hold_wait(self) -> None:
        found = hold([configured(match=ON_IMAGE)], event(), None, ["audit"], NOW)
        assert (found.held, found.waiting) == ({}, ("audit",))

    def test_an_event_no_image_could_make_fit_does_not_wait(self) -> None:
        found = hold([configured(match=ON_IMAGE)], event(account="1"), None, ["audit"], NOW)
        assert (found.held, found.waiting) == ({}, ())


class TestExpectations:
    def test_a_silence_on_expectations_holds_no_events(self) -> None:
        silence = configured(match=None, expectations=["nightly"])
        assert hold([silence], event(), None, HANDLERS, NOW).held == {}

    def test_it_holds_the_notices_of_its_expectations_until_its_end(self) -> None:
        silence = configured(match=None, expectations=["nightly"], handlers=["ops-slack"])
        held = held_notices([silence], "nightly", HANDLERS, NOW)
        assert list(held) == ["ops-slack"]
        span = silence.active(NOW)
        assert span is not None and held["ops-slack"] == span.ends
        assert held_notices([silence], "weekly", HANDLERS, NOW) == {}

    def test_the_config_silences_compile_in_order(self) -> None:
        silences = Silences(
            [
                SilenceConfig(name="a", expectations=["x"], schedule="0 0 * * *", duration=1),
                SilenceConfig(name="b", match={"account": ["1"]}, schedule="0 0 * * *", duration=1),
            ]
        )
        assert [s.ident for s in silences] == ["a", "b"] and len(silences) == 2
