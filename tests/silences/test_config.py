"""Config silences (errors name the YAML path), `check-config` and `--explain` on them, and
`amid silence` refusing what it cannot keep."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from amid.cli import main
from amid.config import ConfigError, load_config, parse_config
from amid.tools.offline import synthetic_event


@pytest.fixture(autouse=True)
def _logging_released() -> Iterator[None]:
    """`main` points structlog at the captured stdout; give it back before capsys closes it."""
    yield
    structlog.reset_defaults()


SUNDAY = {
    "name": "sunday-cleanup",
    "match": {"account": ["111122223333"], "detail": {"State": ["deregistered"]}},
    "schedule": "0 2 * * 0",
    "duration": "3h",
    "timezone": "Europe/Berlin",
    "handlers": ["ops-slack"],
}


def document(tmp_path: Path, *silences: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "queue": {"url": "https://sqs.us-east-1.amazonaws.com/123456789012/q"},
        "dedupe": {"backend": "sqlite", "path": str(tmp_path / "amid.sqlite3")},
        "handlers": [
            {"name": "ops-slack", "type": "console"},
            {"name": "audit", "type": "console"},
        ],
        "expectations": [{"name": "nightly", "every": "24h", "notify": ["ops-slack"]}],
        "silences": list(silences),
        **top,
    }


def problems(tmp_path: Path, *silences: dict[str, Any], **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_dump(document(tmp_path, *silences, **top)), env={})
    return raised.value.problems


class TestErrorsNameThePath:
    @pytest.mark.parametrize(
        ("change", "problem"),
        [
            ({"handlers": ["nope"]}, "silences[0].handlers: no handler named 'nope'"),
            (
                {"match": None, "expectations": ["weekly"]},
                "silences[0].expectations: no expectation named 'weekly'",
            ),
            ({"schedule": "0 2 * *"}, "silences[0].schedule: '0 2 * *' is not a five-field"),
            ({"schedule": "0 25 * * *"}, "silences[0].schedule: '0 25 * * *' is not a cron"),
            ({"timezone": "Mars/Olympus"}, "silences[0].timezone: 'Mars/Olympus' is not an IANA"),
            ({"duration": "91d"}, "silences[0].duration: a silence lasts at most 90d"),
            ({"match": {"account": "1"}}, "silences[0].match: account"),
            ({"match": None}, "silences[0]: set exactly one of match (events) and expectations"),
            ({"colour": "red"}, "silences[0].colour: unknown key"),
            (
                {"match": {"image": {"name": ["x"]}}},
                "silences[0].match.image: matching on the image needs enrich.describe_images",
            ),
        ],
    )
    def test_a_bad_silence_is_refused_with_its_path(
        self, tmp_path: Path, change: dict[str, Any], problem: str
    ) -> None:
        silence = {k: v for k, v in {**SUNDAY, **change}.items() if v is not None}
        (found,) = problems(tmp_path, silence)
        assert found.startswith(problem)

    def test_a_name_used_twice_is_refused(self, tmp_path: Path) -> None:
        assert problems(tmp_path, SUNDAY, SUNDAY) == [
            "silences[1].name: 'sunday-cleanup' is used twice; names must be unique"
        ]

    def test_ninety_days_and_the_image_with_enrichment_are_valid(self, tmp_path: Path) -> None:
        on_image = {**SUNDAY, "match": {"image": {"tags": {"Team": ["payments"]}}}}
        config = parse_config(
            yaml.safe_dump(
                document(
                    tmp_path, {**on_image, "duration": "90d"}, enrich={"describe_images": True}
                )
            ),
            env={},
        )
        assert config.silences[0].duration == 90 * 86400
        assert config.silences[0].timezone == "Europe/Berlin"


def write(tmp_path: Path, *silences: dict[str, Any], backend: str = "sqlite") -> str:
    config = document(tmp_path, *silences)
    config["dedupe"]["backend"] = backend
    path = tmp_path / "amid.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


class TestCheckConfig:
    def test_it_lists_each_silence_and_when_it_is_next_active(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        freeze = {"name": "freeze", "expectations": ["nightly"], "schedule": "* * * * *"}
        assert (
            main(["check-config", "-c", write(tmp_path, SUNDAY, {**freeze, "duration": "2h"})]) == 0
        )
        out = capsys.readouterr().out
        assert "  silences (2):" in out
        (sunday,) = [line for line in out.splitlines() if "- sunday-cleanup: " in line]
        assert sunday.startswith(
            '    - sunday-cleanup: holds {"account": ["111122223333"], "detail": {"State": '
            '["deregistered"]}} for ops-slack; 0 2 * * 0 in Europe/Berlin for 3h; '
        )
        assert "; next from " in sunday or "; active now until " in sunday  # Sunday night
        assert (
            "    - freeze: holds overdue notices of nightly for every handler; "
            "* * * * * in UTC for 2h; active now until "
        ) in out

    def test_explain_says_which_silence_would_hold_the_event(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        config = write(tmp_path, SUNDAY)
        held = tmp_path / "held.json"
        held.write_text(json.dumps(synthetic_event("deregistered", account="111122223333")))
        free = tmp_path / "free.json"
        free.write_text(json.dumps(synthetic_event("deregistered", account="999988887777")))
        assert main(["check-config", "-c", config, "--explain", str(held)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[:2] == ["✓ ops-slack", "✓ audit"]
        (line,) = lines[2:]
        assert line.startswith(
            "silenced: sunday-cleanup would hold ops-slack (0 2 * * 0 in Europe/Berlin for 3h; "
        )
        assert main(["check-config", "-c", config, "--explain", str(free)]) == 0
        assert "silenced" not in capsys.readouterr().out


class TestSilenceCommandRefuses:
    def test_the_memory_backend_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        config = write(tmp_path, backend="memory")
        assert main(["silence", "list", "-c", config]) == 2
        assert "dedupe.backend is memory" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("arguments", "problem"),
        [
            (["--account", "111122223333", "--for", "91d"], "--for: a silence lasts at most 90d"),
            (
                ["--account", "111122223333", "--until", "2099-01-01T00:00:00Z"],
                "--until: a silence",
            ),
            (
                ["--account", "111122223333", "--until", "2020-01-01T00:00:00Z"],
                "--until: the silence would end",
            ),
            (["--account", "111122223333", "--until", "tomorrow"], "--until: 'tomorrow' is not"),
            (["--image-id", "ami-x", "--for", "1h"], "--image-id: 'ami-x' is not an AMI id"),
            (["--match", "[1]", "--for", "1h"], "--match: must be a JSON object"),
            (["--match", '{"account": "1"}', "--for", "1h"], "--match: account"),
            (
                ["--account", "111122223333", "--handler", "nope", "--for", "1h"],
                "--handler: no handler named 'nope'",
            ),
        ],
    )
    def test_a_bad_add_exit_2_and_keeps_nothing(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        arguments: list[str],
        problem: str,
    ) -> None:
        config = write(tmp_path)
        assert main(["silence", "add", "-c", config, *arguments, "--comment", "x"]) == 2
        assert capsys.readouterr().err.startswith(f"silence add: {problem}")
        assert main(["silence", "list", "-c", config, "--all"]) == 0
        assert capsys.readouterr().out.startswith("no silences")


class TestDocumented:
    """The Sunday cleanup of README.md and docs/routing.md, and the example file, are configs
    amid accepts, holding what they say they hold."""

    @pytest.mark.parametrize("doc", ["README.md", "docs/routing.md"])
    def test_the_documented_sunday_cleanup_holds_deregistrations_from_ops_slack(
        self, doc: str
    ) -> None:
        text = (Path(__file__).parent.parent.parent / doc).read_text()
        block = next(b for b in text.split("```yaml")[1:] if "sunday-cleanup" in b)
        yaml_text = block.split("```")[0].replace(
            "webhook_url_file: /run/secrets/ops-slack-webhook", "webhook_url: https://x.test/"
        )
        if "queue:" not in yaml_text:
            yaml_text = "queue: {url: https://sqs.us-east-1.amazonaws.com/1/q}\n" + yaml_text
        config = parse_config(yaml_text, env={"SLACK_WEBHOOK_URL": "https://x.test/"})
        (silence,) = config.silences
        assert (silence.schedule, silence.duration, silence.timezone) == (
            "0 2 * * 0",
            3 * 3600,
            "Europe/Berlin",
        )
        assert silence.handlers == ["ops-slack"]
        assert {h.name for h in config.handlers} == {"ops-slack", "audit"}

    def test_the_example_shows_every_key(self) -> None:
        example = Path(__file__).parent.parent.parent / "config" / "amid.example.yaml"
        text = example.read_text()
        config = load_config(example, env={})
        assert config.silences
        for key in type(config.silences[0]).model_fields:
            assert f"{key}:" in text, f"silences[].{key} is not shown in the example"


def test_replay_holds_what_the_daemon_would_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config silence and a run-time one, added with the command, hold the replayed event."""
    config = write(tmp_path, {**SUNDAY, "schedule": "* * * * *", "duration": "2h"})
    event = synthetic_event("deregistered", "ami-0123456789abcdef0", account="111122223333")
    events = tmp_path / "events.json"
    events.write_text(json.dumps(event))
    add = ["silence", "add", "-c", config, "--image-id", "ami-0123456789abcdef0"]
    assert main([*add, "--handler", "audit", "--for", "1h", "--comment", "rebuild"]) == 0
    silence_id = capsys.readouterr().out.strip()
    assert main(["replay", "-c", config, str(events)]) == 0
    handled = next(line for line in capsys.readouterr().out.splitlines() if "handled:" in line)
    assert handled == (
        f"handled: {event['id']} ami-0123456789abcdef0 deregistered; "
        f"silenced: ops-slack (sunday-cleanup), audit ({silence_id})"
    )
