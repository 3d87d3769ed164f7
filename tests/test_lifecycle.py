"""`amid run` as a real process: signals, shutdown, reload, readiness."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    config_yaml,
    event_body,
    hook_handler,
    make_queue,
    queue_count,
    records,
    running_daemon,
    wait_for,
)
from tests.moto_server import free_port

pytestmark = pytest.mark.slow


def start_amid(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "amid", "run", "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_sigterm_during_a_slow_hook_returns_the_message_and_exits_0(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    config = tmp_path / "amid.yaml"
    port = free_port()
    config.write_text(
        config_yaml(queue, moto_url, hook_handler(record, mode="sleep:60"))
        .replace("shutdown_timeout: 5s", "shutdown_timeout: 1s")
        .replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
    )
    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))
    log = tmp_path / "amid.log"
    amid = start_amid(config, log)
    started = record.with_name(record.name + ".started")
    try:
        await wait_for(started.exists, timeout=30)
        hook_pid = int(started.read_text().split()[0])
        began = time.monotonic()
        amid.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(amid.wait, 15)
        took = time.monotonic() - began
    finally:
        if amid.poll() is None:
            amid.kill()
            amid.wait()
    assert code == 0, log.read_text()
    assert took < 10, "the drain is bounded by shutdown_timeout (1s), with room for a slow CI"
    assert not _alive(hook_pid), "the hook's process group was killed"
    assert records(record) == []
    # The message went back with visibility 0: receivable now, not after 30 s.
    response = await sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)
    assert len(response.get("Messages", [])) == 1


async def test_sighup_reloads_handlers_and_a_broken_file_changes_nothing(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    config_path = tmp_path / "amid.yaml"
    config_path.write_text(config_yaml(queue, moto_url, hook_handler(first, name="first")))
    from amid.config import load_config

    async with running_daemon(load_config(config_path), config_path=config_path) as daemon:
        registry = daemon.metrics.registry

        config_path.write_text("queue: {url: broken")
        daemon.request_reload()
        await wait_for(
            lambda: (
                registry.get_sample_value("amid_config_reloads_total", {"outcome": "failure"}) == 1
            )
        )
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available"))
        await wait_for(lambda: len(records(first)) == 1)

        config_path.write_text(config_yaml(queue, moto_url, hook_handler(second, name="second")))
        daemon.request_reload()
        await wait_for(
            lambda: (
                registry.get_sample_value("amid_config_reloads_total", {"outcome": "success"}) == 1
            )
        )
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available"))
        await wait_for(lambda: len(records(second)) == 1)
        await wait_for(lambda: _empty(sqs, queue))

    assert len(records(first)) == 1
    assert registry.get_sample_value("amid_config_last_reload_successful") == 1


async def _empty(sqs: Any, queue: str) -> bool:
    return await queue_count(sqs, queue) == 0


async def test_readyz_is_503_while_sqs_is_unreachable_and_healthz_stays_200(tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    from amid.config import parse_config

    config = parse_config(
        config_yaml(f"{dead}/123456789012/amid", dead, hook_handler(tmp_path / "c.jsonl")), env={}
    )
    async with running_daemon(config) as daemon:
        url = f"http://127.0.0.1:{daemon.metrics_port}"
        await wait_for(
            lambda: (
                (
                    daemon.metrics.registry.get_sample_value(
                        "amid_sqs_requests_total",
                        {"operation": "ReceiveMessage", "outcome": "error"},
                    )
                    or 0
                )
                >= 1
            )
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/readyz") as response:
                ready = response.status
            async with http.get(f"{url}/healthz") as response:
                live = response.status
    assert (ready, live) == (503, 200)


async def test_an_unusable_sqlite_path_exits_2_with_a_clear_line(tmp_path: Path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    config = tmp_path / "amid.yaml"
    config.write_text(
        config_yaml(
            "http://127.0.0.1:9/123456789012/q",
            "http://127.0.0.1:9",
            hook_handler(tmp_path / "c.jsonl"),
            dedupe=f"backend: sqlite, path: {tmp_path / 'missing-dir' / 'x.sqlite3'}",
        )
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "amid", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("dedupe: cannot open the sqlite store")


async def test_an_event_in_flight_during_a_reload_finishes_on_the_handlers_it_started_with(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    config_path = tmp_path / "amid.yaml"
    config_path.write_text(config_yaml(queue, moto_url, hook_handler(old, "sleep:3", name="old")))
    from amid.config import load_config

    async with running_daemon(load_config(config_path), config_path=config_path) as daemon:
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))
        await wait_for(old.with_name(old.name + ".started").exists)
        config_path.write_text(config_yaml(queue, moto_url, hook_handler(new, name="new")))
        daemon.request_reload()
        await wait_for(
            lambda: (
                daemon.metrics.registry.get_sample_value(
                    "amid_config_reloads_total", {"outcome": "success"}
                )
                == 1
            )
        )
        await wait_for(lambda: _empty(sqs, queue))

    assert len(records(old)) == 1, "the event finished on the handler it started with"
    assert records(new) == []
