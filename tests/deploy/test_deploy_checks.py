"""Cheap structural checks of the deployment files against amid's own defaults.

The real tools (systemd-analyze, hadolint, cfn-lint, promtool) run in scripts/check-deploy;
these tests pin the facts that tie the files to the daemon, and deploy the CloudFormation
template into moto to see the rule, queues, table and policy it makes.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.session import get_session
from botocore.validate import ParamValidator
from moto import mock_aws

from amid.config import Config, DedupeConfig, MetricsConfig, QueueConfig

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "amid.service"
ENV_FILE = ROOT / "deploy" / "systemd" / "amid.env"
TASK_DEFINITION = ROOT / "deploy" / "ecs" / "task-definition.json"
TEMPLATE = ROOT / "deploy" / "cloudformation" / "amid.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SHUTDOWN_TIMEOUT = float(Config.model_fields["shutdown_timeout"].default)
METRICS_PORT = MetricsConfig().port


def _seconds(value: str) -> float:
    """A systemd time span such as `30s`, `2min` or `1min 30s`, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


# --- systemd -------------------------------------------------------------------------


def _unit() -> dict[str, list[tuple[str, str]]]:
    """The unit file as sections of (key, value) pairs; keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def _service(key: str) -> list[str]:
    return [value for k, value in _unit()["Service"] if k == key]


def _one(key: str) -> str:
    values = _service(key)
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


class TestSystemdUnit:
    def test_it_is_a_notify_service_only_the_main_process_may_notify(self) -> None:
        assert _one("Type") == "notify"
        assert _one("NotifyAccess") == "main"

    def test_it_has_a_watchdog(self) -> None:
        assert _seconds(_one("WatchdogSec")) > 0

    def test_systemd_waits_longer_than_amid_drains_before_killing(self) -> None:
        assert _seconds(_one("TimeoutStopSec")) > SHUTDOWN_TIMEOUT
        assert _one("KillMode") == "mixed"
        assert _service("KillSignal") in ([], ["SIGTERM"])

    def test_a_config_error_is_not_restarted(self) -> None:
        assert _one("Restart") == "on-failure"
        assert _one("RestartPreventExitStatus") == "2"

    def test_the_config_is_checked_before_start_with_the_same_file_run_uses(self) -> None:
        pre = shlex.split(_one("ExecStartPre"))
        start = shlex.split(_one("ExecStart"))

        assert pre[1:3] == ["check-config", "-c"]
        assert start[1:3] == ["run", "-c"]
        assert pre[0] == start[0]
        assert pre[3] == start[3] == "/etc/amid/amid.yaml"

    def test_reload_sends_sighup_to_the_main_process(self) -> None:
        assert _one("ExecReload") == "/bin/kill -HUP $MAINPID"

    def test_the_state_directory_holds_the_default_sqlite_store(self) -> None:
        assert DedupeConfig().path.parent == Path("/var/lib") / _one("StateDirectory")

    def test_it_runs_as_a_dedicated_user(self) -> None:
        assert _service("DynamicUser") == ["yes"] or _service("User") not in ([], ["root"])

    def test_it_is_hardened(self) -> None:
        expected = {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "ProtectKernelTunables": "yes",
            "ProtectKernelModules": "yes",
            "ProtectKernelLogs": "yes",
            "ProtectControlGroups": "yes",
            "LockPersonality": "yes",
            "MemoryDenyWriteExecute": "yes",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "CapabilityBoundingSet": "",
        }
        assert {key: _one(key) for key in expected} == expected
        assert "@system-service" in _service("SystemCallFilter")

    def test_the_sample_environment_file_sets_the_queue_url(self) -> None:
        lines = [line for line in ENV_FILE.read_text().splitlines() if line and line[0] != "#"]
        assert {line.partition("=")[0] for line in lines} >= {"AMID_QUEUE_URL"}
        assert _service("EnvironmentFile") == ["-/etc/amid/amid.env"]


# --- ECS -----------------------------------------------------------------------------


def _task_definition() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TASK_DEFINITION.read_text())
    return data


def _container() -> dict[str, Any]:
    containers = _task_definition()["containerDefinitions"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


class TestEcsTaskDefinition:
    def test_it_is_a_valid_register_task_definition_request(self) -> None:
        model = get_session().get_service_model("ecs")
        shape = model.operation_model("RegisterTaskDefinition").input_shape

        report = ParamValidator().validate(_task_definition(), shape)

        assert not report.has_errors(), report.generate_report()

    def test_ecs_waits_longer_than_amid_drains_before_killing(self) -> None:
        assert _container()["stopTimeout"] > SHUTDOWN_TIMEOUT

    def test_the_health_check_asks_healthz_on_the_metrics_port(self) -> None:
        command = " ".join(_container()["healthCheck"]["command"])
        assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in command

    def test_the_metrics_port_is_mapped(self) -> None:
        ports = [m["containerPort"] for m in _container()["portMappings"]]
        assert ports == [METRICS_PORT]

    def test_logs_go_to_cloudwatch(self) -> None:
        assert _container()["logConfiguration"]["logDriver"] == "awslogs"

    def test_the_slack_webhook_comes_from_ssm_or_secrets_manager(self) -> None:
        secrets = {s["name"]: s["valueFrom"] for s in _container()["secrets"]}
        assert re.match(r"arn:aws:(ssm|secretsmanager):", secrets["SLACK_WEBHOOK_URL"])
        plain = {e["name"] for e in _container()["environment"]}
        assert "SLACK_WEBHOOK_URL" not in plain

    def test_the_config_path_is_given_in_amid_config(self) -> None:
        env = {e["name"]: e["value"] for e in _container()["environment"]}
        assert env["AMID_CONFIG"] == "/etc/amid/amid.yaml"
        assert _container()["command"] == ["run"]  # so that -c defaults to $AMID_CONFIG

    def test_both_roles_are_given(self) -> None:
        task = _task_definition()
        assert task["taskRoleArn"].startswith("arn:aws:iam::")
        assert task["executionRoleArn"].startswith("arn:aws:iam::")


# --- Dockerfile ----------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


class TestDockerfile:
    def test_it_is_multi_stage_on_python_3_11_slim(self) -> None:
        froms = [arg for op, arg in _instructions() if op == "FROM"]
        assert len(froms) >= 2
        assert all(arg.split()[0] == "python:3.11-slim" for arg in froms)

    def test_the_entrypoint_and_command_are_exec_form(self) -> None:
        final = dict(_final_stage())
        assert json.loads(final["ENTRYPOINT"]) == ["amid"]
        assert json.loads(final["CMD"]) == ["run", "-c", "/etc/amid/amid.yaml"]

    def test_it_runs_as_a_non_root_user(self) -> None:
        users = [arg for op, arg in _final_stage() if op == "USER"]
        assert users
        assert users[-1].split(":")[0] not in ("root", "0")

    def test_it_checks_healthz_stops_with_sigterm_and_exposes_metrics(self) -> None:
        final = dict(_final_stage())
        assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in final["HEALTHCHECK"]
        assert final["STOPSIGNAL"] == "SIGTERM"
        assert final["EXPOSE"] == str(METRICS_PORT)
        assert final["VOLUME"] == "/var/lib/amid"

    def test_dependencies_are_installed_from_the_pinned_constraints(self) -> None:
        runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
        assert "-c constraints.txt" in runs

    def test_every_copied_path_is_in_the_build_context(self) -> None:
        ignore = DOCKERIGNORE.read_text().splitlines()
        assert ignore[ignore.index("*") :], "the context is an allow-list"
        allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
        for op, arg in _instructions():
            if op != "COPY" or arg.startswith("--from"):
                continue
            *sources, _destination = arg.split()
            assert set(sources) <= allowed, sources


# --- CloudFormation ------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form functions (!Ref, !GetAtt, !If, ...)."""


