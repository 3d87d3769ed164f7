"""Slack conversations end to end (SPEC 3d): the real daemon (`amid run`'s Daemon) on moto's
SQS, a local Slack-compatible Web API server on 127.0.0.1. Two replicas on one DynamoDB
table: tests/scale/test_slack_replicas.py.

Every payload the server receives is validated with slack-sdk's Block Kit models; what a
test counts it counts in the server's channel, as a person would see it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

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
from tests.slack_api import CHANNEL, TOKEN, SlackApi

IMAGE = "ami-0123456789abcdef0"


@pytest.fixture
async def api() -> AsyncIterator[SlackApi]:
    server = await SlackApi().start()
    yield server
    await server.stop()


def slack_app(api: SlackApi, token: str = TOKEN, extra: str = "") -> str:
    return (
        "  - name: ops-slack\n"
        "    type: slack\n"
        f"    token: {token}\n"
        f"    channel: {CHANNEL}\n"
        f"    api_url: {api.api_url}\n"
        "    rate_limit: 100\n"
        f"{extra}"
    )


def empty(sqs: Any, queue: str) -> Any:
    async def check() -> bool:
        return await queue_count(sqs, queue) == 0

    return check


async def test_available_then_deregistered_is_one_parent_one_reply_and_the_parent_updated(
    sqs: Any, moto_url: str, api: SlackApi
) -> None:
    queue, _ = await make_queue(sqs)
    async with running_daemon(make_config(queue, moto_url, slack_app(api))) as daemon:
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available", IMAGE))
        await wait_for(lambda: len(api.parents()) == 1)
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("deregistered", IMAGE))
        await wait_for(lambda: len(api.of("chat.update")) == 1)
        await wait_for(empty(sqs, queue))
        registry = daemon.metrics.registry

    [parent] = api.parents()
    [reply] = api.replies(parent.ts)
    assert "deregistered" in reply.text
    assert parent.edits == 1 and "deregistered" in parent.text
    history = json.dumps(parent.blocks[-1], ensure_ascii=False)
    assert "available" in history and "→ deregistered" in history
    for action, count in (("started", 1), ("replied", 1), ("updated", 1), ("restarted", 0)):
        labels = {"handler": "ops-slack", "action": action}
        assert registry.get_sample_value("amid_slack_conversations_total", labels) == count


async def test_two_images_are_two_conversations_and_duplicates_add_nothing(
    sqs: Any, moto_url: str, api: SlackApi
) -> None:
    queue, _ = await make_queue(sqs)
    first = event_body("available", "ami-000000000000000a1")
    second = event_body("available", "ami-000000000000000b2")
    for body in (first, second, first, second, first):  # each event and its copies
        await sqs.send_message(QueueUrl=queue, MessageBody=body)
    async with running_daemon(make_config(queue, moto_url, slack_app(api))):
        await wait_for(empty(sqs, queue))

    assert len(api.parents()) == 2
    assert len(api.posts()) == 2 and not api.of("chat.update")


async def test_a_restart_on_sqlite_keeps_the_thread(
    sqs: Any, moto_url: str, api: SlackApi, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs)
    dedupe = f"backend: sqlite, path: {tmp_path / 'dedupe.sqlite3'}"
    config = make_config(queue, moto_url, slack_app(api), dedupe=dedupe)
    async with running_daemon(config):
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available", IMAGE))
        await wait_for(lambda: len(api.parents()) == 1)
        await wait_for(empty(sqs, queue))
    async with running_daemon(config):  # amid restarted
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("deregistered", IMAGE))
        await wait_for(lambda: len(api.of("chat.update")) == 1)
        await wait_for(empty(sqs, queue))

    [parent] = api.parents()
    assert len(api.replies(parent.ts)) == 1


async def test_a_deleted_parent_starts_a_new_conversation(
    sqs: Any, moto_url: str, api: SlackApi
) -> None:
    queue, _ = await make_queue(sqs)
    async with running_daemon(make_config(queue, moto_url, slack_app(api))) as daemon:
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available", IMAGE))
        await wait_for(lambda: len(api.parents()) == 1)
        [old] = api.parents()
        api.delete(old.ts)  # someone deleted the message in Slack
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("deregistered", IMAGE))
        await wait_for(lambda: len(api.parents()) == 2)
        await wait_for(empty(sqs, queue))
        registry = daemon.metrics.registry

    new = next(parent for parent in api.parents() if parent.ts != old.ts)
    assert "deregistered" in new.text and api.replies(old.ts) == []
    labels = {"handler": "ops-slack", "action": "restarted"}
    assert registry.get_sample_value("amid_slack_conversations_total", labels) == 1


async def test_invalid_auth_fails_that_handler_only_and_the_message_stays_owed(
    sqs: Any, moto_url: str, api: SlackApi, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs, max_receive=50)
    record = tmp_path / "calls.jsonl"
    handlers = slack_app(api, token="xoxb-revoked-s3cr3t") + hook_handler(record)
    async with running_daemon(make_config(queue, moto_url, handlers)) as daemon:
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("failed", IMAGE))
        await wait_for(lambda: len(api.calls) >= 3)  # the message came back, and back
        assert len(records(record)) == 1, "the hook is not called again"
        assert await queue_count(sqs, queue) == 1, "Slack is still owed the message"
        assert daemon.health.ready, "the daemon goes on"
        registry = daemon.metrics.registry

    assert api.parents() == []
    assert all(call.authorization == "Bearer xoxb-revoked-s3cr3t" for call in api.calls)
    failed = registry.get_sample_value(
        "amid_notifications_total", {"handler": "ops-slack", "outcome": "failed"}
    )
    assert failed is not None and failed >= 3


async def test_an_expectations_overdue_then_recovered_share_a_thread(
    sqs: Any, moto_url: str, api: SlackApi
) -> None:
    queue, _ = await make_queue(sqs)
    expectations = (
        "expectations:\n"
        "  - name: nightly\n"
        "    match: {detail: {State: [available]}}\n"
        "    every: 2s\n"
        "    grace: 1s\n"
        "    notify: [ops-slack]\n"
    )
    # The handler's own match takes no AMI event: only the notices reach it.
    handler = slack_app(api, extra="    match: {detail: {State: [failed]}}\n")
    config = make_config(queue, moto_url, handler, top_extra=expectations)
    async with running_daemon(config):
        await wait_for(lambda: len(api.parents()) == 1, timeout=30)
        await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available", IMAGE))
        await wait_for(lambda: len(api.of("chat.update")) >= 1, timeout=30)

    overdue = api.parents()[0]
    assert "nightly" in overdue.text
    [recovered] = api.replies(overdue.ts)
    assert "nightly" in recovered.text
    assert overdue.edits >= 1 and "recovered" in json.dumps(overdue.blocks)
