"""Secrets never leave amid: not in logs, metrics, check-config output or error text.

SPEC 3 and 6, STYLE 12. Every secret below holds the marker `s3cr3t-XYZ`: the
Slack webhook URL (its path is the credential), the webhook URL (path and
query), its header values, a shell hook's `env`, and the AWS secret key the SNS
handler signs with. The destinations fail in every way (4xx, 5xx, 429, hanging
past the timeout, refusing connections) and the worst of them echo the request
(URL and headers) in their error bodies.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import traceback
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from amid.config import parse_config
from tests.helpers import config_yaml, event_body, make_queue, running_daemon, wait_for
from tests.local_http import serve
from tests.moto_server import free_port

MARK = "s3cr3t-XYZ"
SLACK_PATH = f"/services/T0000/B0000/{MARK}-slack"
WEBHOOK_PATH = f"/{MARK}-path"
WEBHOOK_QUERY = f"token={MARK}-query"
BEARER = f"Bearer {MARK}-bearer"
API_KEY = f"{MARK}-apikey"
HOOK_TOKEN = f"{MARK}-hook-env"
AWS_SECRET = f"{MARK}-aws-secret-key"
BOT_TOKEN = f"xoxb-{MARK}-bot"  # Slack's app mode: the bot token rides in Authorization


class EchoReceiver:
    """Answers by the first path segment (ok, s401, s403, s500, s503, s429, hang) and echoes
    the request line and headers in every error body, as careless destinations do."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        mode = request.path.split("/")[1]
        echo = f"{request.method} {request.url} headers={dict(request.headers)} body={await request.text()}"
        if mode == "hang":
            while request.transport is not None and not request.transport.is_closing():
                if self._released.is_set():
                    break
                await asyncio.sleep(0.01)
            return web.Response(status=503, text=echo)
        if mode == "ok":
            return web.Response(status=200, text="ok")
        status = int(mode.removeprefix("s"))
        headers = {"Retry-After": "1"} if status in (429, 503) else {}
        return web.Response(status=status, text=echo, headers=headers)

    async def start(self) -> None:
        self._runner, self.url = await serve(self._handle)

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def echo() -> AsyncIterator[EchoReceiver]:
    receiver = EchoReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def aws_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    yield AWS_SECRET


def handlers_yaml(base: str, refused: str, topic: str, moto_url: str) -> str:
    """Every handler type, each failing in one way (or succeeding), all holding secrets."""
    items = [
        f"  - {{name: slack-{mode}, type: slack, webhook_url: '{base}/{mode}{SLACK_PATH}'}}\n"
        for mode in ("ok", "s403", "s500", "s429", "hang")
    ]
    items.append(
        f"  - {{name: slack-refused, type: slack, webhook_url: '{refused}{SLACK_PATH}'}}\n"
    )
    for mode in ("ok", "s403", "s500", "s429", "hang"):  # "ok" answers text, not Slack's JSON
        items.append(
            f"  - {{name: slack-app-{mode}, type: slack, token: '{BOT_TOKEN}', channel: C0123,"
            f" api_url: '{base}/{mode}/api/'}}\n"
        )
    for mode in ("ok", "s401", "s500", "s503", "hang"):
        items.append(
            f"  - name: webhook-{mode}\n    type: webhook\n"
            f"    url: '{base}/{mode}{WEBHOOK_PATH}?{WEBHOOK_QUERY}'\n"
            f"    headers: {{Authorization: '{BEARER}', X-Api-Key: '{API_KEY}'}}\n"
        )
    items.append(
        f"  - name: webhook-refused\n    type: webhook\n    url: '{refused}{WEBHOOK_PATH}?{WEBHOOK_QUERY}'\n"
        f"    headers: {{Authorization: '{BEARER}'}}\n"
    )
    items.append(
        f"  - {{name: sns-missing, type: sns, topic_arn: '{topic}', endpoint_url: '{moto_url}'}}\n"
    )
    items.append(
        f"  - {{name: hook, type: shell, command: [{json.dumps(sys.executable)}, -c, 'import sys; sys.exit(3)'],"
        f" env: {{API_TOKEN: '{HOOK_TOKEN}'}}}}\n"
    )
    items.append("  - {name: out, type: console}\n")
    return "".join(items)


def _with_timeouts(handlers: str) -> str:
    """Every handler gets a 300 ms timeout, so a hang becomes a timeout quickly."""
    out = []
    for line in handlers.splitlines(keepends=True):
        if line.startswith("  - {"):
            out.append(line.rstrip("\n").removesuffix("}") + ", timeout: 300ms}\n")
        elif line.startswith("  - name:"):
            out.append(line + "    timeout: 300ms\n")
        else:
            out.append(line)
    return "".join(out)


