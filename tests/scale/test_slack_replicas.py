"""Two `amid run` replicas (the Daemon, twice, in one loop) on one queue and one DynamoDB
table, and a burst of one image's events: exactly one Slack conversation (SPEC 3d).

The table is served by tests/scale/dynamodb_server.py, whose conditional writes are atomic
as DynamoDB's are (moto's threaded server can interleave two on one item).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from amid.store.dynamodb import create_table
from tests.helpers import event_body, make_config, make_queue, queue_count, running_daemon, wait_for
from tests.scale.conftest import DynamoDBServer
from tests.slack_api import SlackApi
from tests.test_slack_conversations_end_to_end import IMAGE, slack_app


@pytest.fixture
async def api() -> AsyncIterator[SlackApi]:
    server = await SlackApi().start()
    yield server
    await server.stop()


async def test_two_replicas_and_a_burst_of_one_image_start_exactly_one_conversation(
    sqs: Any,
    moto_url: str,
    dynamodb_server: DynamoDBServer,
    ledger_dynamodb: Any,
    api: SlackApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_server.url)
    await create_table(ledger_dynamodb, "amid-conversations")
    queue, _ = await make_queue(sqs)
    config = make_config(
        queue,
        moto_url,
        slack_app(api),
        dedupe="backend: dynamodb, table: amid-conversations",
        queue_extra="  max_messages: 2",  # so both replicas take part in the burst
    )
    states = ["available", "disabled", "available", "deregistered", "failed", "available"]
    bodies = [event_body(state, IMAGE) for state in states]
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_daemon(config))
        await stack.enter_async_context(running_daemon(config))
        await asyncio.gather(
            *(sqs.send_message(QueueUrl=queue, MessageBody=body) for body in bodies + bodies[:2])
        )

        async def drained() -> bool:
            return await queue_count(sqs, queue) == 0

        await wait_for(drained, timeout=60)

    [parent] = api.parents()
    assert len(api.replies(parent.ts)) == len(states) - 1, "each later event replied once"
    assert len(api.of("chat.update")) == len(states) - 1
