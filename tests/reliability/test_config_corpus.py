"""A corpus of broken config files: each is refused with one `path: problem` line, fast.

SPEC 3 and 4: a missing file, a YAML syntax error and any invalid value are
config errors; `amid check-config` exits 2 with one `path: problem` line per
error. The whole corpus goes through `load_config` in process (what `run`,
SIGHUP and `check-config` all use); a sample goes through the real command.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from amid.config import ConfigError, load_config

QUEUE = "queue: {url: https://sqs.us-east-1.amazonaws.com/123456789012/amid}\n"
HOOK = "handlers:\n  - {name: hook, type: shell, command: [/bin/true]}\n"
FILE = "<file>"  # the expected path is the config file itself
BOUND = 5.0  # the issue says "in under a second"; a noisy 2-core machine gets a margin
PROBLEM_LINE = re.compile(r"^[^\s:][^\n]*?: [^\n]+$")


def handler(item: str) -> str:
    return f"handlers:\n  - {item}\n"


@dataclass(frozen=True)
class Broken:
    content: str | bytes
    path: str  # the YAML path (or FILE) the problem line starts with
    mentions: str = ""  # a word the line must also hold


def _bomb(levels: int) -> str:
    """A 'billion laughs': each level is a list of ten aliases of the previous one."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return QUEUE + HOOK + "\n".join(lines) + "\n"


def _garbage(size: int) -> bytes:
    rng = random.Random(8)
    return b"\xff\xfe\x00" + bytes(rng.randrange(256) for _ in range(size))


