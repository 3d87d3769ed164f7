"""The config loader: every key typed, every problem one `path: problem` line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from amid.config import ConfigError, load_config, parse_config, parse_duration

EXAMPLE = Path(__file__).parent.parent / "config" / "amid.example.yaml"
MINIMAL = """
queue: {url: "https://sqs.eu-west-1.amazonaws.com/123456789012/amid"}
handlers:
  - {name: hook, type: shell, command: [/bin/true]}
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env=env or {})
    return caught.value.problems


class TestExample:
    def test_the_example_file_loads_and_shows_the_defaults(self):
        config = load_config(EXAMPLE, env={})
        assert config.queue.wait_time == 20
        assert config.queue.visibility_timeout == 60
        assert config.dedupe.backend == "sqlite"
        assert config.dedupe.ttl == 7 * 86400
        assert config.shutdown_timeout == 20
        types = ["slack", "sns", "shell", "webhook", "console", "teams", "google_chat"]
        assert [h.type for h in config.handlers] == [*types, "pagerduty"]

    def test_the_example_shows_every_key_of_every_section(self):
        text = EXAMPLE.read_text()
        config = load_config(EXAMPLE, env={})
        for section in ("queue", "dedupe", "enrich", "metrics", "logging", "defaults"):
            for key in type(getattr(config, section)).model_fields:
                assert f"{key}:" in text, f"{section}.{key} is not shown in the example"
        for handler in config.handlers:
            for key in type(handler).model_fields:
                assert f"{key}:" in text or f"# {key}" in text or key in text, (
                    f"handler option {handler.type}.{key} is not shown in the example"
                )


class TestValues:
    def test_defaults_fill_everything_but_the_queue_url_and_handlers(self):
        config = parse_config(MINIMAL, env={})
        assert config.queue.resolved_region == "eu-west-1"
        assert config.queue.redelivery.initial == 10 and config.queue.redelivery.max == 300
        assert config.retry_for(config.handlers[0]).attempts == 5
        assert config.timeout_for(config.handlers[0]) == 10

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("500ms", 0.5),
            ("20s", 20),
            ("5m", 300),
            ("2h", 7200),
            ("7d", 604800),
            (3, 3),
            ("1.5s", 1.5),
        ],
    )
    def test_durations(self, text: object, seconds: float):
        assert parse_duration(text) == seconds

    def test_environment_variables_are_replaced_with_defaults_as_fallback(self):
        text = """
queue: {url: "${QUEUE}"}
handlers:
  - {name: hook, type: shell, command: ["${HOOK:-/bin/true}", "x-${SUFFIX}"]}
"""
        config = parse_config(
            text, env={"QUEUE": "https://sqs.us-east-2.amazonaws.com/1/q", "SUFFIX": "y"}
        )
        assert config.queue.url == "https://sqs.us-east-2.amazonaws.com/1/q"
        handler = config.handlers[0]
        assert handler.type == "shell" and handler.command == ["/bin/true", "x-y"]

    def test_a_secret_is_read_from_its_file(self, tmp_path: Path):
        secret = tmp_path / "slack"
        secret.write_text("https://hooks.slack.com/services/T/B/s3cr3t-token\n")
        text = f"""
queue: {{url: "https://sqs.us-east-1.amazonaws.com/1/q"}}
handlers:
  - {{name: s, type: slack, webhook_url_file: {secret}}}
"""
        handler = parse_config(text, env={}).handlers[0]
        assert handler.type == "slack"
        assert handler.webhook_url is not None
        assert (
            handler.webhook_url.get_secret_value()
            == "https://hooks.slack.com/services/T/B/s3cr3t-token"
        )
        assert "s3cr3t-token" not in repr(handler)


class TestProblems:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (MINIMAL + "surprise: 1\n", "surprise: unknown key"),
            (MINIMAL.replace("queue: {", "queue: {wait_time: 30s, "), "queue.wait_time: "),
            (
                MINIMAL.replace("queue: {", "queue: {visibility_timeout: soon, "),
                "queue.visibility_timeout: ",
            ),
            (MINIMAL.replace("queue: {", "queue: {max_messages: 11, "), "queue.max_messages: "),
            (MINIMAL.replace("queue: {", "queue: {on_invalid: drop, "), "queue.on_invalid: "),
            (MINIMAL.replace("type: shell", "type: pager"), "handlers[0]: unknown handler type"),
            (MINIMAL.replace("command: [/bin/true]", "command: []"), "handlers[0].command: "),
            (
                MINIMAL.replace("command: [/bin/true]", "command: [/bin/true], colour: red"),
                "handlers[0].colour: unknown key",
            ),
            (
                MINIMAL.replace("command: [/bin/true]", "command: ['{{ broken']"),
                "handlers[0].command: ",
            ),
            (MINIMAL.replace("name: hook", "name: 'two words'"), "handlers[0].name: "),
            (MINIMAL + "  - {name: hook, type: shell, command: [/bin/false]}\n", "used twice"),
            (
                MINIMAL.replace(
                    "command: [/bin/true]", "command: [/bin/true], match: {detail: {State: []}}"
                ),
                "handlers[0].match: detail.State: ",
            ),
            ("queue: {}\nhandlers: []\n", "queue.url: "),
            (MINIMAL.replace("queue: {", "queue: {url: ftp://x, "), "duplicate key"),
            ("handlers: [", "YAML syntax error"),
            ("- just\n- a list\n", "<root>: expected a mapping"),
            ("", "the file is empty"),
        ],
    )
    def test_each_problem_names_its_yaml_path(self, text: str, expected: str):
        problems = problems_of(text)
        assert any(expected in p for p in problems), problems
        assert all("\n" not in p for p in problems), "one line per problem"

    def test_a_missing_environment_variable_names_where_it_is_used(self):
        problems = problems_of("queue: {url: '${NOPE}'}\nhandlers: []\n")
        assert problems == ["queue.url: environment variable NOPE is not set"]

    def test_a_missing_secret_file_names_the_handler(self, tmp_path: Path):
        text = MINIMAL + f"  - {{name: s, type: slack, webhook_url_file: {tmp_path / 'none'}}}\n"
        problems = problems_of(text)
        assert any(p.startswith("handlers[1]") and "cannot read" in p for p in problems), problems

    def test_a_yaml_bomb_is_refused(self):
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n"
            for i in range(12)
        )
        problems = problems_of(bomb)
        assert any("aliases" in p for p in problems), problems

    def test_a_missing_file_is_a_config_error(self, tmp_path: Path):
        with pytest.raises(ConfigError) as caught:
            load_config(tmp_path / "absent.yaml")
        assert "cannot read the config file" in caught.value.problems[0]


