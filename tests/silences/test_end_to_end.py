"""Silences end to end: `amid run` against moto, webhooks to a local receiver, real commands.

Two webhooks, `ops` (the people) and `audit` (the record). Every wait polls
with a deadline far above the expected time; what a test counts, it counts
after the processes have stopped, so nothing can arrive afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from amid.store.dynamodb import create_table
from amid.tools.offline import synthetic_event
from tests.harness import (
    AmidConfig,
    AmidProcess,
    Receiver,
    Webhook,
    make_queue,
    queue_count,
    report,
    sqlite_recorded,
    wait_until,
)
from tests.moto_server import free_port

pytestmark = pytest.mark.slow

OPS, AUDIT = Webhook("ops"), Webhook("audit")
CLEANUP_ACCOUNT, OTHER_ACCOUNT = "111122223333", "444455556666"
HELD_IMAGE, OTHER_IMAGE = "ami-0aaaaaaaaaaaaaaa1", "ami-0bbbbbbbbbbbbbbb2"
TIMEOUT = 60.0


@pytest.fixture
def receiver() -> AsyncIterator[Receiver]:
    with Receiver() as server:
        yield server


def got(receiver: Receiver, handler: str) -> set[str]:
    return {r.event_id for r in receiver.requests() if r.handler == handler and r.delivered}


async def send(sqs: Any, queue: str, event: dict[str, Any]) -> str:
    await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))
    return str(event["id"])


async def drained(sqs: Any, queue: str) -> None:
    async def empty() -> bool:
        return await queue_count(sqs, queue) == 0

    await wait_until(empty, timeout=TIMEOUT, what="every message deleted")


async def test_a_config_silence_holds_one_accounts_deregistrations_from_one_handler(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs, "silence-config")
    cleanup = {
        "name": "sunday-cleanup",
        "match": {"account": [CLEANUP_ACCOUNT], "detail": {"State": ["deregistered"]}},
        "schedule": "* * * * *",
        "duration": "2h",  # each window outlasts the next start: active whenever amid looks
        "handlers": ["ops"],
    }
    config = AmidConfig(
        queue_url=queue,
        sqs_endpoint=moto_url,
        receiver=receiver,
        handlers=[OPS, AUDIT],
        dedupe={"backend": "sqlite", "path": str(tmp_path / "amid.sqlite3")},
        silences=[cleanup],
    )
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        held = await send(
            sqs, queue, synthetic_event("deregistered", HELD_IMAGE, account=CLEANUP_ACCOUNT)
        )
        others = {
            await send(
                sqs, queue, synthetic_event("deregistered", OTHER_IMAGE, account=OTHER_ACCOUNT)
            ),
            await send(
                sqs, queue, synthetic_event("available", HELD_IMAGE, account=CLEANUP_ACCOUNT)
            ),
        }
        await wait_until(lambda: len(got(receiver, "audit")) == 3, timeout=TIMEOUT, what="audit")
        await drained(sqs, queue)
        snapshot = await amid.metrics()
        assert await amid.terminate() == 0

    assert got(receiver, "audit") == {held, *others}
    assert got(receiver, "ops") == others
    assert [r for r in receiver.requests() if r.event_id == held and r.handler == "ops"] == []
    assert (held, "ops") in sqlite_recorded(tmp_path / "amid.sqlite3"), "recorded as held"
    assert snapshot.value("amid_notifications_total", handler="ops", outcome="silenced") == 1
    assert snapshot.value("amid_notifications_total", handler="audit", outcome="silenced") == 0
    assert snapshot.value("amid_silences_active") == 1
    assert snapshot.value("amid_events_total", outcome="handled") == 3


async def test_a_silence_added_on_one_replica_holds_the_image_on_another_until_expired(
    sqs: Any, dynamodb: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    """`add --image-id` through replica r1's config; r2, sharing the DynamoDB table, holds the
    image for `ops`; `list` shows the silence; `expire` lifts it; a copy of the held event,
    redelivered after that, sends nothing."""
    queue, _ = await make_queue(sqs, "silence-replicas")
    await create_table(dynamodb, "amid-silences")
    base = AmidConfig(
        queue_url=queue,
        sqs_endpoint=moto_url,
        receiver=receiver,
        handlers=[OPS, AUDIT],
        dedupe={"backend": "dynamodb", "table": "amid-silences"},
    )
    async with AsyncExitStack() as stack:
        r1, r2 = [
            await stack.enter_async_context(
                AmidProcess(
                    replace(base, source=name, metrics_port=free_port()),
                    tmp_path,
                    aws_endpoint=moto_url,
                )
            )
            for name in ("r1", "r2")
        ]
        for replica in (r1, r2):
            await replica.wait_ready()

        async def active_on_r2(count: int) -> bool:
            return (await r2.metrics()).value("amid_silences_active") == count

        added_at = time.monotonic()
        added = r1.command(
            "silence", "add", "--image-id", HELD_IMAGE, "--handler", "ops", "--for", "20m",
            "--comment", "rebuilding  the golden image", "--author", "alice",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.strip()
        await wait_until(lambda: active_on_r2(1), timeout=TIMEOUT, what="r2 sees the silence")
        seen_after = time.monotonic() - added_at
        assert await r1.terminate() == 0  # from here on r2 alone handles events

        held_event = synthetic_event("deregistered", HELD_IMAGE)
        held = await send(sqs, queue, held_event)
        other = await send(sqs, queue, synthetic_event("deregistered", OTHER_IMAGE))
        await wait_until(lambda: {held, other} <= got(receiver, "audit"), timeout=TIMEOUT, what="")
        await drained(sqs, queue)
        assert got(receiver, "ops") == {other}

        listed = r2.command("silence", "list")
        assert listed.returncode == 0, listed.stderr
        header, line = listed.stdout.splitlines()
        assert header.split() == ["ID", "MATCH", "HANDLERS", "UNTIL", "AUTHOR", "COMMENT"]
        columns = line.split(maxsplit=5)
        assert columns[:3] == [silence_id, f'{{"detail":{{"ImageId":["{HELD_IMAGE}"]}}}}', "ops"]
        until = datetime.fromisoformat(columns[3].replace("Z", "+00:00"))
        assert abs(until.timestamp() - (time.time() + 20 * 60)) < 120
        assert columns[4:] == ["alice", "rebuilding the golden image"]

        expired = r2.command("silence", "expire", silence_id)
        assert expired.returncode == 0, expired.stderr
        await wait_until(lambda: active_on_r2(0), timeout=TIMEOUT, what="r2 sees it expired")
        after = await send(sqs, queue, synthetic_event("deregistered", HELD_IMAGE))
        await send(sqs, queue, held_event)  # a copy of the silenced event, redelivered
        await wait_until(lambda: after in got(receiver, "ops"), timeout=TIMEOUT, what="lifted")
        await drained(sqs, queue)
        snapshot = await r2.metrics()
        assert await r2.terminate() == 0

    assert got(receiver, "ops") == {other, after}
    assert [r.handler for r in receiver.requests() if r.event_id == held] == ["audit"]
    assert snapshot.value("amid_notifications_total", handler="ops", outcome="silenced") == 1
    assert snapshot.value("amid_events_total", outcome="duplicate") == 1
    ended = r2.command("silence", "list", "--all")
    assert silence_id in ended.stdout and "(ended)" in ended.stdout
    report(f"silences: r2 held the image {seen_after:.1f}s after `silence add` on r1 (SPEC: 15s)")


async def test_an_expectation_held_by_a_silence_notifies_once_after_it_ends(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs, "silence-expect")
    # A window that began at the start of this minute (before amid starts) and ends 30 s
    # from now; the expectation falls due 3 s after amid starts, inside it.
    now = datetime.now(UTC)
    ends = now.timestamp() + 30
    began = now.replace(second=0, microsecond=0)
    freeze = {
        "name": "release-freeze",
        "expectations": ["nightly"],
        "schedule": f"{began.minute} {began.hour} * * *",
        "duration": round(ends - began.timestamp(), 3),
    }
    nightly = {"name": "nightly", "every": "2s", "grace": "1s", "notify": ["ops"]}
    config = AmidConfig(
        queue_url=queue,
        sqs_endpoint=moto_url,
        receiver=receiver,
        handlers=[Webhook("ops", states=frozenset({"failed"}))],
        dedupe={"backend": "sqlite", "path": str(tmp_path / "amid.sqlite3")},
        expectations=[nightly],
        silences=[freeze],
    )

    def overdue() -> list[float]:
        return [
            time.time() - (time.monotonic() - r.at)  # the receiver's clock is monotonic
            for r in receiver.requests()
            if r.event_id.startswith("expectation#nightly#") and r.event_id.endswith("#overdue")
        ]

    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()

        async def overdue_shown() -> bool:
            return (await amid.metrics()).value("amid_expectation_overdue") == 1

        await wait_until(overdue_shown, timeout=TIMEOUT, what="the episode open")
        assert overdue() == [], "held while the silence is active"
        assert time.time() < ends, "amid took too long to start for this test to mean anything"
        await wait_until(overdue, timeout=TIMEOUT, what="the notice after the silence")

        async def told() -> bool:
            snapshot = await amid.metrics()
            return snapshot.value("amid_expectation_notifications_total", status="overdue") == 1

        await wait_until(told, timeout=TIMEOUT, what="the notice recorded as told")
        assert await amid.terminate() == 0

    (arrived,) = overdue()
    assert arrived >= ends
    report(f"silences: the held overdue notice went out {arrived - ends:.3f}s after the silence")
