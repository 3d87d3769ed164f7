"""The SQS side: heartbeat, concurrent polling, batched deletes, the redrive-policy warning."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from amid.config import QueueConfig
from amid.metrics import Metrics
from amid.pipeline.source import Message, SqsSource
from tests.helpers import (
    event_body,
    hook_handler,
    make_config,
    make_queue,
    queue_count,
    records,
    running_daemon,
    wait_for,
)


async def _empty(sqs: Any, queue: str) -> bool:
    return await queue_count(sqs, queue) == 0


async def test_the_heartbeat_keeps_a_slow_message_invisible(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    # The hook runs for 5 s with a 2 s visibility timeout: without the heartbeat the
    # message would come back and be received a second time while the hook runs.
    config = make_config(
        queue,
        moto_url,
        hook_handler(record, mode="sleep:5"),
        queue_extra="  max_in_flight: 4",
    )
    config = config.model_copy(
        update={"queue": config.queue.model_copy(update={"visibility_timeout": 2.0})}
    )
    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))

    async with running_daemon(config) as daemon:
        await wait_for(lambda: _empty(sqs, queue), timeout=30)
        registry = daemon.metrics.registry

    assert len(records(record)) == 1
    assert registry.get_sample_value("amid_messages_received_total") == 1
    assert (
        registry.get_sample_value(
            "amid_sqs_requests_total",
            {"operation": "ChangeMessageVisibilityBatch", "outcome": "success"},
        )
        or 0
    ) >= 1


async def test_polling_continues_while_a_slow_handler_runs(sqs: Any, moto_url: str, tmp_path: Path):
    queue, _ = await make_queue(sqs)
    slow, fast = tmp_path / "slow.jsonl", tmp_path / "fast.jsonl"
    handlers = hook_handler(
        slow, mode="sleep:8", name="slow", extra="    match: {detail: {State: [failed]}}\n"
    ) + hook_handler(fast, name="fast", extra="    match: {detail: {State: [available]}}\n")
    config = make_config(queue, moto_url, handlers)

    async with running_daemon(config):
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))
        await wait_for(slow.with_name(slow.name + ".started").exists)
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available"))
        await wait_for(lambda: len(records(fast)) == 1, timeout=6)
        assert records(slow) == [], "the fast event was handled while the slow hook still ran"
        await wait_for(lambda: len(records(slow)) == 1, timeout=20)


async def test_a_queue_without_redrive_policy_is_warned_about_at_start(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue = (await sqs.create_queue(QueueName="no-dlq"))["QueueUrl"]
    config = make_config(queue, moto_url, hook_handler(tmp_path / "calls.jsonl"))
    with capture_logs() as logs:
        async with running_daemon(config):
            await wait_for(lambda: any("redrive policy" in e["event"] for e in logs), timeout=10)
    warning = next(e for e in logs if "redrive policy" in e["event"])
    assert warning["log_level"] == "warning"


class _RefusingSqs:
    """Answers DeleteMessageBatch with one failed entry: a pure unit test of the batcher."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, str]]] = []

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> Any:
        self.calls.append(Entries)
        return {
            "Successful": [{"Id": e["Id"]} for e in Entries[1:]],
            "Failed": [{"Id": Entries[0]["Id"], "Code": "ReceiptHandleIsInvalid"}],
        }


async def test_concurrent_deletes_share_one_batch_call_and_per_entry_failures_are_reported():
    client = _RefusingSqs()
    metrics = Metrics()
    queue = QueueConfig(url="http://127.0.0.1:1/123456789012/q")
    messages = [Message(f"m{i}", f"r{i}", "{}", 1) for i in range(5)]
    async with SqsSource(client, queue, metrics) as source:
        results = await asyncio.gather(*(source.delete(m) for m in messages))

    assert len(client.calls) == 1
    assert [e["ReceiptHandle"] for e in client.calls[0]] == [m.receipt_handle for m in messages]
    assert results == [False, True, True, True, True]
    assert metrics.registry.get_sample_value("amid_messages_deleted_total") == 4


def test_redelivery_delay_doubles_per_receive_and_is_capped():
    from amid.pipeline.process import Pipeline
    from amid.store.memory import MemoryStore

    config = make_config("http://127.0.0.1:1/1/q", "http://127.0.0.1:1", hook_handler(Path("x")))
    config = config.model_copy(
        update={
            "queue": config.queue.model_copy(
                update={
                    "redelivery": config.queue.redelivery.model_copy(
                        update={"initial": 10.0, "max": 300.0}
                    )
                }
            )
        }
    )
    pipeline = Pipeline(ledger=MemoryStore(60), metrics=Metrics(), owner="o", lease=30)
    delays = [pipeline.redelivery_delay(config, count) for count in (1, 2, 3, 5, 6, 9)]
    assert delays == [10, 20, 40, 160, 300, 300]
