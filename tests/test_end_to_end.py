"""The delivery path end to end: moto's SQS on 127.0.0.1, the real daemon, real hook processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from amid.tools.offline import synthetic_event
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

STATES = ("available", "failed", "deregistered", "disabled")


async def test_each_state_reaches_the_hook_exactly_once(sqs: Any, moto_url: str, tmp_path: Path):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    events = [synthetic_event(state, f"ami-{i:017x}") for i, state in enumerate(STATES)]
    for event in events:
        await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))

    async with running_daemon(make_config(queue, moto_url, hook_handler(record))):
        await wait_for(lambda: len(records(record)) == 4)
        await wait_for(_empty(sqs, queue))

    calls = records(record)
    assert sorted(c["event_id"] for c in calls) == sorted(e["id"] for e in events)
    assert {c["state"] for c in calls} == set(STATES)
    assert all(c["stdin_id"] == c["event_id"] for c in calls), "stdin carries the event JSON"
    assert all(c["argv"] == [c["image_id"]] for c in calls), "argument templates are rendered"


def _empty(sqs: Any, queue: str) -> Any:
    async def check() -> bool:
        return await queue_count(sqs, queue) == 0

    return check


async def test_duplicate_copies_call_nothing_and_are_deleted(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    body = event_body("available")
    for _ in range(4):  # the event and three duplicate copies
        await sqs.send_message(QueueUrl=queue, MessageBody=body)

    async with running_daemon(make_config(queue, moto_url, hook_handler(record))) as daemon:
        await wait_for(_empty(sqs, queue))
        registry = daemon.metrics.registry

    assert len(records(record)) == 1
    assert (
        registry.get_sample_value(
            "amid_events_total", {"state": "available", "outcome": "duplicate"}
        )
        == 3
    )
    assert registry.get_sample_value("amid_messages_deleted_total") == 4


async def test_an_sns_wrapped_event_is_handled(sqs: Any, moto_url: str, tmp_path: Path):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    event = synthetic_event("failed", "ami-0000000000000000f")
    envelope = {
        "Type": "Notification",
        "MessageId": "4c4b8d62-0000-0000-0000-000000000000",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ami-events",
        "Message": json.dumps(event),
        "Timestamp": "2026-11-24T00:00:00.000Z",
    }
    await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(envelope))

    async with running_daemon(make_config(queue, moto_url, hook_handler(record))):
        await wait_for(_empty(sqs, queue))

    assert [c["event_id"] for c in records(record)] == [event["id"]]


async def test_invalid_messages_stay_and_reach_the_dead_letter_queue(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, dlq = await make_queue(sqs, max_receive=2)
    no_detail = {"id": "x", "detail-type": "EC2 AMI State Change", "source": "aws.ec2"}
    for body in ("not json", "[1, 2]", json.dumps({"detail": {}}), json.dumps(no_detail)):
        await sqs.send_message(QueueUrl=queue, MessageBody=body)

    async with running_daemon(
        make_config(queue, moto_url, hook_handler(tmp_path / "calls.jsonl"))
    ) as daemon:
        await wait_for(lambda: _count_is(sqs, dlq, 4), timeout=30)
        registry = daemon.metrics.registry

    assert await queue_count(sqs, queue) == 0
    for reason in ("not_json", "not_object", "no_id", "no_detail"):
        assert (
            registry.get_sample_value("amid_messages_invalid_total", {"reason": reason}) or 0
        ) >= 1
    assert registry.get_sample_value("amid_messages_deleted_total") == 0


async def _count_is(sqs: Any, url: str, expected: int) -> bool:
    return await queue_count(sqs, url) == expected


async def test_invalid_messages_are_deleted_with_on_invalid_delete(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, dlq = await make_queue(sqs)
    await sqs.send_message(QueueUrl=queue, MessageBody="not json")
    config = make_config(
        queue, moto_url, hook_handler(tmp_path / "calls.jsonl"), queue_extra="  on_invalid: delete"
    )
    async with running_daemon(config) as daemon:
        await wait_for(_empty(sqs, queue))
        registry = daemon.metrics.registry

    assert registry.get_sample_value("amid_messages_invalid_total", {"reason": "not_json"}) == 1
    assert registry.get_sample_value("amid_messages_deleted_total") == 1
    assert await queue_count(sqs, dlq) == 0


async def test_an_event_of_another_detail_type_is_ignored_and_deleted(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    other = synthetic_event("available")
    other["detail-type"] = "EC2 Instance State-change Notification"
    await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(other))

    async with running_daemon(make_config(queue, moto_url, hook_handler(record))) as daemon:
        await wait_for(_empty(sqs, queue))
        registry = daemon.metrics.registry

    assert records(record) == []
    assert (
        registry.get_sample_value("amid_events_total", {"state": "other", "outcome": "ignored"})
        == 1
    )


async def test_a_hook_exiting_75_twice_then_0_is_delivered_once(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))

    config = make_config(queue, moto_url, hook_handler(record, mode="tempfail:2"))
    async with running_daemon(config) as daemon:
        await wait_for(_empty(sqs, queue))
        registry = daemon.metrics.registry

    assert len(records(record)) == 1
    attempts = {
        outcome: registry.get_sample_value(
            "amid_handler_attempts_total", {"handler": "hook", "outcome": outcome}
        )
        for outcome in ("success", "error")
    }
    assert attempts == {"success": 1, "error": 2}
    assert (
        registry.get_sample_value(
            "amid_notifications_total", {"handler": "hook", "outcome": "delivered"}
        )
        == 1
    )


async def test_a_failed_handler_is_retried_on_redelivery_without_repeating_the_others(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs, max_receive=10)
    good, flaky = tmp_path / "good.jsonl", tmp_path / "flaky.jsonl"
    handlers = hook_handler(good, name="good") + hook_handler(
        flaky, mode="tempfail:4", name="flaky", extra="    retry: {attempts: 2}\n"
    )
    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed"))

    async with running_daemon(make_config(queue, moto_url, handlers)) as daemon:
        await wait_for(_empty(sqs, queue))
        registry = daemon.metrics.registry

    # flaky: 2 tries on the first delivery, 2 on the second, success on the third.
    assert len(records(flaky)) == 1
    assert len(records(good)) == 1, "the handler that succeeded is not called again"
    assert (
        registry.get_sample_value("amid_events_total", {"state": "failed", "outcome": "retry"}) == 2
    )


async def test_a_restart_with_the_sqlite_store_does_not_call_the_hook_again(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    body = event_body("available")
    dedupe = f"backend: sqlite, path: {tmp_path / 'dedupe.sqlite3'}"
    config = make_config(queue, moto_url, hook_handler(record), dedupe=dedupe)

    await sqs.send_message(QueueUrl=queue, MessageBody=body)
    async with running_daemon(config):
        await wait_for(_empty(sqs, queue))

    await sqs.send_message(QueueUrl=queue, MessageBody=body)  # redelivered after the restart
    async with running_daemon(config) as daemon:
        await wait_for(_empty(sqs, queue))
        registry = daemon.metrics.registry

    assert len(records(record)) == 1
    assert (
        registry.get_sample_value(
            "amid_events_total", {"state": "available", "outcome": "duplicate"}
        )
        == 1
    )


async def test_the_metrics_endpoint_shows_what_happened(sqs: Any, moto_url: str, tmp_path: Path):
    queue, _ = await make_queue(sqs)
    body = event_body("disabled")
    for message in (body, body, "garbage"):
        await sqs.send_message(QueueUrl=queue, MessageBody=message)
    config = make_config(
        queue, moto_url, hook_handler(tmp_path / "calls.jsonl"), queue_extra="  on_invalid: delete"
    )

    async with running_daemon(config) as daemon:
        await wait_for(_empty(sqs, queue))
        url = f"http://127.0.0.1:{daemon.metrics_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as response:
                text = await response.text()
            async with http.get(f"{url}/healthz") as response:
                health = response.status
            async with http.get(f"{url}/readyz") as response:
                ready = response.status

    assert health == 200
    assert ready == 200
    lines = set(text.splitlines())
    assert 'amid_events_total{outcome="handled",state="disabled"} 1.0' in lines
    assert 'amid_events_total{outcome="duplicate",state="disabled"} 1.0' in lines
    assert 'amid_messages_invalid_total{reason="not_json"} 1.0' in lines
    assert "amid_messages_received_total 3.0" in lines
    assert "amid_messages_deleted_total 3.0" in lines
    assert 'amid_notifications_total{handler="hook",outcome="delivered"} 1.0' in lines
    assert 'amid_build_info{version="0.1.0"} 1.0' in lines