def _cfn_tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def _template() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506
    return data


def _resource(name: str) -> dict[str, Any]:
    resource: dict[str, Any] = _template()["Resources"][name]
    return resource


def _resolve(node: Any, conditions: dict[str, bool]) -> Any:
    """Apply Fn::If with the given condition values and drop AWS::NoValue."""
    if isinstance(node, dict):
        if "Fn::If" in node:
            name, yes, no = node["Fn::If"]
            return _resolve(yes if conditions[name] else no, conditions)
        resolved = {k: _resolve(v, conditions) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v != {"Ref": "AWS::NoValue"}}
    if isinstance(node, list):
        items = [_resolve(item, conditions) for item in node]
        return [item for item in items if item != {"Ref": "AWS::NoValue"}]
    return node


# The template's defaults: no role to attach to, no describe-images role to assume, the
# topic encrypted with the AWS managed key, no continuous backups of the ledger.
SINGLE_ACCOUNT = {
    "CreateDedupeTable": False,
    "DedupeRecovery": False,
    "TopicCustomerKey": False,
    "AttachToRole": False,
    "AssumeDescribeImagesRole": False,
    "WithinOrganization": False,
}


def _policy_actions(with_table: bool) -> set[str]:
    document = _resolve(
        _resource("AmidPolicy")["Properties"]["PolicyDocument"],
        {**SINGLE_ACCOUNT, "CreateDedupeTable": with_table},
    )
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        action = statement["Action"]
        actions.update([action] if isinstance(action, str) else action)
    return actions