CORPUS: dict[str, Broken] = {
    # wrong types
    "queue-not-a-mapping": Broken("queue: 5\n" + HOOK, "queue"),
    "url-a-list": Broken("queue: {url: [1]}\n" + HOOK, "queue.url"),
    "max-messages-text": Broken(
        QUEUE.replace("}", ", max_messages: ten}") + HOOK, "queue.max_messages"
    ),
    "max-messages-too-many": Broken(
        QUEUE.replace("}", ", max_messages: 11}") + HOOK, "queue.max_messages"
    ),
    "pollers-zero": Broken(QUEUE.replace("}", ", pollers: 0}") + HOOK, "queue.pollers"),
    "on-invalid-unknown": Broken(
        QUEUE.replace("}", ", on_invalid: drop}") + HOOK, "queue.on_invalid"
    ),
    "handlers-a-mapping": Broken(QUEUE + "handlers: {name: a, type: console}\n", "handlers"),
    "handlers-empty": Broken(QUEUE + "handlers: []\n", "handlers"),
    "command-a-string": Broken(
        QUEUE + handler("{name: h, type: shell, command: /bin/true}"), "handlers[0].command"
    ),
    "command-empty": Broken(
        QUEUE + handler("{name: h, type: shell, command: []}"), "handlers[0].command"
    ),
    "env-value-a-list": Broken(
        QUEUE + handler("{name: h, type: shell, command: [x], env: {A: [1]}}"), "handlers[0].env.A"
    ),
    "headers-a-list": Broken(
        QUEUE + handler("{name: w, type: webhook, url: 'http://127.0.0.1:1/', headers: [a]}"),
        "handlers[0].headers",
    ),
    "retry-attempts-zero": Broken(
        QUEUE + "defaults: {retry: {attempts: 0}}\n" + HOOK, "defaults.retry.attempts"
    ),
    "logging-level-unknown": Broken(QUEUE + "logging: {level: verbose}\n" + HOOK, "logging.level"),
    "metrics-listen-no-port": Broken(
        QUEUE + "metrics: {listen: localhost}\n" + HOOK, "metrics.listen"
    ),
    "enrich-a-string": Broken(QUEUE + "enrich: yes please\n" + HOOK, "enrich"),
    "handler-name-with-spaces": Broken(
        QUEUE + handler("{name: my hook, type: console}"), "handlers[0].name"
    ),
    "topic-arn-malformed": Broken(
        QUEUE + handler("{name: s, type: sns, topic_arn: my-topic}"), "handlers[0].topic_arn"
    ),
    "webhook-method-get": Broken(
        QUEUE + handler("{name: w, type: webhook, url: 'http://127.0.0.1:1/', method: GET}"),
        "handlers[0].method",
    ),
    "root-a-list": Broken("- queue\n- handlers\n", "<root>"),
    "root-a-scalar": Broken("just text\n", "<root>"),
    "key-not-a-string": Broken(QUEUE + HOOK + "1: 2\n", "[1]"),
    # unknown keys
    "unknown-top-level-key": Broken(QUEUE + HOOK + "queue_url: x\n", "queue_url", "unknown key"),
    "unknown-queue-key": Broken(
        QUEUE.replace("}", ", visibility: 30s}") + HOOK, "queue.visibility", "unknown key"
    ),
    "unknown-handler-key": Broken(
        QUEUE + handler("{name: h, type: shell, comand: [x], command: [x]}"),
        "handlers[0].comand",
        "unknown key",
    ),
    "unknown-handler-type": Broken(
        QUEUE + handler("{name: h, type: carrier-pigeon}"), "handlers[0]", "unknown handler type"
    ),
    "missing-handler-type": Broken(QUEUE + handler("{name: h}"), "handlers[0]", "type"),
    "missing-queue": Broken(HOOK, "queue"),
    # durations
    "wait-time-forever": Broken(
        QUEUE.replace("}", ", wait_time: forever}") + HOOK, "queue.wait_time"
    ),
    "wait-time-over-20s": Broken(QUEUE.replace("}", ", wait_time: 30s}") + HOOK, "queue.wait_time"),
    "shutdown-timeout-negative": Broken(
        QUEUE + "shutdown_timeout: -1s\n" + HOOK, "shutdown_timeout"
    ),
    "duration-in-weeks": Broken(QUEUE + "dedupe: {ttl: 2 weeks}\n" + HOOK, "dedupe.ttl"),
    "duration-a-boolean": Broken(QUEUE + "defaults: {timeout: true}\n" + HOOK, "defaults.timeout"),
    "handler-timeout-zero": Broken(
        QUEUE + handler("{name: c, type: console, timeout: 0}"), "handlers[0].timeout"
    ),
    "redelivery-initial-over-max": Broken(
        QUEUE.replace("}", ", redelivery: {initial: 5m, max: 1m}}") + HOOK, "queue.redelivery"
    ),
    # patterns EventBridge would refuse
    "pattern-value-not-a-list": Broken(
        QUEUE + handler("{name: c, type: console, match: {detail: {State: failed}}}"),
        "handlers[0].match",
    ),
    "pattern-empty-list": Broken(
        QUEUE + handler("{name: c, type: console, match: {detail: {State: []}}}"),
        "handlers[0].match",
    ),
    "pattern-unknown-operator": Broken(
        QUEUE + handler("{name: c, type: console, match: {detail: {State: [{bogus: 1}]}}}"),
        "handlers[0].match",
    ),
    "pattern-numeric-not-a-number": Broken(
        QUEUE
        + handler("{name: c, type: console, match: {detail: {State: [{numeric: ['>', x]}]}}}"),
        "handlers[0].match",
    ),
    "pattern-prefix-a-number": Broken(
        QUEUE + handler("{name: c, type: console, match: {detail: {State: [{prefix: 5}]}}}"),
        "handlers[0].match",
    ),
    "pattern-a-string": Broken(
        QUEUE + handler("{name: c, type: console, match: failed}"), "handlers[0].match"
    ),
    # templates that do not compile
    "console-template": Broken(
        QUEUE + handler("{name: c, type: console, template: '{{ image_id '}"),
        "handlers[0].template",
    ),
    "shell-argument-template": Broken(
        QUEUE + handler("{name: h, type: shell, command: [x, '{% if %}']}"), "handlers[0].command"
    ),
    "slack-payload-template": Broken(
        QUEUE
        + handler(
            "{name: s, type: slack, webhook_url: 'https://hooks.example/x', payload_template: '{{'}"
        ),
        "handlers[0].payload_template",
    ),
    "sns-subject-template": Broken(
        QUEUE
        + handler(
            "{name: s, type: sns, topic_arn: 'arn:aws:sns:us-east-1:123456789012:t', subject: '{% for %}'}"
        ),
        "handlers[0].subject",
    ),
    "webhook-body-template": Broken(
        QUEUE + handler("{name: w, type: webhook, url: 'http://127.0.0.1:1/', body: '{{ }}'}"),
        "handlers[0].body",
    ),
    # secrets
    "slack-secret-file-missing": Broken(
        QUEUE + handler("{name: s, type: slack, webhook_url_file: /nonexistent/slack-url}"),
        "handlers[0]",
        "webhook_url_file",
    ),
    "webhook-url-file-missing": Broken(
        QUEUE + handler("{name: w, type: webhook, url_file: /nonexistent/url}"),
        "handlers[0]",
        "url_file",
    ),
    "webhook-headers-file-missing": Broken(
        QUEUE
        + handler(
            "{name: w, type: webhook, url: 'http://127.0.0.1:1/', headers_file: /nonexistent/h}"
        ),
        "handlers[0]",
        "headers_file",
    ),
    "slack-url-and-file": Broken(
        QUEUE
        + handler(
            "{name: s, type: slack, webhook_url: 'https://h.example/x', webhook_url_file: /etc/hostname}"
        ),
        "handlers[0]",
        "exactly one",
    ),
    "slack-no-url": Broken(QUEUE + handler("{name: s, type: slack}"), "handlers[0]", "exactly one"),
    "secret-from-unset-variable": Broken(
        QUEUE + handler("{name: s, type: slack, webhook_url: '${AMID_TEST_UNSET_VARIABLE}'}"),
        "handlers[0].webhook_url",
        "AMID_TEST_UNSET_VARIABLE",
    ),
    # cross-checks
    "duplicate-handler-names": Broken(
        QUEUE + "handlers:\n  - {name: a, type: console}\n  - {name: a, type: console}\n",
        "handlers",
        "'a'",
    ),
    "ttl-shorter-than-redelivery": Broken(
        QUEUE.replace("}", ", redelivery: {initial: 1s, max: 10h}}") + "dedupe: {ttl: 1h}\n" + HOOK,
        "<root>",
        "ttl",
    ),
    # YAML and bytes
    "yaml-syntax-error": Broken("queue: {url: broken\n", FILE, "YAML"),
    "yaml-duplicate-key": Broken(QUEUE + QUEUE + HOOK, FILE, "duplicate key"),
    "yaml-101-aliases": Broken(
        QUEUE + "x: &x 1\n" + "y: [" + ", ".join(["*x"] * 101) + "]\n" + HOOK, FILE, "aliases"
    ),
    "yaml-python-tag": Broken(
        QUEUE + "x: !!python/object/apply:os.system ['touch /tmp/amid-corpus-pwned']\n" + HOOK,
        FILE,
        "YAML",
    ),
    "yaml-tab-indent": Broken("queue:\n\turl: x\n", FILE, "YAML"),
    "yaml-nul-character": Broken(QUEUE + HOOK + "x: \x00\n", FILE, "YAML"),
    "empty-file": Broken("", FILE, "empty"),
    "only-a-comment": Broken("# nothing here\n", FILE, "empty"),
    "ten-megabytes": Broken(QUEUE + HOOK + "# " + "x" * (10 * 1024 * 1024) + "\n", FILE),
    "binary-garbage": Broken(_garbage(4096), FILE, "UTF-8"),
    "latin-1-text": Broken((QUEUE + HOOK + "# café\n").encode("latin-1"), FILE, "UTF-8"),
    "utf-16-with-bom": Broken((QUEUE + HOOK).encode("utf-16"), FILE, "UTF-8"),
}