HANDLER_NAMES = [
    *(f"slack-{m}" for m in ("ok", "s403", "s500", "s429", "hang", "refused")),
    *(f"slack-app-{m}" for m in ("ok", "s403", "s500", "s429", "hang")),
    *(f"webhook-{m}" for m in ("ok", "s401", "s500", "s503", "hang", "refused")),
    "sns-missing",
    "hook",
    "out",
]


def _dump(entries: Iterable[Mapping[str, Any]]) -> str:
    """Every captured log entry as text, exceptions and their tracebacks included."""
    parts = []
    for entry in entries:
        parts.append(json.dumps(entry, default=repr))
        for value in entry.values():
            if isinstance(value, BaseException):
                parts.append("".join(traceback.format_exception(value)))
    return "\n".join(parts)


def _settled(registry: Any) -> bool:
    return all(
        sum(
            registry.get_sample_value(
                "amid_notifications_total", {"handler": name, "outcome": outcome}
            )
            or 0
            for outcome in ("delivered", "failed")
        )
        >= 1
        for name in HANDLER_NAMES
    )


async def test_no_secret_in_logs_metrics_or_errors_when_every_destination_fails(
    sqs: Any, moto_url: str, echo: EchoReceiver, aws_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue, _ = await make_queue(sqs, max_receive=10)
    refused = f"http://127.0.0.1:{free_port()}"
    topic = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    handlers = _with_timeouts(handlers_yaml(echo.url, refused, topic, moto_url))
    text = config_yaml(queue, moto_url, handlers).replace("attempts: 3", "attempts: 2")
    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))

    with capture_logs() as entries:
        async with running_daemon(parse_config(text, env={})) as daemon:
            await wait_for(lambda: _settled(daemon.metrics.registry), timeout=60)
            metrics_url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
            metrics = await asyncio.to_thread(_get, metrics_url)
            handlers_repr = repr(dict(daemon.__dict__))

    logs = _dump(entries)
    printed = capsys.readouterr()
    assert any(MARK in request for request in echo.requests), "the secrets were really used"
    assert any("s403" in request for request in echo.requests)
    assert any("/s403/api/chat.postMessage" in request for request in echo.requests)
    assert "handler attempt failed" in logs, "failures were logged"
    assert MARK not in logs
    assert MARK not in metrics
    assert MARK not in printed.out + printed.err
    # A shell hook's `env` is plain config (SPEC gives it no *_file form); the rest is SecretStr.
    assert MARK not in handlers_repr.replace(HOOK_TOKEN, "")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        return str(response.read().decode())


# --------------------------------------------------------------------------- as a process


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AMID_")}
    env.update({"AWS_SECRET_ACCESS_KEY": AWS_SECRET, **extra})
    return env


