"""amid against the stack deploy/cloudformation/amid.yaml makes, deployed into moto's server.

The template is created with CloudFormation's API; an AMI event is put through EventBridge,
whose rule fills the stack's queue; the real daemon reads that queue, dedupes in the stack's
DynamoDB table and delivers to an `sns` handler on the stack's topic and to a shell hook.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amid.tools.offline import synthetic_event
from tests.deploy.test_deploy_checks import _deploy
from tests.helpers import hook_handler, make_config, queue_count, records, running_daemon, wait_for

IMAGE_ID = "ami-0fedcba9876543210"

# moto's CloudFormation cannot create queue policies (the stack's QueuePolicy): it warns and
# skips it; its SQS does not enforce queue policies anyway.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning")


@pytest.fixture
def stack(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The stack's outputs; every AWS client of the test and of amid goes to moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return _deploy(enable_table=True)


async def _topic_reader(sns: Any, sqs: Any, topic_arn: str) -> str:
    """A queue subscribed to the stack's topic: what amid publishes lands there."""
    queue_url: str = (await sqs.create_queue(QueueName="topic-reader"))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    await sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return queue_url


async def _drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message on the queue (received and deleted)."""
    messages: list[dict[str, Any]] = []
    while True:
        answer = await sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        batch = answer.get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)
        for message in batch:
            await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


async def test_an_ami_event_through_eventbridge_reaches_both_handlers_once(
    stack: dict[str, str],
    moto_url: str,
    sqs: Any,
    sns: Any,
    events_client: Any,
    tmp_path: Path,
) -> None:
    published = await _topic_reader(sns, sqs, stack["TopicArn"])
    record = tmp_path / "hook.jsonl"
    handlers = (
        f"  - name: topic\n    type: sns\n    topic_arn: {stack['TopicArn']}\n"
        f"    endpoint_url: {moto_url}\n" + hook_handler(record)
    )
    config = make_config(
        stack["QueueUrl"],
        moto_url,
        handlers,
        dedupe=f"backend: dynamodb, table: {stack['TableName']}",
    )
    detail = synthetic_event("failed", IMAGE_ID)["detail"]

    answer = await events_client.put_events(
        Entries=[
            {
                "Source": "aws.ec2",
                "DetailType": "EC2 AMI State Change",
                "Detail": json.dumps(detail),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    assert await queue_count(sqs, stack["QueueUrl"]) == 1, "the stack's rule fills its queue"

    async with running_daemon(config):
        await wait_for(lambda: len(records(record)) >= 1)
        await wait_for(lambda: _empty(sqs, stack["QueueUrl"]))
        notifications = await _drain(sqs, published)

    calls = records(record)
    assert [(c["image_id"], c["state"]) for c in calls] == [(IMAGE_ID, "failed")]
    assert len(notifications) == 1, "published to the stack's topic exactly once"
    envelope = json.loads(notifications[0]["Body"])
    event = json.loads(envelope["Message"])
    assert event["id"] == calls[0]["event_id"], "both handlers got the same EventBridge event"
    assert (event["source"], event["detail-type"]) == ("aws.ec2", "EC2 AMI State Change")
    assert event["detail"]["ImageId"] == IMAGE_ID
    assert await queue_count(sqs, stack["QueueUrl"]) == 0
    assert await queue_count(sqs, stack["DeadLetterQueueUrl"]) == 0
    assert await _drain(sqs, published) == [], "and nothing more was published after the stop"


async def _empty(sqs: Any, queue_url: str) -> bool:
    return await queue_count(sqs, queue_url) == 0
