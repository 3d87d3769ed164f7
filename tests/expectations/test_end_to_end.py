"""Expectations end to end: `amid run` processes against moto, a local HTTP receiver, seconds.

The expectation `nightly` wants an `available` event every 2 s with 1 s of grace;
its notices go to the webhook `ops`, whose own `match` (failed events only)
does not apply to them. The receiver records each notice by its id
(`expectation#nightly#<due>#<status>`). Every wait polls with a deadline far
above the expected time; what a test counts, it counts after the processes
have stopped, so nothing can arrive afterwards.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, closing
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from amid.store.dynamodb import create_table
from amid.tools.offline import synthetic_event
from tests.harness import (
    AmidConfig,
    AmidProcess,
    Behaviour,
    Receiver,
    Webhook,
    make_queue,
    queue_count,
    report,
    wait_until,
)

pytestmark = pytest.mark.slow

NIGHTLY = {
    "name": "nightly",
    "match": {"detail": {"State": ["available"]}},
    "every": "2s",
    "grace": "1s",
    "notify": ["ops"],
}
OPS = Webhook("ops", states=frozenset({"failed"}))
TIMEOUT = 60.0


def notices(receiver: Receiver, status: str, *, delivered: bool = True) -> list[str]:
    return [
        r.event_id
        for r in receiver.requests()
        if r.event_id.startswith("expectation#nightly#")
        and r.event_id.endswith(f"#{status}")
        and r.delivered == delivered
    ]


def due_of(ident: str) -> float:
    return datetime.fromisoformat(ident.split("#")[2].replace("Z", "+00:00")).timestamp()


@pytest.fixture
def receiver() -> AsyncIterator[Receiver]:
    with Receiver() as server:
        yield server


async def config_for(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path, **changes: Any
) -> AmidConfig:
    queue, _ = await make_queue(sqs, "expect")
    config = AmidConfig(
        queue_url=queue,
        sqs_endpoint=moto_url,
        receiver=receiver,
        handlers=[OPS],
        dedupe={"backend": "sqlite", "path": str(tmp_path / "amid.sqlite3")},
        expectations=[NIGHTLY],
    )
    return replace(config, **changes)


async def overdue_shown(amid: AmidProcess, value: float = 1) -> bool:
    """The watch has checked (and sent what was owed) with this result: a barrier."""
    snapshot = await amid.metrics()
    return snapshot.value("amid_expectation_overdue", expectation="nightly") == value and any(
        name == "amid_expectation_overdue" and labels.get("expectation") == "nightly"
        for name, labels, _ in snapshot.samples
    )


def stored(path: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM expectations WHERE name = 'nightly'").fetchone())


async def test_with_no_matching_event_one_overdue_goes_out_after_every_plus_grace(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    config = await config_for(sqs, moto_url, receiver, tmp_path)
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await wait_until(
            lambda: notices(receiver, "overdue"), timeout=TIMEOUT, what="an overdue notice"
        )
        await wait_until(lambda: overdue_shown(amid), timeout=TIMEOUT, what="overdue shown")
        assert await amid.terminate() == 0

    (ident,) = notices(receiver, "overdue")
    (request,) = [r for r in receiver.requests() if r.event_id == ident]
    arrived = time.time() - (time.monotonic() - request.at)  # the receiver's clock is monotonic
    state = stored(tmp_path / "amid.sqlite3")
    assert due_of(ident) == pytest.approx(state["started"] + 3.0, abs=0.002)
    assert json.loads(state["told"]) == ["ops"]
    report(f"expectations: the overdue notice arrived {arrived - due_of(ident):.3f}s after due")


async def test_a_restart_while_overdue_sends_no_second_overdue(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    config = await config_for(sqs, moto_url, receiver, tmp_path)
    async with AmidProcess(config, tmp_path, name="first") as first:
        await first.wait_ready()
        await wait_until(lambda: notices(receiver, "overdue"), timeout=TIMEOUT, what="overdue")
        assert await first.terminate() == 0
    async with AmidProcess(config, tmp_path, name="second") as second:
        await second.wait_ready()
        await wait_until(lambda: overdue_shown(second), timeout=TIMEOUT, what="second checked")
        assert await second.terminate() == 0

    assert len(notices(receiver, "overdue")) == 1

    shown = subprocess.run(
        [sys.executable, "-m", "amid", "expectations", "-c", str(second.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    header, line = shown.stdout.splitlines()
    assert header.split() == ["NAME", "LAST", "MATCH", "NEXT", "DUE", "STATUS"]
    assert line.startswith("nightly ")
    assert "never" in line and "OVERDUE since" in line and "(told: ops)" in line


async def test_a_matching_event_ends_the_episode_with_exactly_one_recovered(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    config = await config_for(sqs, moto_url, receiver, tmp_path)
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await wait_until(lambda: notices(receiver, "overdue"), timeout=TIMEOUT, what="overdue")
        event = synthetic_event("available", "ami-0aaaaaaaaaaaaaaa1")
        await sqs.send_message(QueueUrl=config.queue_url, MessageBody=json.dumps(event))
        await wait_until(lambda: notices(receiver, "recovered"), timeout=TIMEOUT, what="recovered")

        async def deleted() -> bool:
            return await queue_count(sqs, config.queue_url) == 0

        # The event matches no handler (ops wants failed events): still deleted.
        await wait_until(deleted, timeout=TIMEOUT, what="the event deleted")
        await wait_until(lambda: overdue_shown(amid, 0), timeout=TIMEOUT, what="not overdue")
        snapshot = await amid.metrics()
        assert await amid.terminate() == 0

    assert len(notices(receiver, "overdue")) == 1
    assert len(notices(receiver, "recovered")) == 1
    assert (
        notices(receiver, "recovered")[0].split("#")[2]
        == notices(receiver, "overdue")[0].split("#")[2]
    )
    assert [r.event_id for r in receiver.requests() if r.event_id == event["id"]] == []
    assert snapshot.value("amid_expectation_notifications_total", status="recovered") == 1
    assert snapshot.value("amid_expectation_last_seen_timestamp_seconds") == pytest.approx(
        datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
    )


async def test_a_receiver_answering_500_then_200_gets_one_overdue(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    # One try per wake: the second wake, after the backoff, is what delivers.
    config = await config_for(sqs, moto_url, receiver, tmp_path, retry_attempts=1)
    receiver.script("ops", Behaviour(fail=1.0, fail_status=500))
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await wait_until(
            lambda: len(notices(receiver, "overdue", delivered=False)) >= 2,
            timeout=TIMEOUT,
            what="two failed tries on two wakes",
        )
        receiver.script("ops", Behaviour())
        await wait_until(lambda: notices(receiver, "overdue"), timeout=TIMEOUT, what="delivered")
        await wait_until(lambda: overdue_shown(amid), timeout=TIMEOUT, what="overdue shown")
        snapshot = await amid.metrics()
        assert await amid.terminate() == 0

    assert len(notices(receiver, "overdue")) == 1
    assert snapshot.value("amid_expectation_notifications_total", status="overdue") == 1
    assert snapshot.value("amid_notifications_total", handler="ops", outcome="failed") >= 2


async def test_two_replicas_on_one_dynamodb_table_send_one_overdue_in_all(
    sqs: Any, dynamodb: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    await create_table(dynamodb, "amid-expect")
    base = await config_for(
        sqs, moto_url, receiver, tmp_path, dedupe={"backend": "dynamodb", "table": "amid-expect"}
    )
    async with AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(
                AmidProcess(
                    replace(base, source=name, metrics_port=port), tmp_path, aws_endpoint=moto_url
                )
            )
            for name, port in (("r1", _port()), ("r2", _port()))
        ]
        for amid in replicas:
            await amid.wait_ready()
        await wait_until(lambda: notices(receiver, "overdue"), timeout=TIMEOUT, what="overdue")
        for amid in replicas:
            await wait_until(lambda a=amid: overdue_shown(a), timeout=TIMEOUT, what="checked")
        codes = await asyncio.gather(*(amid.terminate() for amid in replicas))

    assert codes == [0, 0]
    assert len(notices(receiver, "overdue")) == 1
    senders = {r.source for r in receiver.requests() if r.delivered}
    assert len(senders) == 1


async def test_an_expectation_added_at_sighup_takes_effect(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    config = await config_for(sqs, moto_url, receiver, tmp_path, expectations=[])
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        replace(config, expectations=[NIGHTLY]).write(amid.config_path)
        assert amid.process is not None
        amid.process.send_signal(signal.SIGHUP)
        await wait_until(lambda: notices(receiver, "overdue"), timeout=TIMEOUT, what="overdue")
        snapshot = await amid.metrics()
        assert await amid.terminate() == 0

    assert snapshot.value("amid_config_reloads_total", outcome="success") == 1
    assert len(notices(receiver, "overdue")) == 1


def _port() -> int:
    from tests.moto_server import free_port

    return free_port()


def test_the_demo_shows_an_expectation_going_overdue_and_recovering() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "amid", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    overdue = [line for line in lines if line.startswith("[console] ⏰ demo-nightly: ")]
    recovered = [line for line in lines if line.startswith("[console] ✅ demo-nightly: ")]
    assert len(overdue) == 1 and len(recovered) == 1
    assert lines.index(overdue[0]) < lines.index(recovered[0])
    assert "  expectation   demo-nightly: overdue told 1x, recovered told 1x" in lines