AMID_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sns:Publish",
    "ec2:DescribeImages",
}
LEDGER_ACTIONS = {
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",
}


class TestCloudFormationTemplate:
    def test_the_rule_matches_ami_state_changes_and_targets_the_queue(self) -> None:
        rule = _resource("AmiStateChangeRule")["Properties"]
        assert rule["EventPattern"] == {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 AMI State Change"],
        }
        assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["Queue", "Arn"]}]

    def test_the_queue_policy_admits_only_the_rule_through_events(self) -> None:
        statements = _resource("QueuePolicy")["Properties"]["PolicyDocument"]["Statement"]
        allows = [s for s in statements if s["Effect"] == "Allow"]

        assert len(allows) == 1
        assert allows[0]["Principal"] == {"Service": "events.amazonaws.com"}
        assert allows[0]["Action"] == "sqs:SendMessage"
        assert allows[0]["Condition"] == {
            "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["AmiStateChangeRule", "Arn"]}}
        }

    def test_the_queue_dead_letters_after_five_receives(self) -> None:
        queue = _resource("Queue")["Properties"]
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
            "maxReceiveCount": 5,
        }

    def test_the_visibility_timeout_is_amids_default(self) -> None:
        queue = _resource("Queue")["Properties"]
        assert queue["VisibilityTimeout"] == QueueConfig(url="https://q/1/a").visibility_timeout

    def test_messages_expire_before_the_dedupe_ledger_forgets_them(self) -> None:
        retention = _template()["Parameters"]["MessageRetentionSeconds"]["Default"]
        assert retention < DedupeConfig().ttl

    def test_the_dedupe_table_is_optional_keyed_by_pk_and_sk_with_ttl(self) -> None:
        table = _resource("DedupeTable")
        properties = table["Properties"]

        assert table["Condition"] == "CreateDedupeTable"
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["KeySchema"] == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        assert properties["TimeToLiveSpecification"] == {
            "AttributeName": "expires_at",
            "Enabled": True,
        }

    def test_the_iam_policy_grants_exactly_what_amid_calls(self) -> None:
        assert _policy_actions(with_table=True) == AMID_ACTIONS | LEDGER_ACTIONS

    def test_without_the_table_the_policy_grants_no_dynamodb_access(self) -> None:
        assert _policy_actions(with_table=False) == AMID_ACTIONS

    def test_only_describe_images_is_granted_on_every_resource(self) -> None:
        document = _resolve(
            _resource("AmidPolicy")["Properties"]["PolicyDocument"],
            {**SINGLE_ACCOUNT, "CreateDedupeTable": True},
        )
        wildcard = [s["Action"] for s in document["Statement"] if s["Resource"] == "*"]
        assert wildcard == ["ec2:DescribeImages"]

    def test_the_table_name_is_an_output_only_when_the_table_exists(self) -> None:
        assert _template()["Outputs"]["TableName"]["Condition"] == "CreateDedupeTable"

    def test_the_ledger_has_continuous_backups_only_when_asked(self) -> None:
        table = _resource("DedupeTable")["Properties"]
        recovery = [
            _resolve(table, {"DedupeRecovery": on})["PointInTimeRecoverySpecification"]
            for on in (False, True)
        ]
        assert _template()["Parameters"]["DedupePointInTimeRecovery"]["Default"] == "false"
        assert recovery == [{"PointInTimeRecoveryEnabled": b} for b in (False, True)]
        assert table["SSESpecification"] == {"SSEEnabled": True}, "the AWS managed key"

    def test_the_topic_is_encrypted_with_the_aws_managed_key_or_the_given_one(self) -> None:
        topic = _resource("AmiEventsTopic")["Properties"]
        assert _template()["Parameters"]["TopicKmsKeyArn"]["Default"] == ""
        assert _resolve(topic, {"TopicCustomerKey": False})["KmsMasterKeyId"] == "alias/aws/sns"
        assert _resolve(topic, {"TopicCustomerKey": True})["KmsMasterKeyId"] == {
            "Ref": "TopicKmsKeyArn"
        }

    def test_only_a_customer_managed_topic_key_adds_a_policy_and_it_is_that_keys_via_sns(
        self,
    ) -> None:
        policy = _resource("TopicKeyPolicy")
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert policy["Condition"] == "TopicCustomerKey"
        assert _template()["Outputs"]["TopicKeyPolicyArn"]["Condition"] == "TopicCustomerKey"
        assert statement["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
        assert statement["Resource"] == {"Ref": "TopicKmsKeyArn"}
        assert statement["Condition"] == {
            "StringEquals": {"kms:ViaService": {"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"}}
        }
        assert not any(a.startswith("kms:") for a in _policy_actions(with_table=True))

    def test_the_outputs_name_everything_amid_is_configured_with(self) -> None:
        assert set(_template()["Outputs"]) >= {
            "QueueUrl",
            "DeadLetterQueueUrl",
            "TopicArn",
            "TableName",
            "PolicyArn",
        }


def _client(service: str) -> Any:
    return get_session().create_client(service, region_name="us-east-1")


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def _deploy(*, enable_table: bool, **parameters: str) -> dict[str, str]:
    """Create the stack; `parameters` are further stack parameters (TopicKmsKeyArn=...)."""
    cloudformation = _client("cloudformation")
    values = {"EnableDynamoDbDedupe": str(enable_table).lower(), **parameters}
    cloudformation.create_stack(
        StackName="amid",
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
    )
    stack = cloudformation.describe_stacks(StackName="amid")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


# moto's CloudFormation cannot create queue policies, and it leaves AWS::NoValue in a list
# as null where CloudFormation drops it (the policy without the table): the structural
# tests above cover both.
@pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning")
@pytest.mark.usefixtures("aws")
class TestCloudFormationInMoto:
    def test_the_rule_delivers_ami_events_and_only_those_to_the_queue(self) -> None:
        outputs = _deploy(enable_table=True)
        events = _client("events")
        sqs = _client("sqs")

        events.put_events(
            Entries=[
                {
                    "Source": "aws.ec2",
                    "DetailType": "EC2 AMI State Change",
                    "Detail": json.dumps({"ImageId": "ami-0123456789abcdef0", "State": "failed"}),
                },
                {
                    "Source": "aws.ec2",
                    "DetailType": "EC2 Instance State-change Notification",
                    "Detail": json.dumps({"instance-id": "i-0123", "state": "running"}),
                },
            ]
        )
        received = sqs.receive_message(QueueUrl=outputs["QueueUrl"], MaxNumberOfMessages=10)

        bodies = [json.loads(m["Body"]) for m in received.get("Messages", [])]
        assert [(b["detail-type"], b["detail"]["ImageId"]) for b in bodies] == [
            ("EC2 AMI State Change", "ami-0123456789abcdef0")
        ]

    def test_the_queue_redrives_to_the_dead_letter_queue(self) -> None:
        outputs = _deploy(enable_table=True)
        sqs = _client("sqs")

        attributes = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])[
            "Attributes"
        ]
        dlq_arn = sqs.get_queue_attributes(
            QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

        assert json.loads(attributes["RedrivePolicy"]) == {
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": 5,
        }
        assert attributes["VisibilityTimeout"] == "60"

    def test_the_table_exists_only_when_enabled(self) -> None:
        outputs = _deploy(enable_table=True)
        dynamodb = _client("dynamodb")

        table = dynamodb.describe_table(TableName=outputs["TableName"])["Table"]

        assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {
            "pk": "HASH",
            "sk": "RANGE",
        }

    def test_the_topic_is_encrypted_with_the_aws_managed_key_by_default(self) -> None:
        outputs = _deploy(enable_table=True)
        attributes = _client("sns").get_topic_attributes(TopicArn=outputs["TopicArn"])
        assert attributes["Attributes"]["KmsMasterKeyId"] == "alias/aws/sns"
        assert "TopicKeyPolicyArn" not in outputs

    def test_a_customer_managed_key_encrypts_the_topic_and_amid_may_use_it(self) -> None:
        key = _client("kms").create_key(Description="amid topic")["KeyMetadata"]["Arn"]
        outputs = _deploy(enable_table=True, TopicKmsKeyArn=key)
        iam = _client("iam")

        attributes = _client("sns").get_topic_attributes(TopicArn=outputs["TopicArn"])
        policy = iam.get_policy(PolicyArn=outputs["TopicKeyPolicyArn"])["Policy"]
        document = iam.get_policy_version(
            PolicyArn=outputs["TopicKeyPolicyArn"], VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]["Document"]

        assert attributes["Attributes"]["KmsMasterKeyId"] == key
        assert document["Statement"] == [
            {
                "Sid": "PublishWithTopicKey",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": key,
                "Condition": {"StringEquals": {"kms:ViaService": "sns.us-east-1.amazonaws.com"}},
            }
        ]

    def test_the_deployed_policy_grants_exactly_what_amid_calls(self) -> None:
        outputs = _deploy(enable_table=True)
        iam = _client("iam")

        policy = iam.get_policy(PolicyArn=outputs["PolicyArn"])["Policy"]
        document = iam.get_policy_version(
            PolicyArn=outputs["PolicyArn"], VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]["Document"]

        actions: set[str] = set()
        for statement in document["Statement"]:
            action = statement["Action"]
            actions.update([action] if isinstance(action, str) else action)
        assert actions == AMID_ACTIONS | LEDGER_ACTIONS
