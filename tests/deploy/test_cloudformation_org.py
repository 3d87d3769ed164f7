"""One amid for a whole organisation, deployed into moto's server (tests/deploy/organisation.py):
the central stack, the member template rolled out as a service-managed StackSet to an OU in two
regions, and deployed on its own in an account reached through an assumed role; then AMI events
put on the member account's default buses travel to the central queue and `amid run` delivers
them.

What moto carries: StackSets onto an OU's accounts and regions, cross-account and cross-region
event-bus targets (member rule -> central bus -> central rule -> queue), rule patterns, roles
kept apart per account. What it does not: it neither evaluates nor enforces the bus policy, the
queue policy, IAM trust and permission policies or their conditions (aws:PrincipalOrgID,
aws:ResourceOrgID, aws:SourceArn, events:source), does not assume the target's RoleArn, takes
no other account's bus ARN in PutEvents, and a forwarded event gets a new id, the central bus's
region and no `account` (EventBridge keeps the member's). Those documents are tested as data in test_iam_policy.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.deploy.organisation import (
    CAPABILITIES,
    CENTRAL_TEMPLATE,
    DESCRIBE_IMAGES_ROLE,
    MEMBER_PARAMETERS,
    MEMBER_REGIONS,
    MEMBER_TEMPLATE,
    REGION,
    SINGLE_TEMPLATE,
    STACK_SET,
    Organisation,
    deploy_organisation,
    member_parameters,
    outputs,
    parameters,
    roll_out_members,
    template,
)
from tests.helpers import config_yaml, hook_handler, records, wait_for

AMI = "EC2 AMI State Change"


@pytest.fixture
def endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
def central(endpoint: str) -> Organisation:
    """The organisation and the central stack, no member stacks yet."""
    return deploy_organisation(endpoint, members=False)


@pytest.fixture
def org(central: Organisation) -> Organisation:
    """... and the member StackSet on the OU, in MEMBER_REGIONS."""
    assert roll_out_members(central) == "SUCCEEDED"
    return central


def _event(source: str, detail_type: str, image_id: str, **extra: str) -> dict[str, str]:
    detail = {"ImageId": image_id, "State": "available", "ErrorMessage": ""}
    return {"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail), **extra}


def _bodies(org: Organisation) -> list[dict[str, Any]]:
    """Every message on the central queue, left on it (visibility 0)."""
    sqs = org.client("sqs")
    answer = sqs.receive_message(
        QueueUrl=org.central["QueueUrl"], MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


def _depth(org: Organisation) -> int:
    attributes = org.client("sqs").get_queue_attributes(
        QueueUrl=org.central["QueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


class TestCentralStack:
    def test_the_rule_on_the_central_bus_sends_ami_state_changes_to_the_queue(
        self, central: Organisation
    ) -> None:
        events = central.client("events")
        bus = central.central["EventBusArn"].rsplit("/", 1)[1]

        (rule,) = events.list_rules(EventBusName=bus)["Rules"]
        (target,) = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=bus)["Targets"]

        assert rule["Arn"] == central.central["RuleArn"]
        assert json.loads(rule["EventPattern"]) == {"source": ["aws.ec2"], "detail-type": [AMI]}
        assert target["Arn"] == central.central["QueueArn"]
        assert target["DeadLetterConfig"]["Arn"].endswith(":amid-ami-events-dlq")

    def test_the_queue_dead_letters_and_the_ledger_table_exists(
        self, central: Organisation
    ) -> None:
        sqs, dynamodb = central.client("sqs"), central.client("dynamodb")
        attributes = sqs.get_queue_attributes(
            QueueUrl=central.central["QueueUrl"], AttributeNames=["All"]
        )["Attributes"]
        table = dynamodb.describe_table(TableName=central.central["TableName"])["Table"]

        assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5
        assert {k["AttributeName"] for k in table["KeySchema"]} == {"pk", "sk"}

    def test_amids_role_carries_its_policy_and_the_describe_images_grant(
        self, central: Organisation
    ) -> None:
        iam = central.client("iam")
        role_name = central.central["AmidRoleArn"].rsplit("/", 1)[1]

        attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
        profile = iam.get_instance_profile(InstanceProfileName=role_name)["InstanceProfile"]

        assert {p["PolicyArn"] for p in attached} == {
            central.central["PolicyArn"],
            central.central["AssumeRolePolicyArn"],
        }
        assert [r["RoleName"] for r in profile["Roles"]] == [role_name]

    def test_the_bus_and_queue_carry_the_templates_policies(self, central: Organisation) -> None:
        bus = central.central["EventBusArn"].rsplit("/", 1)[1]
        policy = json.loads(central.client("events").describe_event_bus(Name=bus)["Policy"])
        queue = central.client("sqs").get_queue_attributes(
            QueueUrl=central.central["QueueUrl"], AttributeNames=["Policy"]
        )["Attributes"]

        (statement,) = policy["Statement"]
        assert statement["Condition"]["StringEquals"] == {"aws:PrincipalOrgID": central.org_id}
        assert central.central["RuleArn"] in queue["Policy"]


class TestMemberRollOut:
    def test_the_stack_set_reaches_every_region_of_the_ous_account(self, org: Organisation) -> None:
        instances = org.client("cloudformation").list_stack_instances(StackSetName=STACK_SET)

        assert {(i["Account"], i["Region"], i["Status"]) for i in instances["Summaries"]} == {
            (org.member, region, "CURRENT") for region in MEMBER_REGIONS
        }

    def test_each_region_forwards_to_the_central_bus_with_a_role_of_its_own(
        self, org: Organisation
    ) -> None:
        roles = set()
        for region in MEMBER_REGIONS:
            events = org.member_client("events", region)
            names = events.list_rule_names_by_target(TargetArn=org.central["EventBusArn"])
            (rule_name,) = names["RuleNames"]
            (target,) = events.list_targets_by_rule(Rule=rule_name)["Targets"]
            pattern = json.loads(events.describe_rule(Name=rule_name)["EventPattern"])

            assert pattern == {"source": ["aws.ec2"], "detail-type": [AMI]}
            assert target["RoleArn"].startswith(f"arn:aws:iam::{org.member}:role/")
            roles.add(target["RoleArn"])
        assert len(roles) == len(MEMBER_REGIONS), "IAM is global: one unnamed role per region"

    def test_the_describe_images_role_is_made_once_per_account_and_trusts_amid_alone(
        self, org: Organisation
    ) -> None:
        iam = org.member_client("iam")

        names = [r["RoleName"] for r in iam.list_roles()["Roles"]]
        trust = iam.get_role(RoleName=DESCRIBE_IMAGES_ROLE)["Role"]["AssumeRolePolicyDocument"]

        assert names.count(DESCRIBE_IMAGES_ROLE) == 1
        assert [s["Principal"] for s in trust["Statement"]] == [{"AWS": org.central["AmidRoleArn"]}]

    def test_the_member_stack_deploys_alone_in_an_account_reached_through_an_assumed_role(
        self, central: Organisation
    ) -> None:
        cloudformation = central.member_client("cloudformation")
        cloudformation.create_stack(
            StackName="amid-member",
            TemplateBody=MEMBER_TEMPLATE.read_text(),
            Parameters=parameters(member_parameters(central)),
            Capabilities=CAPABILITIES,
        )

        made = outputs(cloudformation, "amid-member")

        assert made["RuleArn"] == f"arn:aws:events:{REGION}:{central.member}:rule/amid-ami-events"
        assert made["DescribeImagesRoleArn"] == (
            f"arn:aws:iam::{central.member}:role/{DESCRIBE_IMAGES_ROLE}"
        )
        assert central.client("sts").get_caller_identity()["Account"] == central.management


class TestEventsThroughTheOrganisation:
    def test_only_the_members_ami_state_changes_from_aws_ec2_reach_the_central_queue(
        self, org: Organisation
    ) -> None:
        us, eu = (org.member_client("events", region) for region in MEMBER_REGIONS)
        bus = org.central["EventBusArn"].rsplit("/", 1)[1]

        us.put_events(
            Entries=[
                _event("aws.ec2", AMI, "ami-0aaaaaaaaaaaaaaa1"),
                _event("aws.ec2", "EC2 Instance State-change Notification", "ami-0ffffffffffffff1"),
                _event("com.example.images", AMI, "ami-0ffffffffffffff2"),
            ]
        )
        # Straight onto the central bus, as a member may (the bus admits the organisation):
        # the central rule still lets only AMI state changes from aws.ec2 through. moto's
        # PutEvents takes no other account's bus ARN, so the central account puts them.
        org.client("events").put_events(
            Entries=[
                _event("com.example.images", AMI, "ami-0ffffffffffffff3", EventBusName=bus),
                _event(
                    "aws.ec2",
                    "AWS API Call via CloudTrail",
                    "ami-0ffffffffffffff4",
                    EventBusName=bus,
                ),
            ]
        )
        eu.put_events(Entries=[_event("aws.ec2", AMI, "ami-0bbbbbbbbbbbbbbb2")])

        bodies = _bodies(org)
        assert sorted(b["detail"]["ImageId"] for b in bodies) == [
            "ami-0aaaaaaaaaaaaaaa1",
            "ami-0bbbbbbbbbbbbbbb2",
        ]
        assert {(b["source"], b["detail-type"]) for b in bodies} == {("aws.ec2", AMI)}

    @pytest.mark.slow
    def test_amid_run_delivers_the_events_of_both_member_regions_once(
        self, org: Organisation, endpoint: str, tmp_path: Path
    ) -> None:
        record = tmp_path / "hook.jsonl"
        config = tmp_path / "amid.yaml"
        config.write_text(
            config_yaml(
                org.central["QueueUrl"],
                endpoint,
                hook_handler(record),
                dedupe=f"backend: dynamodb, table: {org.central['TableName']}",
            )
        )
        images = ("ami-0aaaaaaaaaaaaaaa1", "ami-0bbbbbbbbbbbbbbb2")
        for region, image in zip(MEMBER_REGIONS, images, strict=True):
            answer = org.member_client("events", region).put_events(
                Entries=[_event("aws.ec2", AMI, image)]
            )
            assert answer["FailedEntryCount"] == 0
        assert _depth(org) == 2, "both regions' events reached the central queue"

        with (tmp_path / "amid.log").open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "amid", "run", "-c", str(config)],
                env={**os.environ, "AWS_ENDPOINT_URL": endpoint},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                _until(lambda: len(records(record)) >= 2 and _depth(org) == 0)
            finally:
                process.send_signal(signal.SIGTERM)
                exit_code = process.wait(timeout=30)

        assert exit_code == 0, (tmp_path / "amid.log").read_text()
        assert sorted(r["image_id"] for r in records(record)) == [
            "ami-0aaaaaaaaaaaaaaa1",
            "ami-0bbbbbbbbbbbbbbb2",
        ]


def _until(condition: Any, timeout: float = 30.0) -> None:
    asyncio.run(wait_for(condition, timeout=timeout))


class TestSingleAccountStack:
    def test_naming_the_describe_images_role_attaches_an_org_bounded_assume_grant(
        self, endpoint: str
    ) -> None:
        iam_role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="amid-task", AssumeRolePolicyDocument=json.dumps({"Statement": []})
        )["Role"]
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(
            StackName="amid",
            TemplateBody=SINGLE_TEMPLATE.read_text(),
            Parameters=parameters(
                {
                    "EnableDynamoDbDedupe": "true",
                    "AmidRoleName": iam_role["RoleName"],
                    "DescribeImagesRoleName": DESCRIBE_IMAGES_ROLE,
                    "OrganizationId": "o-abcdefghij",
                }
            ),
        )
        made = outputs(cloudformation, "amid")
        iam = boto3.client("iam", region_name=REGION)
        policy = iam.get_policy(PolicyArn=made["AssumeRolePolicyArn"])["Policy"]
        document = iam.get_policy_version(
            PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]["Document"]
        attached = iam.list_attached_role_policies(RoleName="amid-task")["AttachedPolicies"]

        assert document["Statement"] == [
            {
                "Sid": "AssumeDescribeImagesRole",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": f"arn:aws:iam::*:role/{DESCRIBE_IMAGES_ROLE}",
                "Condition": {"StringEquals": {"aws:ResourceOrgID": "o-abcdefghij"}},
            }
        ]
        assert {p["PolicyArn"] for p in attached} == {made["PolicyArn"], policy["Arn"]}


class TestTheRollOutDocument:
    """docs/scaling.md's commands name the templates' parameters and the tests' roll-out."""

    DOC = (SINGLE_TEMPLATE.parents[2] / "docs" / "scaling.md").read_text()

    def test_the_stack_set_parameters_are_the_member_templates_and_the_tests(self) -> None:
        named = set(re.findall(r"ParameterKey=(\w+),", self.DOC))
        member = set(template(MEMBER_TEMPLATE)["Parameters"])
        assert named <= member
        assert named == set(MEMBER_PARAMETERS)

    def test_the_central_stacks_overrides_are_its_parameters(self) -> None:
        overrides = re.search(r"--parameter-overrides (.+)", self.DOC)
        assert overrides is not None
        keys = {item.split("=", 1)[0] for item in overrides.group(1).split()}
        assert keys <= set(template(CENTRAL_TEMPLATE)["Parameters"])

    def test_the_documented_stack_set_options_are_the_ones_the_tests_use(self) -> None:
        for option in (
            "--permission-model SERVICE_MANAGED",
            "--auto-deployment Enabled=true,RetainStacksOnAccountRemoval=false",
            "--capabilities CAPABILITY_NAMED_IAM",
            "--deployment-targets OrganizationalUnitIds=",
        ):
            assert option in self.DOC, option