class TestCheckConfigCommand:
    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "amid", "check-config", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def test_a_valid_file_prints_a_summary_and_exits_0(self):
        result = self.run("-c", str(EXAMPLE))
        assert result.returncode == 0, result.stderr
        assert "valid" in result.stdout
        assert "ops-slack (slack)" in result.stdout
        assert "hooks.slack.com" not in result.stdout, "secrets are never printed"

    def test_the_summary_shows_each_handlers_digest_settings(self):
        result = self.run("-c", str(EXAMPLE))
        assert (
            "      digest: groups by account, region, detail.State; "
            "sent 30s after a group's first event, or at 50 events"
        ) in result.stdout.splitlines()

    def test_a_broken_file_prints_one_path_line_per_error_and_exits_2(self, tmp_path: Path):
        broken = tmp_path / "amid.yaml"
        broken.write_text(
            "queue: {url: 'https://sqs.us-east-1.amazonaws.com/1/q', pollers: 0}\n"
            "handlers:\n  - {name: a, type: shell, command: [x], timeout: forever}\n"
        )
        result = self.run("-c", str(broken))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2, lines
        assert lines[0].startswith("queue.pollers: ")
        assert lines[1].startswith("handlers[0].timeout: ")


_DIGEST_HANDLER = (
    "queue: {url: 'https://sqs.us-east-1.amazonaws.com/1/q'}\n"
    "handlers:\n  - {name: s, type: %s, %s digest: %s}\n"
)
_HANDLER_KEYS = {
    "shell": "command: [x],",
    "slack": "webhook_url: 'https://hooks.slack.com/x',",
    "sns": "topic_arn: 'arn:aws:sns:us-east-1:123456789012:t',",
    "webhook": "url: 'https://example.com/x',",
    "console": "",
}


class TestDigest:
    def config(self, digest: str, kind: str = "slack") -> str:
        return _DIGEST_HANDLER % (kind, _HANDLER_KEYS[kind], digest)

    @pytest.mark.parametrize("kind", ["shell", "slack", "sns", "webhook", "console"])
    def test_every_handler_type_takes_a_digest_with_its_defaults(self, kind: str):
        handler = parse_config(self.config("{}", kind), env={}).handlers[0]
        assert handler.digest is not None
        assert (handler.digest.wait, handler.digest.max_events) == (30, 50)
        assert handler.digest.group_by == ("account", "region", "detail.State")

    def test_a_handler_without_digest_has_none(self):
        assert parse_config(MINIMAL, env={}).handlers[0].digest is None

    def test_settings_are_read_with_durations_and_dotted_paths(self):
        digest = (
            parse_config(
                self.config("{wait: 2m, max_events: 100, group_by: [account, detail.Tags.team]}"),
                env={},
            )
            .handlers[0]
            .digest
        )
        assert digest is not None
        assert (digest.wait, digest.max_events) == (120, 100)
        assert digest.group_by == ("account", "detail.Tags.team")

    @pytest.mark.parametrize(
        ("digest", "problem"),
        [
            ("{wait: 0}", "handlers[0].digest.wait: must be more than 0 and at most 1h"),
            ("{wait: 61m}", "handlers[0].digest.wait: must be more than 0 and at most 1h"),
            ("{max_events: 1}", "handlers[0].digest.max_events: must be from 2 to 100"),
            ("{max_events: 101}", "handlers[0].digest.max_events: must be from 2 to 100"),
            (
                "{max_events: true}",
                "handlers[0].digest.max_events: expected a number, not true/false",
            ),
            (
                "{group_by: [account, 'detail..State']}",
                "handlers[0].digest.group_by[1]: 'detail..State' is not a dotted path into the event, such as detail.State",
            ),
            ("{group_by: [region, region]}", "handlers[0].digest.group_by: names a path twice"),
            ("{window: 5s}", "handlers[0].digest.window: unknown key"),
        ],
    )
    def test_a_bad_setting_is_one_line_naming_its_path(self, digest: str, problem: str):
        assert problems_of(self.config(digest)) == [problem]