async def test_no_secret_in_the_output_of_run_test_event_or_check_config(
    sqs: Any, moto_url: str, echo: EchoReceiver, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs, max_receive=10)
    refused = f"http://127.0.0.1:{free_port()}"
    # Secrets reach the config three ways: ${VAR}, *_file and headers_file.
    (tmp_path / "slack-url").write_text(f"{echo.url}/s500{SLACK_PATH}\n")
    (tmp_path / "webhook-url").write_text(f"{echo.url}/s403{WEBHOOK_PATH}?{WEBHOOK_QUERY}\n")
    (tmp_path / "headers.yaml").write_text(f"X-Api-Key: '{API_KEY}'\n")
    (tmp_path / "bot-token").write_text(BOT_TOKEN + "\n")
    handlers = (
        "  - {name: slack-env, type: slack, webhook_url: '${SLACK_URL}', timeout: 300ms}\n"
        f"  - {{name: slack-file, type: slack, webhook_url_file: '{tmp_path / 'slack-url'}'}}\n"
        f"  - {{name: slack-refused, type: slack, webhook_url: '{refused}{SLACK_PATH}'}}\n"
        f"  - {{name: slack-app, type: slack, token_file: '{tmp_path / 'bot-token'}',"
        f" channel: C0123, api_url: '{echo.url}/s500/api/'}}\n"
        f"  - {{name: webhook-file, type: webhook, url_file: '{tmp_path / 'webhook-url'}',"
        f" headers_file: '{tmp_path / 'headers.yaml'}', headers: {{Authorization: '${{TOKEN}}'}}}}\n"
        f"  - {{name: webhook-env, type: webhook, url: '{echo.url}/s500{WEBHOOK_PATH}?{WEBHOOK_QUERY}',"
        " headers: {Authorization: '${TOKEN}'}}\n"
        "  - {name: sns-missing, type: sns, topic_arn: 'arn:aws:sns:us-east-1:123456789012:gone',"
        f" endpoint_url: '{moto_url}'}}\n"
        f"  - {{name: hook, type: shell, command: [/bin/false], env: {{API_TOKEN: '{HOOK_TOKEN}'}}}}\n"
    )
    port = free_port()
    config = tmp_path / "amid.yaml"
    config.write_text(
        config_yaml(queue, moto_url, handlers)
        .replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
        .replace("attempts: 3", "attempts: 2")
    )
    env = _environment(SLACK_URL=f"{echo.url}/hang{SLACK_PATH}", TOKEN=BEARER)
    amid = [sys.executable, "-m", "amid"]

    outputs: dict[str, str] = {}
    for name, args in {
        "check-config": ["check-config", "-c", str(config)],
        "test-event": ["test-event", "-c", str(config), "--state", "failed"],
        "test-event --dry-run": ["test-event", "-c", str(config), "--dry-run"],
    }.items():
        result = await asyncio.to_thread(
            subprocess.run,
            [*amid, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        outputs[name] = result.stdout + result.stderr
    assert "valid" in outputs["check-config"]
    assert "failed after" in outputs["test-event"]

    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))
    log = tmp_path / "amid.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*amid, "run", "-c", str(config)], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    try:
        failing = {
            "slack-env",
            "slack-file",
            "slack-refused",
            "slack-app",
            "webhook-file",
            "webhook-env",
            "sns-missing",
            "hook",
        }

        def failed_everywhere() -> bool:
            failed = {
                line.get("handler")
                for line in _json_lines(log)
                if line.get("event") == "notification failed"
            }
            return failing <= failed

        await wait_for(failed_everywhere, timeout=60)
        outputs["/metrics"] = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    outputs["run"] = log.read_text()

    assert code == 0
    assert any(MARK in request for request in echo.requests), "the secrets were really used"
    for name, output in outputs.items():
        assert MARK not in output, (
            f"{name} printed a secret: {output[output.find(MARK) - 200 :][:400]}"
        )


# --------------------------------------------------------------------------- bugs found


async def test_a_secret_cut_by_the_excerpt_limit_is_not_shown_in_part(
    echo: EchoReceiver, aws_secret: str
) -> None:
    from amid.handlers import http as amid_http
    from amid.handlers.base import HandlerError

    url = f"{echo.url}/s403{SLACK_PATH}-long-enough-to-be-cut"
    # An HTML error page: indentation (collapsed to one space by the scrubber), then the URL.
    page = "\n" * (512 - len("GET ") - len(url) + 12) + f"GET {url}"
    assert MARK in page[:512] and url not in page[:512]

    async def padded(request: web.Request) -> web.Response:
        return web.Response(status=403, text=page)

    runner, padded_url = await serve(padded)

    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(HandlerError) as caught:
                await amid_http.deliver(
                    session,
                    method="POST",
                    url=url.replace(echo.url, padded_url),
                    body=b"{}",
                    headers={},
                    what="slack webhook",
                )
    finally:
        await runner.cleanup()
    print(str(caught.value))
    assert "s403" in str(caught.value) or "403" in str(caught.value)
    assert MARK not in str(caught.value)


def test_a_broken_headers_file_is_reported_without_its_content(tmp_path: Path) -> None:
    headers = tmp_path / "headers.yaml"
    headers.write_text(f'Authorization: "{BEARER}\n')
    config = tmp_path / "amid.yaml"
    config.write_text(
        "queue: {url: https://sqs.us-east-1.amazonaws.com/123456789012/amid}\n"
        f"handlers:\n  - {{name: w, type: webhook, url: 'http://127.0.0.1:1/', headers_file: '{headers}'}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "amid", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(result.stderr)
    assert result.returncode == 2
    assert MARK not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one `path: problem` line"


async def test_a_yaml_error_next_to_a_secret_is_reported_without_it(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs)
    path = tmp_path / "amid.yaml"
    good = config_yaml(queue, moto_url, "  - {name: out, type: console}\n")
    path.write_text(good)
    broken = good.replace(
        "  - {name: out, type: console}",
        f"  - {{name: w, type: webhook, url: 'http://127.0.0.1:1{WEBHOOK_PATH}' oops}}",
    )
    with capture_logs() as entries:
        async with running_daemon(parse_config(good, env={}), config_path=path) as daemon:
            path.write_text(broken)
            daemon.request_reload()
            registry = daemon.metrics.registry
            await wait_for(
                lambda: (
                    registry.get_sample_value("amid_config_reloads_total", {"outcome": "failure"})
                    == 1
                )
            )
    result = subprocess.run(
        [sys.executable, "-m", "amid", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "YAML" in result.stderr
    assert MARK not in result.stderr
    assert MARK not in _dump(entries)
