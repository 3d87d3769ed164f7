"""`amid doctor` against moto: a correct set-up passes, each common mistake is named with its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amid.aws import AwsClients
from amid.config import Config, parse_config
from amid.store.dynamodb import create_table
from amid.tools.doctor import MemberTarget, diagnose, report
from tests.deploy.organisation import MEMBER_REGIONS, Organisation, deploy_organisation

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


# --- one amid for an organisation ------------------------------------------------------
#
# The central stack and the member StackSet, deployed into moto (tests/deploy/organisation.py);
# doctor checks the bus policy and, with the member account given, the forwarding rule and
# role in each of its regions, through the role it assumes there.

ORG_CHECKS = 13  # 8 of the central account, 1 to reach the member, 2 per member region


@pytest.fixture
def org(aws_env: None, moto_url: str) -> Organisation:
    org = deploy_organisation(moto_url)
    # moto's CloudFormation leaves out the table's TimeToLiveSpecification.
    org.client("dynamodb").update_time_to_live(
        TableName=org.central["TableName"],
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )
    return org


def org_config(org: Organisation) -> Config:
    return parse_config(
        f"""
queue: {{url: "{org.central["QueueUrl"]}", region: us-east-1}}
dedupe: {{backend: dynamodb, table: {org.central["TableName"]}}}
handlers:
  - {{name: log, type: shell, command: ["true"]}}
