"""`amid test-event` and `amid replay` as an operator runs them, against a local receiver."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from amid.tools.offline import synthetic_event
from tests.handlers.conftest import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def write_config(tmp_path: Path, receiver: Receiver) -> Path:
    config = tmp_path / "amid.yaml"
    config.write_text(
        f"""
queue: {{url: "https://sqs.us-east-1.amazonaws.com/123456789012/amid"}}
dedupe: {{backend: sqlite, path: {tmp_path / "ledger.sqlite3"}}}
defaults: {{timeout: 2s, retry: {{attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}}}}
handlers:
  - name: failures
    type: webhook
    url: {receiver.url}/failures/s3cr3t-path
    match: {{detail: {{State: [failed]}}}}
  - name: everything
    type: webhook
    url: {receiver.url}/everything
"""
    )
    return config


async def amid(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "amid",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_test_event_dry_run_prints_payloads_and_sends_nothing(
    tmp_path: Path, receiver: Receiver
):
    config = write_config(tmp_path, receiver)
    code, out, _ = await amid("test-event", "-c", str(config), "--state", "failed", "--dry-run")
    assert code == 0
    assert "--- failures (dry run)" in out and "--- everything (dry run)" in out
    assert '\\"State\\":\\"failed\\"' in out, "the rendered body is the event JSON"
    assert receiver.requests == []
    assert "s3cr3t-path" not in out


async def test_test_event_delivers_to_every_matching_handler(tmp_path: Path, receiver: Receiver):
    config = write_config(tmp_path, receiver)
    code, out, _ = await amid("test-event", "-c", str(config), "--state", "available")
    assert code == 0, out
    assert "✓ everything" in out and "failures" not in out
    assert [r.path_qs for r in receiver.requests] == ["/everything"]


async def test_test_event_exits_1_when_a_handler_fails(tmp_path: Path, receiver: Receiver):
    config = write_config(tmp_path, receiver)
    receiver.then(404)
    code, out, err = await amid(
        "test-event", "-c", str(config), "--state", "failed", "--handler", "failures"
    )
    assert code == 1
    assert "✗ failures" in out and "http_404" in out
    assert "s3cr3t-path" not in out + err


async def test_replay_handles_json_lines_skips_duplicates_and_counts_invalid(
    tmp_path: Path, receiver: Receiver
):
    config = write_config(tmp_path, receiver)
    failed, available = synthetic_event("failed"), synthetic_event("available")
    lines = [json.dumps(failed), json.dumps(available), json.dumps(failed), "not json"]
    dump = tmp_path / "dlq.jsonl"
    dump.write_text("\n".join(lines) + "\n")

    code, out, _ = await amid("replay", "-c", str(config), str(dump))

    assert code == 1, "an invalid message makes the replay incomplete"
    assert "4 message(s): handled 2, duplicate 1, invalid 1" in out
    paths = sorted(r.path_qs for r in receiver.requests)
    assert paths == ["/everything", "/everything", "/failures/s3cr3t-path"]

    code, out, _ = await amid("replay", "-c", str(config), str(dump))
    assert "duplicate 3" in out, "the ledger remembers the first replay"
    assert len(receiver.requests) == 3


async def test_replay_reads_receive_message_output_from_stdin_and_can_skip_dedupe(
    tmp_path: Path, receiver: Receiver
):
    config = write_config(tmp_path, receiver)
    event = synthetic_event("available")
    drained = {"Messages": [{"MessageId": "1", "ReceiptHandle": "r", "Body": json.dumps(event)}]}
    for _ in range(2):
        code, out, _ = await amid(
            "replay", "-c", str(config), "--no-dedupe", "-", stdin=json.dumps(drained).encode()
        )
        assert code == 0, out
        assert "1 message(s): handled 1" in out
    assert len(receiver.requests) == 2
