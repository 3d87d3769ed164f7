"""Faults around the daemon: SIGTERM under load, failing destinations, a locked or unusable
dedupe store, SIGHUP with a broken config. Nothing is lost, nothing runs twice, nothing spins.

SPEC 2.4, 2.7, 2.8 and 2.9. The SQS outage (moto unreachable for 30 s) is staged
with the cuttable proxy in test_kill.py's neighbourhood, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from amid.tools.offline import synthetic_event
from tests.helpers import (
    config_yaml,
    hook_handler,
    make_config,
    make_queue,
    queue_count,
    records,
    running_daemon,
    wait_for,
)
from tests.local_http import serve
from tests.moto_server import free_port

pytestmark = pytest.mark.slow

IMAGE = re.compile(r"ami-[0-9a-f]{17}")


def _sample(registry: Any, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        return str(response.read().decode())


async def _send(sqs: Any, queue: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(event)}
            for i, event in enumerate(events[start : start + 10])
        ]
        await sqs.send_message_batch(QueueUrl=queue, Entries=entries)


def _start_amid(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "amid", "run", "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def _stopped_at_exit(process: subprocess.Popen[bytes]) -> Any:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- SIGTERM

# Fast events (available) take 0.2 s; slow ones (failed) would take 60 s.
SLOW_HOOK = (
    'echo "$AMID_EVENT_ID" >> "$1"; '
    "case $AMID_STATE in failed) sleep 60;; *) sleep 0.2;; esac; "
    'echo "$AMID_EVENT_ID" >> "$2"'
)


async def test_sigterm_under_load_finishes_or_returns_every_in_flight_event_and_exits_0(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs)
    events = [
        synthetic_event("failed" if i % 2 else "available", f"ami-{i:017x}") for i in range(50)
    ]
    await _send(sqs, queue, events)
    started, finished = tmp_path / "started", tmp_path / "finished"
    command = json.dumps(["/bin/sh", "-c", SLOW_HOOK, "hook", str(started), str(finished)])
    config = tmp_path / "amid.yaml"
    shutdown_timeout = 5.0
    config.write_text(
        config_yaml(queue, moto_url, f"  - {{name: hook, type: shell, command: {command}}}\n")
        .replace("shutdown_timeout: 5s", f"shutdown_timeout: {shutdown_timeout:g}s")
        .replace('"127.0.0.1:0"', f'"127.0.0.1:{free_port()}"')
    )

    def lines(path: Path) -> list[str]:
        return path.read_text().split() if path.exists() else []

    log = tmp_path / "amid.log"
    with _stopped_at_exit(_start_amid(config, log)) as amid:
        await wait_for(lambda: len(lines(started)) >= 40, timeout=60)
        began_before_sigterm = set(lines(started))
        began = time.monotonic()
        amid.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(amid.wait, shutdown_timeout + 30)
        took = time.monotonic() - began
    print(f"exit {code} {took:.1f}s after SIGTERM (shutdown_timeout {shutdown_timeout:g}s)")
    assert code == 0, log.read_text()[-3000:]
    assert took < shutdown_timeout + 15, "the drain is bounded by shutdown_timeout"

    done = set(lines(finished))
    back: set[str] = set()
    deadline = time.monotonic() + 10  # far less than the 30 s visibility timeout
    while len(done | back) < len(events) and time.monotonic() < deadline:
        response = await sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
        )
        back |= {json.loads(m["Body"])["id"] for m in response.get("Messages", [])}
    ids = {event["id"] for event in events}
    slow = {event["id"] for event in events if event["detail"]["State"] == "failed"}
    fast_in_flight = {e["id"] for e in events if e["id"] not in slow} & began_before_sigterm
    print(f"finished {len(done)}, back on the queue at once {len(back)}")
    assert done | back == ids, "every event finished or is receivable right after the exit"
    assert slow <= back, "hooks cut off by shutdown_timeout gave their messages back"
    assert fast_in_flight <= done, "in-flight events that could finish within the bound did"
    assert not (done & slow)


# --------------------------------------------------------------------------- destinations


@dataclass
class Seen:
    at: float
    image_id: str
    status: int | None  # None: the client gave up (hang)


class PhasedReceiver:
    """A destination on a fixed port whose behaviour the test switches phase by phase:
    `500`, `429` (Retry-After: 1), `hang`, `ok`; `stop()` makes it refuse connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "500"
        self.seen: list[Seen] = []
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, status: int | None) -> int:
        return sum(1 for seen in self.seen if seen.status == status)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        found = IMAGE.search(body)
        image = found.group(0) if found else "?"
        mode = self.mode
        if mode == "hang":
            self.seen.append(Seen(time.monotonic(), image, None))
            while request.transport is not None and not request.transport.is_closing():
                if self._release.is_set():
                    break
                await asyncio.sleep(0.01)
            return web.Response(status=503)
        status = {"500": 500, "429": 429, "ok": 200}[mode]
        self.seen.append(Seen(time.monotonic(), image, status))
        headers = {"Retry-After": "1"} if status == 429 else {}
        return web.Response(status=status, text="ok" if status == 200 else "no", headers=headers)

    async def start(self) -> None:
        self._release.clear()
        self._runner, _ = await serve(self._handle, self.port, shutdown_timeout=1)

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def phased() -> AsyncIterator[PhasedReceiver]:
    receiver = PhasedReceiver(free_port())
    await receiver.start()
    yield receiver
    await receiver.stop()


