"""SQS down for 30 s: amid keeps running, backs off without spinning, reports not-ready, loses nothing.

moto keeps its queues in memory, so stopping it would lose them; the outage is
staged with a proxy between amid and moto that resets every connection while cut
(the port stays bound, as a restarted server's would be).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import CuttableProxy
from tests.helpers import (
    event_body,
    hook_handler,
    make_config,
    make_queue,
    records,
    running_daemon,
    wait_for,
)

pytestmark = pytest.mark.slow

OUTAGE = 30.0


async def readyz(port: int | None) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as r:
        return r.status


async def test_an_sqs_outage_is_ridden_out_and_every_event_delivered_after_it(
    sqs: Any, moto_url: str, sqs_proxy: CuttableProxy, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    before = [event_body("available", f"ami-{i:017x}") for i in range(5)]
    during = [event_body("failed", f"ami-{i + 100:017x}") for i in range(5)]
    for body in before:
        await sqs.send_message(QueueUrl=queue, MessageBody=body)
    config = make_config(queue, sqs_proxy.url, hook_handler(record))
    async with running_daemon(config) as daemon:
        registry = daemon.metrics.registry

        def receive_errors() -> float:
            return (
                registry.get_sample_value(
                    "amid_sqs_requests_total", {"operation": "ReceiveMessage", "outcome": "error"}
                )
                or 0.0
            )

        await wait_for(lambda: len(records(record)) == len(before))
        assert await readyz(daemon.metrics_port) == 200

        await asyncio.to_thread(sqs_proxy.cut)
        cut_at, errors_at_cut = time.monotonic(), receive_errors()
        for body in during:  # sent to SQS itself, which is up; amid cannot reach it
            await sqs.send_message(QueueUrl=queue, MessageBody=body)
        statuses = set()
        while time.monotonic() - cut_at < OUTAGE:
            statuses.add(await readyz(daemon.metrics_port))
            await asyncio.sleep(1)
        errors_during = receive_errors() - errors_at_cut
        assert daemon.health.live, "the pollers kept running through the outage"
        await asyncio.to_thread(sqs_proxy.restore)

        await wait_for(lambda: len(records(record)) == len(before) + len(during), timeout=60)
        await wait_for(lambda: _ready(daemon.metrics_port), timeout=30)

    print(f"outage {OUTAGE:g}s: {errors_during:g} failed receives, readyz seen {sorted(statuses)}")
    assert 503 in statuses, "/readyz turned 503 while SQS was unreachable"
    # Spinning would be hundreds of calls; backoff (1, 2, 4, 8, 16 s, jittered) is a handful
    # per poller: 2 pollers x 8 is a generous bound.
    assert 1 <= errors_during <= 16
    calls = records(record)
    assert sorted(c["event_id"] for c in calls) == sorted(
        json.loads(body)["id"] for body in before + during
    ), "every event sent before and during the outage was delivered once"


async def _ready(port: int | None) -> bool:
    return await readyz(port) == 200
