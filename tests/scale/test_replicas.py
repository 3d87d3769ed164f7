"""Three `amid run` replicas on one queue and one DynamoDB ledger (issue 6).

Events arrive as one, two or three copies; one handler fails at random. Every
(event, handler) pair is delivered exactly once, nothing stays on the queue and
nothing is dead-lettered. With one replica killed by SIGKILL half-way nothing
is lost, and the only repeats are the killed replica's deliveries under way
at the kill (the destination had them, the ledger had not recorded them).
"""

from __future__ import annotations

import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amid.store.dynamodb import create_table
from tests.harness import (
    AmidConfig,
    AmidProcess,
    Behaviour,
    PacedProducer,
    Pair,
    Receiver,
    Tally,
    Webhook,
    dynamodb_recorded,
    event_stream,
    make_queue,
    owner_prefix,
    queue_count,
    report,
    tally,
    wait_until,
    where_missing,
)

pytestmark = pytest.mark.slow

EVENTS = int(os.environ.get("AMID_SCALE_EVENTS", "2000"))
REPLICAS = ("r1", "r2", "r3")
MAX_IN_FLIGHT = 16
# Also the ledger lease. Short, so a killed replica's messages come back soon; long enough
# that a heartbeat on a loaded 2-core CI machine still renews leases before they lapse.
VISIBILITY_TIMEOUT = 10
TABLE = "amid-scale"
HANDLERS = (Webhook("audit"), Webhook("flaky"))


@dataclass(frozen=True)
class Run:
    """What a replicas run left behind, for the assertions."""

    result: Tally
    sources: dict[Pair, list[str]]  # per delivered pair, the replicas that delivered it, in order
    recorded_by_killed: set[Pair]  # what the killed replica's ledger records held at the kill
    exit_codes: dict[str, int]
    dead_lettered: int
    left_on_queue: int


async def _run_replicas(
    sqs: Any,
    dynamodb: Any,
    moto_url: str,
    receiver: Receiver,
    tmp_path: Path,
    *,
    kill: str | None,
    seed: int,
) -> Run:
    queue, dlq = await make_queue(sqs, max_receive=10)
    await create_table(dynamodb, TABLE)
    # Each answer takes 20 ms, as a real destination's would: a kill finds work under way.
    receiver.script("audit", Behaviour(delay=0.02))
    receiver.script("flaky", Behaviour(delay=0.02, fail=0.1))
    stream = event_stream(EVENTS, seed=seed, copy_rate=0.3)
    expected = stream.expected(HANDLERS)
    replicas = {
        name: AmidProcess(
            AmidConfig(
                queue,
                moto_url,
                receiver,
                HANDLERS,
                {"backend": "dynamodb", "table": TABLE},
                source=name,
                visibility_timeout=VISIBILITY_TIMEOUT,
                max_in_flight=MAX_IN_FLIGHT,
            ),
            tmp_path,
            # The ledger's client finds its server through AWS_ENDPOINT_URL.
            aws_endpoint=dynamodb.meta.endpoint_url,
        )
        for name in REPLICAS
    }
    recorded_by_killed: set[Pair] = set()
    began = time.monotonic()
    async with AsyncExitStack() as stack:
        for replica in replicas.values():
            await stack.enter_async_context(replica)
        for replica in replicas.values():
            await replica.wait_ready()
        producer = await stack.enter_async_context(PacedProducer(sqs, queue))
        sending = producer.start(stream.bodies)
        if kill is not None:
            await wait_until(
                lambda: receiver.delivered_count() >= len(expected) // 2,
                timeout=300,
                what="half the deliveries before the kill",
                interval=0.05,
            )
            victim = replicas[kill]
            assert victim.process is not None
            await victim.kill()
            # Read at once: the victim's leases hold its events for another visibility_timeout.
            recorded_by_killed = await dynamodb_recorded(
                dynamodb, TABLE, owner_prefix(victim.process.pid)
            )
        await sending
        await wait_until(
            lambda: expected <= set(receiver.deliveries()),
            timeout=240,
            what="every (event, handler) pair delivered",
            diagnose=lambda: where_missing(
                expected - set(receiver.deliveries()), sqs, queue, dlq, replicas, producer.sent
            ),
        )
        await wait_until(lambda: _drained(sqs, queue), timeout=60, what="the queue empty")
        exit_codes = {
            name: await replica.terminate() for name, replica in replicas.items() if name != kill
        }
    return Run(
        result=tally(stream, HANDLERS, receiver, time.monotonic() - began),
        sources=receiver.sources(),
        recorded_by_killed=recorded_by_killed,
        exit_codes=exit_codes,
        dead_lettered=await queue_count(sqs, dlq),
        left_on_queue=await queue_count(sqs, queue),
    )