def _destination(kind: str, url: str) -> str:
    common = (
        "    timeout: 500ms\n    retry: {attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}\n"
    )
    if kind == "slack":
        return (
            f"  - name: flaky\n    type: slack\n    webhook_url: '{url}/services/x'\n"
            f"    rate_limit: 100\n{common}"
        )
    return f"  - name: flaky\n    type: webhook\n    url: '{url}/events'\n{common}"


@pytest.mark.parametrize("kind", ["slack", "webhook"])
async def test_a_failing_destination_keeps_its_retry_budget_holds_up_no_one_and_loses_nothing(
    kind: str, sqs: Any, moto_url: str, tmp_path: Path, phased: PhasedReceiver
) -> None:
    queue, _ = await make_queue(sqs, max_receive=100)
    events = [synthetic_event("failed", f"ami-{i:017x}") for i in range(5)]
    images = {event["detail"]["ImageId"] for event in events}
    steady = tmp_path / "steady.jsonl"
    handlers = _destination(kind, phased.url) + hook_handler(steady, name="steady")
    async with running_daemon(make_config(queue, moto_url, handlers)) as daemon:
        registry = daemon.metrics.registry

        def attempts(outcome: str) -> float:
            return _sample(
                registry, "amid_handler_attempts_total", handler="flaky", outcome=outcome
            )

        await _send(sqs, queue, events)
        await wait_for(lambda: phased.count(500) >= 6, timeout=30)
        phased.mode = "429"
        await wait_for(lambda: phased.count(429) >= 3, timeout=30)
        phased.mode = "hang"
        await wait_for(lambda: phased.count(None) >= 2 and attempts("timeout") >= 2, timeout=30)
        await phased.stop()  # connections refused from now on
        refused_from = attempts("error")
        await wait_for(lambda: attempts("error") >= refused_from + 3, timeout=30)
        steady_while_failing = records(steady)
        phased.mode = "ok"
        await phased.start()

        async def drained() -> bool:
            return await queue_count(sqs, queue) == 0

        await wait_for(drained, timeout=60)
        total = sum(attempts(o) for o in ("success", "error", "timeout"))
        deliveries = sum(
            _sample(registry, "amid_notifications_total", handler="flaky", outcome=outcome)
            for outcome in ("delivered", "failed")
        )

    print(f"{kind}: {total:g} attempts over {deliveries:g} deliveries; seen {len(phased.seen)}")
    assert deliveries >= len(events)
    assert deliveries <= total <= 3 * deliveries, "retries stay within attempts per delivery"
    assert len(steady_while_failing) == len(events), "the other handler was not held up"
    assert len(records(steady)) == len(events), "and was not called again on redelivery"
    delivered = {seen.image_id for seen in phased.seen if seen.status == 200}
    assert delivered == images, "nothing lost once the destination recovered"


async def test_retry_after_is_honoured_across_a_redelivery_too(
    sqs: Any, moto_url: str, phased: PhasedReceiver
) -> None:
    """In process, tests/test_deliver.py proves it; here the last try's Retry-After also
    keeps the message away until it has passed."""
    phased.mode = "429"
    queue, _ = await make_queue(sqs, max_receive=100)
    flaky = _destination("webhook", phased.url).replace("attempts: 3", "attempts: 2")
    await _send(sqs, queue, [synthetic_event("failed", "ami-00000000000000001")])
    async with running_daemon(make_config(queue, moto_url, flaky)):
        await wait_for(lambda: phased.count(429) >= 4, timeout=30)
    times = [seen.at for seen in phased.seen]
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(times)]
    print(f"gaps between requests: {gaps}")
    assert min(gaps) >= 0.95, "every request waits out the Retry-After: 1 before it"


# --------------------------------------------------------------------------- the dedupe store

LOCKER = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "db.execute('COMMIT')\n"
)


async def test_a_locked_sqlite_store_leaves_events_on_the_queue_until_it_is_released(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs, max_receive=100)
    store = tmp_path / "dedupe.sqlite3"
    record = tmp_path / "calls.jsonl"
    config = make_config(
        queue, moto_url, hook_handler(record), dedupe=f"backend: sqlite, path: {store}"
    )
    events = [synthetic_event("available", f"ami-{i:017x}") for i in range(2)]
    async with running_daemon(config) as daemon:
        registry = daemon.metrics.registry
        async with _locked(store):
            await _send(sqs, queue, events)
            await wait_for(
                lambda: _sample(registry, "amid_ledger_errors_total", operation="claim") >= 2,
                timeout=60,
            )
            assert records(record) == [], "no handler runs while the ledger cannot record"
            assert await queue_count(sqs, queue) == len(events), "nothing was acknowledged"
            assert _sample(registry, "amid_messages_deleted_total") == 0
            assert daemon.health.live

        async def drained() -> bool:
            return await queue_count(sqs, queue) == 0

        await wait_for(lambda: len(records(record)) == len(events), timeout=60)
        await wait_for(drained, timeout=30)
    assert sorted(call["event_id"] for call in records(record)) == sorted(e["id"] for e in events)


