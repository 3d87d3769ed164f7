"""`expectations:` in the config file: what is accepted, and one `path: problem` line otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from amid.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).parent.parent.parent / "config" / "amid.example.yaml"
BASE = """
queue: {url: "https://sqs.eu-west-1.amazonaws.com/123456789012/amid"}
handlers:
  - {name: ops, type: console}
  - {name: pager, type: console}
expectations:
"""


def parse(*items: str) -> object:
    return parse_config(BASE + "".join(f"  - {item}\n" for item in items), env={})


def problems(*items: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(*items)
    return caught.value.problems


class TestAccepted:
    def test_every_with_grace_down_to_one_second(self) -> None:
        config = parse("{name: n, every: 1s, grace: 1s, notify: [ops]}")
        (expectation,) = config.expectations  # type: ignore[attr-defined]
        assert (expectation.every, expectation.grace, expectation.recovery) == (1.0, 1.0, True)
        assert expectation.match is None

    def test_a_schedule_defaults_to_utc(self) -> None:
        config = parse('{name: n, schedule: "0 6 * * *", notify: [ops, pager]}')
        (expectation,) = config.expectations  # type: ignore[attr-defined]
        assert expectation.zone.key == "UTC"

    def test_a_schedule_in_an_iana_time_zone(self) -> None:
        config = parse('{name: n, schedule: "0 6 * * 1-5", timezone: Europe/Berlin, notify: [ops]}')
        (expectation,) = config.expectations  # type: ignore[attr-defined]
        assert expectation.zone.key == "Europe/Berlin"

    def test_the_example_shows_every_key(self) -> None:
        text = EXAMPLE.read_text()
        config = load_config(EXAMPLE, env={})
        assert config.expectations
        for key in type(config.expectations[0]).model_fields:
            assert f"{key}:" in text, f"expectations[].{key} is not shown in the example"


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        (
            "{name: n, every: 2s, notify: [ops, slack]}",
            "expectations[0].notify: no handler named 'slack'",
        ),
        (
            '{name: n, every: 2s, schedule: "0 6 * * *", notify: [ops]}',
            "expectations[0]: set exactly one of every and schedule",
        ),
        ("{name: n, notify: [ops]}", "expectations[0]: set exactly one of every and schedule"),
        (
            '{name: n, schedule: "0 6 * *", notify: [ops]}',
            "expectations[0].schedule: '0 6 * *' is not a five-field cron expression (minute hour day month weekday)",
        ),
        (
            '{name: n, schedule: "0 6 * * * *", notify: [ops]}',
            "expectations[0].schedule: '0 6 * * * *' is not a five-field cron expression (minute hour day month weekday)",
        ),
        (
            '{name: n, schedule: "0 25 * * *", notify: [ops]}',
            "expectations[0].schedule: '0 25 * * *' is not a cron expression: Bad hour",
        ),
        (
            '{name: n, schedule: "0 6 * * *", timezone: Mars/Olympus, notify: [ops]}',
            "expectations[0].timezone: 'Mars/Olympus' is not an IANA time zone (e.g. UTC, Europe/Berlin)",
        ),
        (
            "{name: n, every: 2s, timezone: UTC, notify: [ops]}",
            "expectations[0]: timezone applies to schedule only; every counts from the last event",
        ),
        (
            "{name: n, every: 500ms, notify: [ops]}",
            "expectations[0].every: Input should be greater than or equal to 1",
        ),
        (
            "{name: n, every: 2s, notify: []}",
            "expectations[0].notify: List should have at least 1 item after validation, not 0",
        ),
        (
            "{name: n, every: 2s, notify: [ops], match: {detail: {State: [{prefix: 1}]}}}",
            "expectations[0].match: detail.State[0].prefix: prefix match pattern must be a string",
        ),
        (
            "{name: n, every: 2s, notify: [ops], grace: -1}",
            "expectations[0].grace: a duration cannot be negative",
        ),
        ("{name: n, every: 2s, notify: [ops], later: true}", "expectations[0].later: unknown key"),
    ],
)
def test_a_bad_expectation_is_one_line_naming_its_path(item: str, problem: str) -> None:
    assert problems(item) == [problem]


def test_a_name_used_twice_is_refused() -> None:
    assert problems(
        "{name: n, every: 2s, notify: [ops]}", "{name: n, every: 3s, notify: [ops]}"
    ) == ["expectations[1].name: 'n' is used twice; names must be unique"]