def write(tmp_path: Path, name: str, broken: Broken) -> Path:
    path = tmp_path / f"{name}.yaml"
    if isinstance(broken.content, bytes):
        path.write_bytes(broken.content)
    else:
        path.write_text(broken.content, encoding="utf-8")
    return path


def assert_names_the_path(problems: list[str], expected: str, mentions: str) -> None:
    for problem in problems:
        assert PROBLEM_LINE.match(problem), f"not one `path: problem` line: {problem!r}"
    hits = [p for p in problems if p.startswith(f"{expected}: ") and mentions in p]
    assert hits, f"no line starts with {expected!r} (and mentions {mentions!r}): {problems}"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_broken_file_is_refused_with_a_line_naming_its_path(name: str, tmp_path: Path) -> None:
    broken = CORPUS[name]
    path = write(tmp_path, name, broken)
    began = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    took = time.perf_counter() - began
    print(f"{name}: refused in {took * 1000:.1f} ms: {caught.value.problems}")
    expected = str(path) if broken.path == FILE else broken.path
    assert_names_the_path(caught.value.problems, expected, broken.mentions)
    assert took < BOUND


def test_a_python_tag_is_refused_without_running_anything(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    path = tmp_path / "amid.yaml"
    path.write_text(QUEUE + HOOK + f"x: !!python/object/apply:os.system ['touch {canary}']\n")
    with pytest.raises(ConfigError):
        load_config(path, env={})
    assert not canary.exists()


def test_a_missing_file_and_a_directory_are_refused_naming_the_path(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.yaml", tmp_path):
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert_names_the_path(caught.value.problems, str(path), "cannot read")


def test_anchors_and_aliases_within_the_limit_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "amid.yaml"
    path.write_text(
        QUEUE
        + "defaults: {retry: &retry {attempts: 2, initial_backoff: 1s, max_backoff: 2s}}\n"
        + "handlers:\n"
        + "  - {name: a, type: console, retry: *retry}\n"
        + "  - {name: b, type: console, retry: *retry}\n"
    )
    config = load_config(path, env={})
    assert [h.retry.attempts for h in config.handlers if h.retry] == [2, 2]


# --------------------------------------------------------------------------- the command


def check_config(path: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "amid", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, time.perf_counter() - began


SAMPLE = [
    "unknown-handler-key",
    "wait-time-forever",
    "pattern-unknown-operator",
    "slack-secret-file-missing",
    "duplicate-handler-names",
    "yaml-duplicate-key",
    "ten-megabytes",
    "binary-garbage",
    "latin-1-text",
]


@pytest.mark.parametrize("name", SAMPLE)
def test_check_config_exits_2_with_one_line_per_problem(name: str, tmp_path: Path) -> None:
    broken = CORPUS[name]
    path = write(tmp_path, name, broken)
    result, took = check_config(path)
    print(f"{name}: exit {result.returncode} in {took * 1000:.0f} ms (interpreter start included)")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    expected = str(path) if broken.path == FILE else broken.path
    assert_names_the_path(result.stderr.splitlines(), expected, broken.mentions)
    assert took < BOUND


# --------------------------------------------------------------------------- bugs found


@pytest.mark.parametrize("nesting", ["[", "{a: "])
def test_deeply_nested_yaml_is_a_config_error(nesting: str, tmp_path: Path) -> None:
    closing = "]" if nesting == "[" else "}"
    path = tmp_path / "amid.yaml"
    path.write_text(
        QUEUE + HOOK + "x: " + nesting * 5000 + "1" * (nesting != "[") + closing * 5000 + "\n"
    )
    result, took = check_config(path)
    print(f"exit {result.returncode} in {took:.2f}s; stderr ends: {result.stderr[-300:]!r}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(f"{path}: ")


def test_a_yaml_bomb_under_the_alias_cap_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "amid.yaml"
    path.write_text(_bomb(9))
    try:
        result, took = check_config(path, timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"check-config still running after {BOUND}s (killed)")
    print(f"exit {result.returncode} in {took:.2f}s: {result.stderr.strip()}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}: ")


def test_a_merge_key_reusing_an_anchor_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "amid.yaml"
    path.write_text(
        QUEUE
        + "handlers:\n"
        + "  - &common {name: a, type: console, timeout: 5s}\n"
        + "  - {<<: *common, name: b}\n"
    )
    config = load_config(path, env={})
    assert [(h.name, h.timeout) for h in config.handlers] == [("a", 5.0), ("b", 5.0)]


def test_a_boolean_where_a_number_belongs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "amid.yaml"
    path.write_text(QUEUE.replace("}", ", max_messages: true}") + HOOK)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert_names_the_path(caught.value.problems, "queue.max_messages", "")
