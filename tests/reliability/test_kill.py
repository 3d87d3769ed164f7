"""amid killed with SIGKILL while handlers run, then restarted on the same sqlite ledger.

Nothing is lost, and no handler that had succeeded (recorded in the ledger) is
called again. The only repeats allowed are deliveries under way at the kill: the
destination had the request, amid had not yet recorded the success.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    AmidConfig,
    AmidProcess,
    Behaviour,
    PacedProducer,
    Receiver,
    Webhook,
    event_stream,
    make_queue,
    queue_count,
    report,
    sqlite_recorded,
    tally,
    wait_until,
)

pytestmark = pytest.mark.slow

EVENTS = 600
MAX_IN_FLIGHT = 32
HANDLERS = (Webhook("audit"), Webhook("ops", frozenset({"failed", "disabled"})))


async def test_sigkill_and_restart_on_sqlite_lose_nothing_and_repeat_only_deliveries_under_way(
    sqs: Any, moto_url: str, receiver: Receiver, tmp_path: Path, figures_file: Path
) -> None:
    queue, dlq = await make_queue(sqs)
    ledger = tmp_path / "dedupe.sqlite3"
    stream = event_stream(EVENTS, seed=3)
    expected = stream.expected(HANDLERS)
    # Answers take a moment, so some deliveries are always under way when the kill comes.
    for handler in HANDLERS:
        receiver.script(handler.name, Behaviour(delay=0.05))

    def config(source: str) -> AmidConfig:
        return AmidConfig(
            queue,
            moto_url,
            receiver,
            HANDLERS,
            {"backend": "sqlite", "path": str(ledger)},
            source=source,
            visibility_timeout=5,
            max_in_flight=MAX_IN_FLIGHT,
        )

    began = time.monotonic()
    producer = PacedProducer(sqs, queue)
    first = AmidProcess(config("first"), tmp_path)
    second = AmidProcess(config("second"), tmp_path)
    async with producer:
        async with first:
            await first.wait_ready()
            # Events keep arriving through the kill and the restart.
            sending = producer.start(stream.bodies)
            await wait_until(
                lambda: receiver.delivered_count() >= len(expected) // 3,
                timeout=120,
                what="a third of the deliveries before the kill",
                interval=0.05,
            )
            await first.kill()
        recorded_at_kill = sqlite_recorded(ledger)

        async with second:
            await second.wait_ready()
            await sending
            await wait_until(
                lambda: expected <= set(receiver.deliveries()),
                timeout=180,
                what="every (event, handler) pair delivered",
                diagnose=second.log_tail,
            )
            await wait_until(
                lambda: _drained(sqs, queue), timeout=60, what="the queue empty (deleted, not lost)"
            )
            exit_code = await second.terminate()

    result = tally(stream, HANDLERS, receiver, time.monotonic() - began)
    sources = receiver.sources()
    by_first = {pair for pair, who in sources.items() if who[0] == "first"}
    under_way = by_first - recorded_at_kill
    report(
        result.table(
            f"SIGKILL and restart, sqlite ledger ({EVENTS} events)",
            {
                "pairs recorded at the kill": len(recorded_at_kill),
                "delivered but unrecorded at the kill": len(under_way),
                "events repeated": len(result.repeated_events),
            },
        ),
        figures_file,
    )

    assert recorded_at_kill, "the kill came after some deliveries were recorded"
    assert under_way, "the kill came while deliveries were under way"
    assert result.lost == frozenset(), "every expected pair was delivered"
    assert result.unexpected == frozenset(), "no handler got an event its match does not fit"
    assert not set(result.repeated) & recorded_at_kill, "a recorded success is never repeated"
    assert set(result.repeated) <= under_way, "repeats are deliveries under way at the kill"
    assert all(sources[pair] == ["first", "second"] for pair in result.repeated)
    assert len(result.repeated_events) <= MAX_IN_FLIGHT
    assert await queue_count(sqs, dlq) == 0, "nothing was dead-lettered"
    assert exit_code == 0, second.log_tail()


async def _drained(sqs: Any, queue: str) -> bool:
    return await queue_count(sqs, queue) == 0
