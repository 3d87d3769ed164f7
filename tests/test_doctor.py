"""`amid doctor` against moto: a correct set-up passes, each common mistake is named with its fix."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from amid.aws import AwsClients
from amid.config import Config, parse_config
from amid.store.dynamodb import create_table
from amid.tools.doctor import diagnose, report

AMI_PATTERN = {"source": ["aws.ec2"], "detail-type": ["EC2 AMI State Change"]}


@dataclass
class Setup:
    queue_url: str
    queue_arn: str
    rule_arn: str
    topic_arn: str
    table: str = "amid-dedupe"


async def build(sqs: Any, events: Any, sns: Any, dynamodb: Any, **queue_attributes: str) -> Setup:
    """What deploy/cloudformation/amid.yaml creates: queue + DLQ, rule, policy, topic, table."""
    dlq = (await sqs.create_queue(QueueName="amid-dlq"))["QueueUrl"]
    dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    attributes = {
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        "MessageRetentionPeriod": "345600",
        **queue_attributes,
    }
    queue = (await sqs.create_queue(QueueName="amid", Attributes=attributes))["QueueUrl"]
    queue_arn = (await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    rule_arn = (
        await events.put_rule(
            Name="amid-ami", EventPattern=json.dumps(AMI_PATTERN), State="ENABLED"
        )
    )["RuleArn"]
    await events.put_targets(Rule="amid-ami", Targets=[{"Id": "q", "Arn": queue_arn}])
    await sqs.set_queue_attributes(
        QueueUrl=queue, Attributes={"Policy": queue_policy(queue_arn, rule_arn)}
    )
    topic_arn = (await sns.create_topic(Name="ami-audit"))["TopicArn"]
    await create_table(dynamodb, "amid-dedupe")
    return Setup(queue, queue_arn, rule_arn, topic_arn)


def queue_policy(queue_arn: str, rule_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                }
            ],
        }
    )


def config_for(setup: Setup, moto_url: str, ttl: str = "7d") -> Config:
    return parse_config(
        f"""
queue: {{url: "{setup.queue_url}", region: us-east-1}}
dedupe: {{backend: dynamodb, table: {setup.table}, ttl: {ttl}}}
handlers:
  - {{name: audit, type: sns, topic_arn: "{setup.topic_arn}"}}
""",
        env={},
    )


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)


async def run_doctor(config: Config) -> tuple[str, bool]:
    async with AwsClients() as aws:
        return report(await diagnose(config, aws))


async def test_a_correct_set_up_passes_every_check(
    aws_env: None, moto_url: str, sqs: Any, events_client: Any, sns: Any, dynamodb: Any
):
    setup = await build(sqs, events_client, sns, dynamodb)
    text, healthy = await run_doctor(config_for(setup, moto_url))
    assert healthy, text
    assert "8 checks, 0 problem(s)" in text


async def set_attributes(setup: Setup, sqs: Any, **attributes: str) -> None:
    """SetQueueAttributes; moto drops the queue policy on any such call, so it is sent again."""
    attributes.setdefault("Policy", queue_policy(setup.queue_arn, setup.rule_arn))
    await sqs.set_queue_attributes(QueueUrl=setup.queue_url, Attributes=attributes)


Breakage = Callable[[Setup, Any, Any, Any, Any], Awaitable[None]]


async def _no_redrive(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await set_attributes(setup, sqs, RedrivePolicy="")


async def _no_policy(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await set_attributes(setup, sqs, Policy="")


async def _policy_for_another_rule(
    setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any
) -> None:
    other = setup.rule_arn.replace("amid-ami", "someone-else")
    await set_attributes(setup, sqs, Policy=queue_policy(setup.queue_arn, other))


async def _rule_disabled(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await events.disable_rule(Name="amid-ami")


async def _rule_for_instances(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    pattern = {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]}
    await events.put_rule(Name="amid-ami", EventPattern=json.dumps(pattern), State="ENABLED")


async def _no_rule(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await events.remove_targets(Rule="amid-ami", Ids=["q"])


async def _aws_managed_key(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await set_attributes(setup, sqs, KmsMasterKeyId="alias/aws/sqs")


async def _topic_gone(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await sns.delete_topic(TopicArn=setup.topic_arn)


async def _table_without_ttl(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await dynamodb.update_time_to_live(
        TableName=setup.table,
        TimeToLiveSpecification={"Enabled": False, "AttributeName": "expires_at"},
    )


async def _retention_too_long(setup: Setup, sqs: Any, events: Any, sns: Any, dynamodb: Any) -> None:
    await set_attributes(setup, sqs, MessageRetentionPeriod="1209600")


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (_no_redrive, "redrive policy: none"),
        (_no_policy, "queue policy admits EventBridge: the queue has no policy"),
        (_policy_for_another_rule, "amid-ami is not admitted by the queue policy"),
        (_rule_disabled, "amid-ami is disabled"),
        (_rule_for_instances, "amid-ami does not match AMI state changes"),
        (_no_rule, "no rule targets the queue"),
        (_aws_managed_key, "alias/aws/sqs cannot be used by EventBridge"),
        (_topic_gone, "SNS topic of audit"),
        (_table_without_ttl, "has no TTL on expires_at"),
        (_retention_too_long, "a late redelivery could be notified twice"),
    ],
)
async def test_each_broken_set_up_is_named_with_a_fix(
    aws_env: None,
    moto_url: str,
    sqs: Any,
    events_client: Any,
    sns: Any,
    dynamodb: Any,
    breakage: Breakage,
    problem: str,
):
    setup = await build(sqs, events_client, sns, dynamodb)
    await breakage(setup, sqs, events_client, sns, dynamodb)
    text, healthy = await run_doctor(config_for(setup, moto_url))
    assert not healthy
    problem_lines = [line for line in text.splitlines() if line.startswith("problem")]
    assert len(problem_lines) == 1, text
    assert problem in problem_lines[0], text
    assert "fix: " in text


async def test_an_unreachable_queue_is_a_problem_and_the_rest_still_runs(
    aws_env: None, moto_url: str, sqs: Any, events_client: Any, sns: Any, dynamodb: Any
):
    setup = await build(sqs, events_client, sns, dynamodb)
    setup.queue_url = setup.queue_url.replace("/amid", "/missing")
    text, healthy = await run_doctor(config_for(setup, moto_url))
    assert not healthy
    assert text.splitlines()[0].startswith("problem queue reachable")
    assert "ok      SNS topic of audit" in text