async def test_readyz_is_503_while_the_dedupe_store_is_locked(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs, max_receive=100)
    store = tmp_path / "dedupe.sqlite3"
    config = make_config(
        queue,
        moto_url,
        hook_handler(tmp_path / "calls.jsonl"),
        dedupe=f"backend: sqlite, path: {store}",
    )
    async with running_daemon(config) as daemon:
        registry = daemon.metrics.registry
        async with _locked(store):
            await _send(sqs, queue, [synthetic_event("available", "ami-00000000000000001")])
            await wait_for(
                lambda: _sample(registry, "amid_ledger_errors_total", operation="claim") >= 1,
                timeout=60,
            )
            url = f"http://127.0.0.1:{daemon.metrics_port}/readyz"
            status = await asyncio.to_thread(_status, url)
    assert status == 503


@contextlib.asynccontextmanager
async def _locked(store: Path) -> AsyncIterator[None]:
    """Another process holds an exclusive lock on the sqlite store until the block ends."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdin is not None and locker.stdout is not None
    try:
        assert await asyncio.to_thread(locker.stdout.readline) == "locked\n"
        yield
    finally:
        locker.stdin.close()
        await asyncio.to_thread(locker.wait, 30)
        locker.stdout.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@contextlib.contextmanager
def _read_only_directory(path: Path) -> Any:
    """A directory nobody can create files in: mode 0555, and immutable for root, whom
    permission bits do not stop."""
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip(
                "running as root and chattr +i is unavailable: cannot make a read-only directory"
            )
        immutable = True
    try:
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        path.chmod(0o755)


def test_a_read_only_directory_for_the_sqlite_store_exits_2_with_a_clear_line(
    tmp_path: Path,
) -> None:
    with _read_only_directory(tmp_path / "state") as readonly:
        store = readonly / "dedupe.sqlite3"
        config = tmp_path / "amid.yaml"
        config.write_text(
            config_yaml(
                "http://127.0.0.1:9/123456789012/q",
                "http://127.0.0.1:9",
                "  - {name: out, type: console}\n",
                dedupe=f"backend: sqlite, path: {store}",
            )
        )
        result = subprocess.run(
            [sys.executable, "-m", "amid", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert not store.exists()
    print(result.stderr)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dedupe: cannot open the sqlite store")
    assert str(store) in last, "the line names the path"
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- SIGHUP

BROKEN_CONFIGS = {
    "yaml-syntax": "queue: {url: broken\n",
    "invalid-value": None,  # the running config with a bad duration, built below
    "deep-nesting": "x: " + "[" * 5000 + "]" * 5000 + "\n",
    "not-utf-8": b"queue: \xff\xfe\n",
}


async def test_sighup_with_broken_configs_under_load_changes_and_drops_nothing(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    port = free_port()
    good = config_yaml(
        queue,
        moto_url,
        hook_handler(record, mode="sleep:1"),
        queue_extra="  max_in_flight: 6",
    ).replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
    config = tmp_path / "amid.yaml"
    config.write_text(good)
    events = [synthetic_event("available", f"ami-{i:017x}") for i in range(30)]
    await _send(sqs, queue, events)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "amid.log"
    with _stopped_at_exit(_start_amid(config, log)) as amid:
        await wait_for(lambda: len(records(record)) >= 3, timeout=60)
        for count, (name, broken) in enumerate(BROKEN_CONFIGS.items(), start=1):
            content = (
                broken if broken is not None else good.replace("timeout: 10s", "timeout: soon")
            )
            staged = tmp_path / "amid.yaml.new"
            if isinstance(content, bytes):
                staged.write_bytes(content)
            else:
                staged.write_text(content)
            staged.replace(config)  # atomically, as a config manager would
            amid.send_signal(signal.SIGHUP)

            def refused(expected: int = count) -> bool:
                text = _get(metrics_url)
                return _metric(text, 'amid_config_reloads_total{outcome="failure"}') >= expected

            await wait_for(refused, timeout=30)
            assert amid.poll() is None, f"{name}: still running"
        during = len(records(record))
        await wait_for(lambda: len(records(record)) == len(events), timeout=120)
        metrics = _get(metrics_url)
        amid.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(amid.wait, 30)

    print(f"{during} of {len(events)} events done when the last SIGHUP was refused")
    assert code == 0
    assert during < len(events), "the reloads happened under load"
    calls = records(record)
    assert sorted(c["event_id"] for c in calls) == sorted(e["id"] for e in events), "each once"
    assert {c["handler"] for c in calls} == {"hook"}, "the running handlers stayed"
    assert _metric(metrics, 'amid_config_reloads_total{outcome="failure"}') == len(BROKEN_CONFIGS)
    assert _metric(metrics, 'amid_config_reloads_total{outcome="success"}') == 0
    assert _metric(metrics, "amid_config_last_reload_successful") == 0
    assert await queue_count(sqs, queue) == 0