""",
        env={},
    )


def member_of(org: Organisation) -> MemberTarget:
    return MemberTarget(org.member, regions=MEMBER_REGIONS)


async def run_org_doctor(org: Organisation) -> tuple[str, bool]:
    async with AwsClients() as aws:
        return report(await diagnose(org_config(org), aws, [member_of(org)]))


async def test_the_organisation_passes_every_check_with_its_member(org: Organisation) -> None:
    text, healthy = await run_org_doctor(org)

    assert healthy, text
    assert f"{ORG_CHECKS} checks, 0 problem(s)" in text
    assert (
        f"ok      event bus amid-ami-events admits the organisation only: events:PutEvents for {org.org_id} only"
        in text
    )
    for region in MEMBER_REGIONS:
        assert f"ok      member {org.member} {region} rule forwards to amid-ami-events" in text
        assert f"ok      member {org.member} {region} forwarding role" in text


def _bus(org: Organisation) -> str:
    return org.central["EventBusArn"].rsplit("/", 1)[1]


def _central_rule(org: Organisation) -> str:
    return org.central["RuleArn"].rsplit("/", 1)[1]


def _replace_bus_policy(org: Organisation, policy: dict[str, Any] | None) -> None:
    events = org.client("events")
    events.remove_permission(EventBusName=_bus(org), RemoveAllPermissions=True)
    if policy is not None:
        events.put_permission(EventBusName=_bus(org), Policy=json.dumps(policy))


def _bus_open_to_all(org: Organisation) -> None:
    statement = json.loads(org.bus_policy())["Statement"][0]
    del statement["Condition"]
    _replace_bus_policy(org, {"Version": "2012-10-17", "Statement": [statement]})


def _bus_without_policy(org: Organisation) -> None:
    _replace_bus_policy(org, None)


def _central_rule_without_target(org: Organisation) -> None:
    org.client("events").remove_targets(
        Rule=_central_rule(org), EventBusName=_bus(org), Ids=["amid-queue"]
    )


def _central_rule_for_all_of_ec2(org: Organisation) -> None:
    org.client("events").put_rule(
        Name=_central_rule(org),
        EventBusName=_bus(org),
        EventPattern=json.dumps({"source": ["aws.ec2"]}),
        State="ENABLED",
    )


def _queue_policy_for_another_rule(org: Organisation) -> None:
    policy = org.queue_policy().replace(org.central["RuleArn"], org.central["RuleArn"] + "-old")
    org.client("sqs").set_queue_attributes(
        QueueUrl=org.central["QueueUrl"], Attributes={"Policy": policy}
    )


def _member_rule_without_target(org: Organisation) -> None:
    org.member_client("events").remove_targets(Rule="amid-ami-events", Ids=["amid-central-bus"])


def _member_rule_disabled(org: Organisation) -> None:
    org.member_client("events", "eu-west-1").disable_rule(Name="amid-ami-events")


def _member_target_without_role(org: Organisation) -> None:
    org.member_client("events").put_targets(
        Rule="amid-ami-events",
        Targets=[{"Id": "amid-central-bus", "Arn": org.central["EventBusArn"]}],
    )


def _forward_role(org: Organisation) -> str:
    events = org.member_client("events")
    (target,) = events.list_targets_by_rule(Rule="amid-ami-events")["Targets"]
    return str(target["RoleArn"]).rsplit("/", 1)[1]


def _forward_role_trusts_ec2(org: Organisation) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    org.member_client("iam").update_assume_role_policy(
        RoleName=_forward_role(org), PolicyDocument=json.dumps(trust)
    )


def _forward_role_without_permission(org: Organisation) -> None:
    org.member_client("iam").delete_role_policy(
        RoleName=_forward_role(org), PolicyName="put-events-on-the-central-bus"
    )


def _forward_role_deleted(org: Organisation) -> None:
    iam, role = org.member_client("iam"), _forward_role(org)
    iam.delete_role_policy(RoleName=role, PolicyName="put-events-on-the-central-bus")
    iam.delete_role(RoleName=role)


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (_bus_open_to_all, "OrganisationPutsAmiStateChanges admits * beyond the organisation"),
        (_bus_without_policy, "the bus has no policy"),
        (_central_rule_without_target, "EventBridge rule targets the queue: no rule targets"),
        (_central_rule_for_all_of_ec2, "matches other events too"),
        (_queue_policy_for_another_rule, "is not admitted by the queue policy's aws:SourceArn"),
        (
            _member_rule_without_target,
            "us-east-1 rule forwards to amid-ami-events: no rule targets",
        ),
        (
            _member_rule_disabled,
            "eu-west-1 rule forwards to amid-ami-events: amid-ami-events is disabled",
        ),
        (_member_target_without_role, "amid-ami-events names no role"),
        (_forward_role_trusts_ec2, "does not let events.amazonaws.com assume it"),
        (_forward_role_without_permission, "it may not events:PutEvents on"),
        (_forward_role_deleted, "NoSuchEntity"),
    ],
)
async def test_each_broken_piece_of_the_organisation_is_named_with_a_fix(
    org: Organisation, breakage: Callable[[Organisation], None], problem: str
) -> None:
    breakage(org)
    text, healthy = await run_org_doctor(org)

    assert not healthy
    problem_lines = [line for line in text.splitlines() if line.startswith("problem")]
    assert len(problem_lines) == 1, text
    assert problem in problem_lines[0], text
    assert text.splitlines()[text.splitlines().index(problem_lines[0]) + 1].startswith(
        "        fix: "
    ), text


async def test_a_member_of_a_queue_without_a_central_bus_is_a_problem(
    aws_env: None, moto_url: str, sqs: Any, events_client: Any, sns: Any, dynamodb: Any
) -> None:
    setup = await build(sqs, events_client, sns, dynamodb)
    async with AwsClients() as aws:
        text, healthy = report(
            await diagnose(config_for(setup, moto_url), aws, [MemberTarget("111122223333")])
        )
    assert not healthy
    assert (
        "problem member 111122223333 reachable: the queue is not fed by a custom event bus" in text
    )


def test_amid_doctor_checks_a_member_account_from_the_command_line(
    org: Organisation, moto_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "amid.yaml"
    config.write_text(
        f'queue: {{url: "{org.central["QueueUrl"]}", region: us-east-1}}\n'
        f"dedupe: {{backend: dynamodb, table: {org.central['TableName']}}}\n"
        'handlers:\n  - {name: log, type: shell, command: ["true"]}\n'
    )
    command = [
        sys.executable, "-m", "amid", "doctor", "-c", str(config),
        "--member-account", org.member,
        "--member-region", MEMBER_REGIONS[0], "--member-region", MEMBER_REGIONS[1],
    ]  # fmt: skip
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url}

    healthy = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    _member_rule_disabled(org)
    broken = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"member {org.member} {MEMBER_REGIONS[1]} rule forwards" in healthy.stdout
    assert broken.returncode == 1
    assert "amid-ami-events is disabled" in broken.stdout
    assert "fix: deploy deploy/cloudformation/amid-member.yaml" in broken.stdout