async def _drained(sqs: Any, queue: str) -> bool:
    return await queue_count(sqs, queue) == 0


async def test_three_replicas_deliver_every_pair_exactly_once_through_copies_and_failures(
    sqs: Any,
    ledger_dynamodb: Any,
    moto_url: str,
    receiver: Receiver,
    tmp_path: Path,
    figures_file: Path,
) -> None:
    run = await _run_replicas(sqs, ledger_dynamodb, moto_url, receiver, tmp_path, kill=None, seed=6)
    by_replica = {
        name: sum(1 for who in run.sources.values() if who[0] == name) for name in REPLICAS
    }
    report(
        run.result.table(
            f"{len(REPLICAS)} replicas, DynamoDB ledger, 30% copies, 10% handler errors",
            {f"pairs delivered by {name}": count for name, count in by_replica.items()},
        ),
        figures_file,
    )

    assert run.result.lost == frozenset(), "every (event, handler) pair was delivered"
    assert run.result.repeated == {}, "no pair was delivered twice"
    assert run.result.unexpected == frozenset()
    assert run.result.requests > run.result.deliveries, "the flaky handler did fail and retry"
    assert all(by_replica.values()), "every replica took part"
    assert (run.left_on_queue, run.dead_lettered) == (0, 0)
    assert set(run.exit_codes.values()) == {0}


async def test_a_replica_killed_mid_run_loses_nothing_and_repeats_only_its_deliveries_under_way(
    sqs: Any,
    ledger_dynamodb: Any,
    moto_url: str,
    receiver: Receiver,
    tmp_path: Path,
    figures_file: Path,
) -> None:
    killed = "r2"
    run = await _run_replicas(
        sqs, ledger_dynamodb, moto_url, receiver, tmp_path, kill=killed, seed=7
    )
    by_killed = {pair for pair, who in run.sources.items() if who[0] == killed}
    under_way = by_killed - run.recorded_by_killed
    report(
        run.result.table(
            f"{len(REPLICAS)} replicas, DynamoDB ledger, {killed} killed (SIGKILL) half-way",
            {
                f"pairs delivered by {killed}": len(by_killed),
                f"of which recorded in the ledger by {killed}": len(run.recorded_by_killed),
                "delivered but unrecorded at the kill": len(under_way),
                "events repeated": len(run.result.repeated_events),
                f"{killed} max_in_flight": MAX_IN_FLIGHT,
            },
        ),
        figures_file,
    )

    assert by_killed, f"{killed} delivered before it was killed"
    assert run.result.lost == frozenset(), "nothing was lost"
    assert run.result.unexpected == frozenset()
    assert not set(run.result.repeated) & run.recorded_by_killed, "recorded pairs never repeat"
    assert set(run.result.repeated) <= under_way, "repeats are deliveries under way at the kill"
    assert all(run.sources[pair][0] == killed for pair in run.result.repeated)
    assert all(count == 2 for count in run.result.repeated.values())
    assert len(run.result.repeated_events) <= MAX_IN_FLIGHT
    assert (run.left_on_queue, run.dead_lettered) == (0, 0)
    assert set(run.exit_codes.values()) == {0}
