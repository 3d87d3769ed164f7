"""The IAM audit: every AWS call amid makes, recorded by moto, against the template's policies.

A moto server of its own records every request (moto's recorder). The stack of
deploy/cloudformation/amid.yaml is deployed into it, then amid runs against the stack's
resources the way production does, as `amid run` in a subprocess stopped with SIGTERM:
the DynamoDB ledger, DescribeImages enrichment, an `sns` handler on the stack's topic,
shell hooks (one slow, so the heartbeat extends visibility; one failing once, so a message
is left for redelivery), queue depth metrics, an invalid message. amid's requests carry
`amid/<version>` in their User-Agent; the test's own setup calls do not.

Each request becomes the IAM actions it needs on the stack resources it names (by logical
id), which are checked against the policy's statements, action and resource both; and each
grant of the policy must be used by some call. The stack's topic is encrypted with a
customer managed KMS key (TopicKmsKeyArn): SNS then uses the key as the publisher, so each
sns:Publish also needs kms:GenerateDataKey and kms:Decrypt on that key, through SNS, which
moto does not record: the audit adds them to the publish (TopicKeyPolicy grants them).

Operator tools:
- `amid test-event` and `amid replay` run on the instance or in the task, with the
  daemon's role: they must need nothing beyond AmidPolicy (checked below).
- `amid doctor` makes extra read-only calls; they are in the optional AmidDoctorPolicy,
  audited the same way (the daemon's role does not need them).
- `amid dedupe create-table` is a bootstrap tool for development: production creates the
  table with the stack, so its calls are in neither policy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import botocore.session
import pytest
from aiobotocore.session import get_session

from amid import __version__
from amid.store.dynamodb import create_table
from tests.deploy.organisation import CENTRAL_TEMPLATE, MEMBER_TEMPLATE, SINGLE_TEMPLATE, template
from tests.deploy.test_deploy_checks import TEMPLATE as _TEMPLATE_PATH
from tests.deploy.test_deploy_checks import _deploy, _resolve, _template
from tests.helpers import event_body, hook_handler, records
from tests.moto_server import MotoServer, free_port

REGION = "us-east-1"
AMID_AGENT = f"amid/{__version__}"
CONDITIONS = {
    "CreateDedupeTable": True,
    "AttachToRole": False,
    "AssumeDescribeImagesRole": False,
    "WithinOrganization": False,
}
# The stack parameters the scenario deploys with; the rest keep the template's defaults.
# The daemon scenario adds TopicKmsKeyArn, a key it creates first (Audit.parameters).
PARAMETERS = {"EnableDynamoDbDedupe": "true"}
TOPIC_KEY = "TopicKmsKeyArn"  # the key's id in the audit: the parameter that names it
# What publishing to a topic encrypted with a customer managed key needs of that key.
TOPIC_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
# The one condition the audit evaluates in an identity policy: a key used through SNS only.
VIA_SNS = {"StringEquals": {"kms:ViaService": {"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"}}}
PARTITION = "aws"
ANY = "*"  # the resource of an action without resource-level permissions

# Each operation's IAM action, where it is not the operation's own name.
BATCH_ACTIONS = {
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sqs:SendMessageBatch": "sqs:SendMessage",
}
TRANSACT_ACTIONS = {
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
}
# Operations that act on no particular resource: only `Resource: "*"` grants them.
ACCOUNT_WIDE = {"ec2:DescribeImages", "events:ListRuleNamesByTarget"}

# What the daemon scenario must have made amid do, or the audit proves little.
DAEMON_OPERATIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessageBatch",
    "sqs:ChangeMessageVisibility",  # the retry, the invalid message
    "sqs:ChangeMessageVisibilityBatch",  # the heartbeat during the slow hook
    "sqs:GetQueueAttributes",  # depth of both queues
    "sqs:GetQueueUrl",  # the dead-letter queue, from the redrive policy
    "sns:Publish",
    "ec2:DescribeImages",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:TransactWriteItems",
}
DOCTOR_OPERATIONS = {
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "events:ListRuleNamesByTarget",
    "events:DescribeRule",
    "sns:GetTopicAttributes",
    "dynamodb:DescribeTable",
    "dynamodb:DescribeTimeToLive",
}


@dataclass(frozen=True, slots=True)
class Need:
    """One IAM action a recorded request needs, on a stack resource (logical id) or ANY."""

    operation: str
    action: str
    resource: str
    via: str = ""  # the service that makes the call on amid's behalf (kms:ViaService)


@dataclass(frozen=True, slots=True)
class Grant:
    policy: str
    sid: str
    action: str
    resource: str  # a logical id, or "*"
    via: str = ""  # only through this service (kms:ViaService); "" for any caller


@dataclass(frozen=True, slots=True)
class Audit:
    daemon: list[Need]
    tools: list[Need]
    doctor: list[Need]
    daemon_exit: int
    parameters: dict[str, str]  # the stack's: PARAMETERS and the topic's key
    tools_output: str
    doctor_output: str
    doctor_exit: int
    hook_calls: list[dict[str, Any]]
    published: int


# --- the policies --------------------------------------------------------------------


def _parameter_values(parameters: dict[str, str]) -> dict[str, str]:
    declared = _template().get("Parameters", {})
    values = {name: str(spec.get("Default", "")) for name, spec in declared.items()}
    return {**values, **parameters, "AWS::Partition": PARTITION}


def _condition_value(node: Any, values: dict[str, str], conditions: dict[str, Any]) -> Any:
    """Evaluate a template condition (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition, Ref)."""
    if isinstance(node, dict) and len(node) == 1:
        ((name, argument),) = node.items()
        if name == "Ref":
            return values[argument]
        if name == "Condition":
            return _condition_value(conditions[argument], values, conditions)
        items = [_condition_value(item, values, conditions) for item in argument]
        if name == "Fn::Equals":
            return items[0] == items[1]
        if name == "Fn::Not":
            return not items[0]
        if name == "Fn::And":
            return all(items)
        if name == "Fn::Or":
            return any(items)
    if isinstance(node, str | bool):
        return node
    raise AssertionError(f"the audit cannot evaluate the condition {node!r}")


def conditions(parameters: dict[str, str]) -> dict[str, bool]:
    """Every condition of the template, for these stack parameters."""
    declared = _template().get("Conditions", {})
    values = _parameter_values(parameters)
    return {name: bool(_condition_value(node, values, declared)) for name, node in declared.items()}


def _resource_id(node: Any, parameters: dict[str, str]) -> str:
    """A logical id, ANY, or (Fn::Sub) an ARN pattern such as arn:aws:iam::*:role/NAME."""
    if node == "*":
        return ANY
    if isinstance(node, dict) and "Fn::GetAtt" in node and node["Fn::GetAtt"][1] == "Arn":
        return str(node["Fn::GetAtt"][0])
    if isinstance(node, dict) and "Ref" in node:
        return str(node["Ref"])
    if isinstance(node, dict) and isinstance(node.get("Fn::Sub"), str):
        values = _parameter_values(parameters)
        # ${Resource.Arn}: the resource's logical id (`DedupeTable/index/history-*`).
        return re.sub(
            r"\$\{([^}]+)\}",
            lambda m: (
                m.group(1).removesuffix(".Arn")
                if m.group(1).endswith(".Arn")
                else values[m.group(1)]
            ),
            node["Fn::Sub"],
        )
    raise AssertionError(f"the audit cannot resolve the policy resource {node!r}")


def grants(
    policy: str,
    source: dict[str, Any] | None = None,
    conditions: dict[str, bool] = CONDITIONS,
    parameters: dict[str, str] | None = None,
) -> list[Grant]:
    """The (action, resource) pairs a managed policy of the template (amid.yaml) allows."""
    resources = (source or _template())["Resources"]
    document = _resolve(resources[policy]["Properties"]["PolicyDocument"], conditions)
    result = []
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", statement
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement
        assert statement.get("Condition", VIA_SNS) == VIA_SNS, statement
        via = "sns" if "Condition" in statement else ""
        actions = statement["Action"]
        resources = statement["Resource"]
        for action in [actions] if isinstance(actions, str) else actions:
            for resource in [resources] if not isinstance(resources, list) else resources:
                resource_id = _resource_id(resource, parameters or PARAMETERS)
                result.append(Grant(policy, statement["Sid"], action, resource_id, via))
    return result


def _covers(granted: str, needed: str) -> bool:
    """A grant's resource covers a need's: ANY, the same logical id, or an ARN pattern."""
    if granted in (ANY, needed):
        return True
    # An ARN pattern, or a pattern under a logical id (a table's indexes).
    return (granted.startswith("arn:") or "/" in granted) and fnmatch.fnmatchcase(needed, granted)


def allows(policy_grants: list[Grant], need: Need) -> bool:
    return any(
        fnmatch.fnmatchcase(need.action.lower(), grant.action.lower())
        and _covers(grant.resource, need.resource)
        and grant.via in ("", need.via)
        for grant in policy_grants
    )


def used(grant: Grant, needs: list[Need]) -> bool:
    return any(
        need.action == grant.action
        and _covers(grant.resource, need.resource)
        and grant.via in ("", need.via)
        for need in needs
    )


# --- the recording -------------------------------------------------------------------


class RecordingMotoServer(MotoServer):
    """moto's server with its recorder writing to `path`."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def start(self, timeout: float = 30.0) -> None:
        saved = os.environ.get("MOTO_RECORDER_FILEPATH")
        os.environ["MOTO_RECORDER_FILEPATH"] = str(self.path)
        try:
            super().start(timeout)
        finally:
            if saved is None:
                del os.environ["MOTO_RECORDER_FILEPATH"]
            else:
                os.environ["MOTO_RECORDER_FILEPATH"] = saved

    def recorder(self, verb: str) -> str:
        method = "GET" if verb == "download-recording" else "POST"
        request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
            f"{self.url}/moto-api/recorder/{verb}", method=method
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return str(answer.read().decode())

    @contextlib.contextmanager
    def recording(self, into: list[dict[str, Any]]) -> Iterator[None]:
        """Record the requests made in the block; append them to `into`."""
        self.recorder("reset-recording")
        self.recorder("start-recording")
        try:
            yield
        finally:
            self.recorder("stop-recording")
            text = self.recorder("download-recording")
            into.extend(json.loads(line) for line in text.splitlines() if line.strip())


_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")


def _header(entry: dict[str, Any], name: str) -> str:
    headers = {key.lower(): value for key, value in entry["headers"].items()}
    return str(headers.get(name.lower(), ""))


def _request(entry: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(service, operation, parameters) of a recorded AWS API request."""
    scope = _SCOPE.search(_header(entry, "Authorization"))
    assert scope, f"unsigned request {entry['method']} {entry['url']}"
    service = scope.group(1)
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode()
    target = _header(entry, "X-Amz-Target")
    if target:  # JSON protocols: SQS, DynamoDB, EventBridge
        return service, target.rsplit(".", 1)[1], json.loads(body or "{}")
    form = {key: values[0] for key, values in parse_qs(body).items()}  # query: SNS, EC2
    return service, form.pop("Action"), form


class Stack:
    """The deployed stack: which logical id a named resource is.

    `topic_key` is the KMS key the topic is encrypted with (its KmsMasterKeyId).
    """

    def __init__(self, outputs: dict[str, str], topic_key: str = "") -> None:
        self.outputs = outputs
        self.topic_key = topic_key
        self.ids = {
            ("kms", topic_key): TOPIC_KEY,
            ("sqs", outputs["QueueUrl"].rsplit("/", 1)[1]): "Queue",
            ("sqs", outputs["DeadLetterQueueUrl"].rsplit("/", 1)[1]): "DeadLetterQueue",
            ("sns", outputs["TopicArn"].rsplit(":", 1)[1]): "AmiEventsTopic",
            ("dynamodb", outputs["TableName"]): "DedupeTable",
            ("events", outputs["RuleArn"].rsplit("/", 1)[1]): "AmiStateChangeRule",
        }

    def logical_id(self, service: str, name: str) -> str:
        return self.ids.get((service, name), f"not-in-the-stack:{service}:{name}")

    def needs(self, entry: dict[str, Any]) -> list[Need]:
        service, operation, params = _request(entry)
        name = f"{service}:{operation}"
        if name in ACCOUNT_WIDE:
            return [Need(name, name, ANY)]
        if service == "dynamodb" and operation == "TransactWriteItems":
            return [
                Need(name, TRANSACT_ACTIONS[kind], self.logical_id(service, item["TableName"]))
                for entry_item in params["TransactItems"]
                for kind, item in entry_item.items()
            ]
        if service == "sqs":
            queue = params.get("QueueName") or str(params["QueueUrl"]).rsplit("/", 1)[1]
            resource = self.logical_id(service, queue)
        elif service == "sns":
            resource = self.logical_id(service, str(params["TopicArn"]).rsplit(":", 1)[1])
            if operation == "Publish" and resource == "AmiEventsTopic" and self._customer_key():
                key = self.logical_id("kms", self.topic_key)
                return [Need(name, name, resource)] + [
                    Need(name, action, key, via="sns") for action in TOPIC_KEY_ACTIONS
                ]
        elif service == "dynamodb":
            resource = self.logical_id(service, params["TableName"])
            if "IndexName" in params:  # IAM's resource is the index: TABLE-ARN/index/NAME
                resource += f"/index/{params['IndexName']}"
        elif service == "events":
            resource = self.logical_id(service, params["Name"])
        elif service == "sts" and operation == "AssumeRole":
            resource = str(params["RoleArn"])  # a role in another account: its ARN
        else:
            raise AssertionError(f"the audit does not know {name}: map it to its resource")
        return [Need(name, BATCH_ACTIONS.get(name, name), resource)]

    def _customer_key(self) -> bool:
        """A customer managed key: the AWS managed alias/aws/sns needs no grant of amid's
        own (its key policy admits every principal of the account through SNS)."""
        return bool(self.topic_key) and not self.topic_key.startswith("alias/aws/")

    def amid_needs(self, entries: list[dict[str, Any]]) -> list[Need]:
        """What amid's own requests (by User-Agent) need; the test's setup is left out."""
        return [
            need
            for entry in entries
            if AMID_AGENT in _header(entry, "User-Agent")
            for need in self.needs(entry)
        ]


# --- the scenario --------------------------------------------------------------------


def _client(service: str, url: str) -> Any:
    return botocore.session.get_session().create_client(
        service, region_name=REGION, endpoint_url=url
    )


def _until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def _queue_policy(outputs: dict[str, str], sqs: Any) -> str:
    """The template's QueuePolicy with the stack's ARNs: moto's CloudFormation skips it."""
    arns = {
        "Queue": sqs.get_queue_attributes(
            QueueUrl=outputs["QueueUrl"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"],
        "DeadLetterQueue": sqs.get_queue_attributes(
            QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"],
        "AmiStateChangeRule": outputs["RuleArn"],
    }

    def substitute(node: Any) -> Any:
        if isinstance(node, dict) and "Fn::GetAtt" in node:
            return arns[node["Fn::GetAtt"][0]]
        if isinstance(node, dict):
            return {key: substitute(value) for key, value in node.items()}
        if isinstance(node, list):
            return [substitute(item) for item in node]
        return node

    document = _template()["Resources"]["QueuePolicy"]["Properties"]["PolicyDocument"]
    return json.dumps(substitute(document))


async def _ledger_table(endpoint: str, table: str) -> None:
    session = get_session()
    async with session.create_client("dynamodb", REGION, endpoint_url=endpoint) as client:
        await create_table(client, table)


def _config(outputs: dict[str, str], endpoint: str, work: Path, port: int) -> str:
    handlers = "".join(
        [
            f"  - name: topic\n    type: sns\n    topic_arn: {outputs['TopicArn']}\n",
            hook_handler(
                work / "hook.jsonl", "ok", "hook", "    match: {detail: {State: [available]}}\n"
            ),
            hook_handler(
                work / "slow.jsonl",
                "sleep:3",
                "slow",
                "    match: {detail: {State: [deregistered]}}\n",
            ),
            hook_handler(
                work / "flaky.jsonl",
                "tempfail:1",
                "flaky",
                "    match: {detail: {State: [failed]}}\n    retry: {attempts: 1}\n",
            ),
        ]
    )
    # Production settings but for the times; SQS and every other client reach moto through
    # AWS_ENDPOINT_URL, queue.endpoint_url only repeats it.
    return f"""
queue:
  url: {outputs["QueueUrl"]}
  region: {REGION}
  endpoint_url: {endpoint}
  wait_time: 1s
  visibility_timeout: 2s
  redelivery: {{initial: 0s, max: 1s}}
shutdown_timeout: 10s
dedupe: {{backend: dynamodb, table: {outputs["TableName"]}}}
enrich: {{describe_images: true}}
metrics: {{listen: "127.0.0.1:{port}", queue_depth_interval: 1s, ui: true}}
logging: {{level: info, format: json}}
defaults:
  timeout: 10s
  retry: {{attempts: 2, initial_backoff: 10ms, max_backoff: 50ms}}
handlers:
{handlers}"""


def _amid(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amid", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _run_scenario(server: RecordingMotoServer, work: Path) -> Audit:
    env = {**os.environ, "AWS_ENDPOINT_URL": server.url}
    key = _client("kms", server.url).create_key(Description="amid's topic")["KeyMetadata"]["Arn"]
    parameters = {**PARAMETERS, TOPIC_KEY: key}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", server.url)
        outputs = _deploy(enable_table=True, **{TOPIC_KEY: key})
    sqs, sns, ec2 = (_client(name, server.url) for name in ("sqs", "sns", "ec2"))
    topic = sns.get_topic_attributes(TopicArn=outputs["TopicArn"])["Attributes"]
    stack = Stack(outputs, topic.get("KmsMasterKeyId", ""))
    sqs.set_queue_attributes(
        QueueUrl=outputs["QueueUrl"], Attributes={"Policy": _queue_policy(outputs, sqs)}
    )
    # moto's CloudFormation leaves out the table's TimeToLiveSpecification: create_table
    # (idempotent) turns TTL on, as `amid dedupe create-table` would.
    asyncio.run(_ledger_table(server.url, outputs["TableName"]))
    image = ec2.register_image(Name="amid-audit", RootDeviceName="/dev/xvda")["ImageId"]
    reader = sqs.create_queue(QueueName="topic-reader")["QueueUrl"]
    reader_arn = sqs.get_queue_attributes(QueueUrl=reader, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=outputs["TopicArn"], Protocol="sqs", Endpoint=reader_arn)
    config = work / "amid.yaml"
    port = free_port()
    config.write_text(_config(outputs, server.url, work, port))

    def count(url: str) -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def hook_calls() -> list[dict[str, Any]]:
        return [
            call for name in ("hook", "slow", "flaky") for call in records(work / f"{name}.jsonl")
        ]

    daemon: list[dict[str, Any]] = []
    with server.recording(daemon), (work / "amid.log").open("w") as log:
        for body in (
            event_body("available", image),
            event_body("deregistered", image),
            event_body("failed", image),
            "not an event",
        ):
            sqs.send_message(QueueUrl=outputs["QueueUrl"], MessageBody=body)
        process = subprocess.Popen(
            [sys.executable, "-m", "amid", "run", "-c", str(config)],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _until(lambda: len(hook_calls()) == 3, "every hook called")
            # Only the invalid message may be left (it cycles to the dead-letter queue).
            _until(lambda: count(outputs["QueueUrl"]) <= 1, "handled messages deleted")
            time.sleep(1.5)  # one more round of queue depth metrics
            # The status page's API reads the delivery record: the most recent, by image.
            for query in ("", f"?image_id={image}"):
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/events{query}", timeout=10
                ) as response:
                    assert json.loads(response.read())["events"], query
        finally:
            process.send_signal(signal.SIGTERM)
            daemon_exit = process.wait(timeout=30)
    daemon_hooks = hook_calls()
    published = sqs.receive_message(QueueUrl=reader, MaxNumberOfMessages=10).get("Messages", [])

    tools: list[dict[str, Any]] = []
    with server.recording(tools):
        (work / "replay.json").write_text(event_body("available", image))
        test_event = _amid(
            "test-event", "-c", str(config), "--state", "available", "--image-id", image,
            env=env, cwd=work,
        )  # fmt: skip
        replay = _amid("replay", "-c", str(config), str(work / "replay.json"), env=env, cwd=work)
        history = _amid("history", "-c", str(config), "--image-id", image, env=env, cwd=work)

    doctor: list[dict[str, Any]] = []
    with server.recording(doctor):
        diagnosis = _amid("doctor", "-c", str(config), env=env, cwd=work)

    return Audit(
        daemon=stack.amid_needs(daemon),
        tools=stack.amid_needs(tools),
        doctor=stack.amid_needs(doctor),
        daemon_exit=daemon_exit,
        parameters=parameters,
        tools_output=test_event.stdout
        + test_event.stderr
        + replay.stdout
        + replay.stderr
        + history.stdout
        + history.stderr,
        doctor_output=diagnosis.stdout + diagnosis.stderr,
        doctor_exit=diagnosis.returncode,
        hook_calls=daemon_hooks,
        published=len(published),
    )


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audit]:
    work = tmp_path_factory.mktemp("iam-audit")
    server = RecordingMotoServer(work / "recording.jsonl")
    with server.running():
        yield _run_scenario(server, work)


def _operations(needs: list[Need]) -> set[str]:
    return {need.operation for need in needs}


def _denied(policy_grants: list[Grant], needs: list[Need]) -> list[Need]:
    return sorted({need for need in needs if not allows(policy_grants, need)}, key=str)


# --- the audit -----------------------------------------------------------------------

# moto's CloudFormation cannot create queue policies: the test sets the template's own.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning")


@pytest.mark.slow
class TestDaemon:
    def test_the_scenario_ran_and_amid_stopped_cleanly_on_sigterm(self, audit: Audit) -> None:
        assert audit.daemon_exit == 0
        assert sorted(call["handler"] for call in audit.hook_calls) == ["flaky", "hook", "slow"]
        assert audit.published == 3, "the sns handler published each event once"

    def test_the_scenario_made_amid_do_everything_it_does_in_production(self, audit: Audit) -> None:
        assert _operations(audit.daemon) == DAEMON_OPERATIONS
        depth = {n.resource for n in audit.daemon if n.operation == "sqs:GetQueueAttributes"}
        assert depth == {"Queue", "DeadLetterQueue"}
        queried = {n.resource for n in audit.daemon if n.operation == "dynamodb:Query"}
        assert queried == {
            "DedupeTable",
            "DedupeTable/index/history-recent",
            "DedupeTable/index/history-by-image",
        }

    def test_every_call_is_allowed_by_amid_policy(self, audit: Audit) -> None:
        assert _denied(amid_grants(audit.parameters), audit.daemon) == []

    def test_amid_policy_grants_nothing_the_daemon_does_not_use(self, audit: Audit) -> None:
        policy = amid_grants(audit.parameters)
        unused = [grant for grant in policy if not used(grant, audit.daemon)]
        assert unused == []

    def test_only_calls_without_resource_level_permissions_are_granted_on_any_resource(
        self, audit: Audit
    ) -> None:
        policy = amid_grants(audit.parameters)
        wildcard = {grant.action for grant in policy if grant.resource == ANY}
        assert wildcard == {need.action for need in audit.daemon if need.resource == ANY}

    def test_publishing_used_the_topics_key_through_sns_which_only_the_key_policy_grants(
        self, audit: Audit
    ) -> None:
        key_needs = {(n.action, n.resource, n.via) for n in audit.daemon if n.via}
        assert key_needs == {(action, TOPIC_KEY, "sns") for action in TOPIC_KEY_ACTIONS}
        added = [g for g in amid_grants(audit.parameters) if g not in amid_grants(PARAMETERS)]
        assert {(g.policy, g.action, g.resource, g.via) for g in added} == {
            ("TopicKeyPolicy", action, TOPIC_KEY, "sns") for action in TOPIC_KEY_ACTIONS
        }
        assert _denied(grants("AmidPolicy"), audit.daemon) == sorted(
            {n for n in audit.daemon if n.via}, key=str
        ), "AmidPolicy alone grants no key"

    def test_without_a_topic_key_the_policy_is_still_exact(self, audit: Audit) -> None:
        """The template's default, the AWS managed key: its key policy admits amid."""
        policy = amid_grants(PARAMETERS)
        calls = [need for need in audit.daemon if not need.via]
        assert _denied(policy, calls) == []
        assert [grant for grant in policy if not used(grant, calls)] == []


@pytest.mark.slow
class TestOperatorTools:
    def test_test_event_and_replay_need_nothing_beyond_amid_policy(self, audit: Audit) -> None:
        assert "delivered" in audit.tools_output, audit.tools_output
        assert {"sns:Publish", "ec2:DescribeImages", "dynamodb:Query"} <= _operations(
            audit.tools
        ), "the tools published, enriched and used the ledger"
        assert _denied(amid_grants(audit.parameters), audit.tools) == []

    def test_amid_history_reads_the_record_with_amid_policy(self, audit: Audit) -> None:
        assert "RECEIVED" in audit.tools_output and "-> hook" in audit.tools_output, (
            audit.tools_output
        )
        assert "DedupeTable/index/history-by-image" in {n.resource for n in audit.tools}


@pytest.mark.slow
class TestDoctor:
    def test_doctor_ran_every_check(self, audit: Audit) -> None:
        assert audit.doctor_exit == 0, audit.doctor_output
        assert _operations(audit.doctor) == DOCTOR_OPERATIONS

    def test_every_doctor_call_is_allowed_by_amid_and_doctor_policies(self, audit: Audit) -> None:
        both = amid_grants(audit.parameters) + grants("AmidDoctorPolicy")
        assert _denied(both, audit.doctor) == []

    def test_the_doctor_policy_grants_only_what_doctor_uses_and_amid_policy_lacks(
        self, audit: Audit
    ) -> None:
        daemon = amid_grants(audit.parameters)
        extra = grants("AmidDoctorPolicy")
        assert [grant for grant in extra if not used(grant, audit.doctor)] == []
        overlap = [g for g in extra if allows(daemon, Need("", g.action, g.resource))]
        assert overlap == []

    def test_the_daemon_never_makes_a_doctor_call(self, audit: Audit) -> None:
        doctor_only = {grant.action for grant in grants("AmidDoctorPolicy")}
        assert doctor_only.isdisjoint(need.action for need in audit.daemon)


# --- the organisation's policies, as data ---------------------------------------------
#
# moto enforces no IAM policy, trust policy, bus policy or queue policy
# (test_cloudformation_org.py says what it carries), so what each statement admits is
# pinned here: the principal and the conditions of every statement of every policy in the
# three templates, with every optional part switched on. A new or changed statement fails
# test_every_statement_is_pinned until PINNED says who it admits and under what condition.

CENTRAL_CONDITIONS = {"AssumeDescribeImagesRole": True, "DedupeRecovery": True}
MEMBER_CONDITIONS = {"CreateDescribeImagesRole": True, "RequireOrganization": True}
SINGLE_CONDITIONS = {
    "CreateDedupeTable": True,
    "DedupeRecovery": True,
    "TopicCustomerKey": True,
    "AttachToRole": True,
    "AssumeDescribeImagesRole": True,
    "WithinOrganization": True,
}
TEMPLATES = {
    "amid.yaml": (SINGLE_TEMPLATE, SINGLE_CONDITIONS),
    "amid-central.yaml": (CENTRAL_TEMPLATE, CENTRAL_CONDITIONS),
    "amid-member.yaml": (MEMBER_TEMPLATE, MEMBER_CONDITIONS),
}
ORG = {"Ref": "OrganizationId"}
IN_ORG = {"StringEquals": {"aws:PrincipalOrgID": ORG}}
SECURE_ONLY = {"Bool": {"aws:SecureTransport": "false"}}
EVENTS = {"Service": "events.amazonaws.com"}
CENTRAL_RULE = {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["AmiStateChangeRule", "Arn"]}}}
NONE: dict[str, Any] = {}

# (template, resource, statement id) -> (effect, principal or None for identity policies,
# conditions)
PINNED: dict[tuple[str, str, str], tuple[str, Any, dict[str, Any]]] = {
    # amid.yaml: the single account
    ("amid.yaml", "QueuePolicy", "AllowAmiStateChangeRule"): ("Allow", EVENTS, CENTRAL_RULE),
    ("amid.yaml", "QueuePolicy", "DenyInsecureTransport"): ("Deny", "*", SECURE_ONLY),
    ("amid.yaml", "AmidPolicy", "ConsumeQueue"): ("Allow", None, NONE),
    ("amid.yaml", "AmidPolicy", "DeadLetterQueueDepth"): ("Allow", None, NONE),
    ("amid.yaml", "AmidPolicy", "PublishToTopic"): ("Allow", None, NONE),
    ("amid.yaml", "AmidPolicy", "DedupeLedger"): ("Allow", None, NONE),
    ("amid.yaml", "AmidPolicy", "DedupeHistory"): ("Allow", None, NONE),
    ("amid.yaml", "AmidPolicy", "EnrichWithDescribeImages"): ("Allow", None, NONE),
    ("amid.yaml", "AssumeDescribeImagesRolePolicy", "AssumeDescribeImagesRole"): (
        "Allow",
        None,
        {"StringEquals": {"aws:ResourceOrgID": ORG}},
    ),
    ("amid.yaml", "TopicKeyPolicy", "PublishWithTopicKey"): ("Allow", None, VIA_SNS),
    ("amid.yaml", "AmidDoctorPolicy", "FindTheRuleTargetingTheQueue"): ("Allow", None, NONE),
    ("amid.yaml", "AmidDoctorPolicy", "ReadTheRule"): ("Allow", None, NONE),
    ("amid.yaml", "AmidDoctorPolicy", "ReadTheTopic"): ("Allow", None, NONE),
    ("amid.yaml", "AmidDoctorPolicy", "ReadTheLedgerTable"): ("Allow", None, NONE),
    # amid-central.yaml: the organisation's accounts put on the bus, its rule sends to the queue
    ("amid-central.yaml", "EventBus", "OrganisationPutsAmiStateChanges"): (
        "Allow",
        "*",
        {
            "StringEquals": {"aws:PrincipalOrgID": ORG},
            "ForAllValues:StringEquals": {
                "events:source": ["aws.ec2"],
                "events:detail-type": ["EC2 AMI State Change"],
            },
        },
    ),
    ("amid-central.yaml", "QueuePolicy", "AllowAmiStateChangeRule"): (
        "Allow",
        EVENTS,
        CENTRAL_RULE,
    ),
    ("amid-central.yaml", "QueuePolicy", "DenyInsecureTransport"): ("Deny", "*", SECURE_ONLY),
    ("amid-central.yaml", "AmidRole", "EcsTasksOfThisAccount"): (
        "Allow",
        {"Service": "ecs-tasks.amazonaws.com"},
        {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnLike": {
                "aws:SourceArn": {
                    "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:*"
                }
            },
        },
    ),
    # EC2 supplies no source keys when an instance profile takes its role (see the template).
    ("amid-central.yaml", "AmidRole", "Ec2Instances"): (
        "Allow",
        {"Service": "ec2.amazonaws.com"},
        NONE,
    ),
    ("amid-central.yaml", "AmidPolicy", "ConsumeQueue"): ("Allow", None, NONE),
    ("amid-central.yaml", "AmidPolicy", "DeadLetterQueueDepth"): ("Allow", None, NONE),
    ("amid-central.yaml", "AmidPolicy", "DedupeLedger"): ("Allow", None, NONE),
    ("amid-central.yaml", "AmidPolicy", "DedupeHistory"): ("Allow", None, NONE),
    ("amid-central.yaml", "AmidPolicy", "EnrichWithDescribeImages"): ("Allow", None, NONE),
    ("amid-central.yaml", "AssumeDescribeImagesRolePolicy", "AssumeDescribeImagesRole"): (
        "Allow",
        None,
        {"StringEquals": {"aws:ResourceOrgID": ORG}},
    ),
    ("amid-central.yaml", "AmidDoctorPolicy", "FindTheRuleTargetingTheQueue"): (
        "Allow",
        None,
        NONE,
    ),
    ("amid-central.yaml", "AmidDoctorPolicy", "ReadTheRule"): ("Allow", None, NONE),
    ("amid-central.yaml", "AmidDoctorPolicy", "ReadTheBusPolicy"): ("Allow", None, NONE),
    ("amid-central.yaml", "AmidDoctorPolicy", "ReadTheLedgerTable"): ("Allow", None, NONE),
    # amid-member.yaml: only the account's own rule forwards, only amid describes images
    ("amid-member.yaml", "ForwardRole", "ThisAccountsForwardingRule"): (
        "Allow",
        EVENTS,
        {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnEquals": {
                "aws:SourceArn": {
                    "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/${RuleName}"
                }
            },
        },
    ),
    ("amid-member.yaml", "ForwardRole", "PutEventsOnTheCentralBus"): ("Allow", None, NONE),
    ("amid-member.yaml", "DescribeImagesRole", "AmidRoleOnly"): (
        "Allow",
        {"AWS": {"Ref": "AmidRoleArn"}},
        IN_ORG,
    ),
    ("amid-member.yaml", "DescribeImagesRole", "DescribeImages"): ("Allow", None, NONE),
}


def policy_statements(
    name: str, conditions: dict[str, bool] | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """(resource, kind, statement) of every policy document in a template: identity policies
    (managed, and a role's inline ones), trust policies, and the bus and queue policies."""
    path, defaults = TEMPLATES[name]
    resources = template(path)["Resources"]
    found = []
    for logical_id, resource in resources.items():
        properties = _no_value(_resolve(resource.get("Properties", {}), conditions or defaults))
        documents: list[tuple[str, Any]] = []
        kind = resource["Type"]
        if kind == "AWS::IAM::ManagedPolicy":
            documents.append(("identity", properties["PolicyDocument"]))
        elif kind == "AWS::IAM::Role":
            documents.append(("trust", properties["AssumeRolePolicyDocument"]))
            documents.extend(
                ("identity", p["PolicyDocument"]) for p in properties.get("Policies", [])
            )
        elif kind == "AWS::SQS::QueuePolicy":
            documents.append(("resource", properties["PolicyDocument"]))
        elif kind == "AWS::Events::EventBus":
            documents.append(("resource", properties["Policy"]))
        for document_kind, document in documents:
            found.extend((logical_id, document_kind, s) for s in document["Statement"])
    return found


def _no_value(node: Any) -> Any:
    """Drop AWS::NoValue as a property's value too, as CloudFormation does."""
    if isinstance(node, dict):
        return {k: _no_value(v) for k, v in node.items() if v != {"Ref": "AWS::NoValue"}}
    if isinstance(node, list):
        return [_no_value(item) for item in node]
    return node


def _pin(statement: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    return statement["Effect"], statement.get("Principal"), statement.get("Condition", {})


def _statement(name: str, resource: str, sid: str, **conditions: bool) -> dict[str, Any]:
    (found,) = [
        s
        for r, _, s in policy_statements(name, conditions or None)
        if (r, s.get("Sid")) == (resource, sid)
    ]
    return found


class TestOrganisationPoliciesAsData:
    def test_every_statement_is_pinned_with_its_principal_and_conditions(self) -> None:
        found = {
            (name, resource, statement["Sid"]): _pin(statement)
            for name in TEMPLATES
            for resource, _, statement in policy_statements(name)
        }
        assert found == PINNED

    def test_identity_policies_name_no_principal_and_resource_policies_always_do(self) -> None:
        for name in TEMPLATES:
            for resource, kind, statement in policy_statements(name):
                assert ("Principal" in statement) == (kind != "identity"), (name, resource)

    def test_nothing_admits_any_principal_without_the_organisation_unless_it_denies(
        self,
    ) -> None:
        for name in TEMPLATES:
            for resource, kind, statement in policy_statements(name):
                principal = statement.get("Principal")
                anyone = principal == "*" or principal == {"AWS": "*"}
                if kind != "identity" and anyone and statement["Effect"] == "Allow":
                    assert statement["Condition"]["StringEquals"]["aws:PrincipalOrgID"] == ORG, (
                        name,
                        resource,
                    )

    def test_only_the_organisations_ami_state_changes_pass_bus_rule_and_queue(self) -> None:
        central = template(CENTRAL_TEMPLATE)["Resources"]
        bus = _statement("amid-central.yaml", "EventBus", "OrganisationPutsAmiStateChanges")
        rule = central["AmiStateChangeRule"]["Properties"]
        queue = _statement("amid-central.yaml", "QueuePolicy", "AllowAmiStateChangeRule")

        assert (bus["Action"], bus["Condition"]["StringEquals"]) == (
            "events:PutEvents",
            {"aws:PrincipalOrgID": ORG},
        )
        assert rule["EventPattern"] == {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 AMI State Change"],
        }
        assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["Queue", "Arn"]}]
        assert (queue["Action"], queue["Condition"]) == ("sqs:SendMessage", CENTRAL_RULE)

    def test_the_describe_images_role_describes_images_only_for_amids_role_only(self) -> None:
        trust = _statement("amid-member.yaml", "DescribeImagesRole", "AmidRoleOnly")
        grant = _statement("amid-member.yaml", "DescribeImagesRole", "DescribeImages")
        without_org = _statement(
            "amid-member.yaml", "DescribeImagesRole", "AmidRoleOnly",
            CreateDescribeImagesRole=True, RequireOrganization=False,
        )  # fmt: skip

        assert (trust["Action"], trust["Principal"]) == (
            "sts:AssumeRole",
            {"AWS": {"Ref": "AmidRoleArn"}},
        )
        assert (grant["Action"], grant["Resource"]) == ("ec2:DescribeImages", "*")
        assert "Condition" not in without_org and without_org["Principal"] == trust["Principal"]

    def test_amid_may_assume_only_the_named_role_and_in_the_organisation_where_given(
        self,
    ) -> None:
        role = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${DescribeImagesRoleName}"}
        central = _statement(
            "amid-central.yaml", "AssumeDescribeImagesRolePolicy", "AssumeDescribeImagesRole"
        )
        single_anywhere = _statement(
            "amid.yaml", "AssumeDescribeImagesRolePolicy", "AssumeDescribeImagesRole",
            **{**SINGLE_CONDITIONS, "WithinOrganization": False},
        )  # fmt: skip

        assert (central["Action"], central["Resource"]) == ("sts:AssumeRole", role)
        assert central["Condition"] == {"StringEquals": {"aws:ResourceOrgID": ORG}}
        assert single_anywhere["Resource"] == role and "Condition" not in single_anywhere

    def test_without_a_role_name_amid_may_assume_nothing(self) -> None:
        for name, conditions in (
            ("amid.yaml", {**SINGLE_CONDITIONS, "AssumeDescribeImagesRole": False}),
            ("amid-central.yaml", {**CENTRAL_CONDITIONS, "AssumeDescribeImagesRole": False}),
        ):
            resources = template(TEMPLATES[name][0])["Resources"]
            policy = resources["AssumeDescribeImagesRolePolicy"]
            assert policy["Condition"] == "AssumeDescribeImagesRole"
            actions = {
                action
                for resource, kind, s in policy_statements(name, conditions)
                if kind == "identity" and resource != "AssumeDescribeImagesRolePolicy"
                for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            }
            assert not any(a.startswith("sts:") for a in actions), name

    def test_the_forwarding_role_puts_events_on_the_central_bus_only(self) -> None:
        grant = _statement("amid-member.yaml", "ForwardRole", "PutEventsOnTheCentralBus")
        member = template(MEMBER_TEMPLATE)["Resources"]
        (target,) = member["AmiStateChangeRule"]["Properties"]["Targets"]

        assert (grant["Action"], grant["Resource"]) == (
            "events:PutEvents",
            {"Ref": "CentralEventBusArn"},
        )
        assert target == {
            "Id": "amid-central-bus",
            "Arn": {"Ref": "CentralEventBusArn"},
            "RoleArn": {"Fn::GetAtt": ["ForwardRole", "Arn"]},
        }
        assert "RoleName" not in member["ForwardRole"]["Properties"], "one per region, unnamed"

    def test_the_central_amid_policy_is_the_single_account_one_without_the_topic(self) -> None:
        central = {
            (g.sid, g.action, g.resource)
            for g in grants("AmidPolicy", template(CENTRAL_TEMPLATE), CENTRAL_CONDITIONS)
        }
        single = {(g.sid, g.action, g.resource) for g in grants("AmidPolicy")}
        assert central == {grant for grant in single if grant[0] != "PublishToTopic"}


@pytest.mark.slow
class TestCentralPolicyAudit:
    def test_every_daemon_call_but_publishing_is_allowed_by_the_central_amid_policy(
        self, audit: Audit
    ) -> None:
        central = grants("AmidPolicy", template(CENTRAL_TEMPLATE), CENTRAL_CONDITIONS)
        calls = [need for need in audit.daemon if need.operation != "sns:Publish"]
        assert _denied(central, calls) == []
        assert [grant for grant in central if not used(grant, calls)] == []


# --- images in other accounts: enrich.role_arn -----------------------------------------
#
# With the stack's DescribeImagesRoleName set, AmidPolicy grants sts:AssumeRole on
# arn:<partition>:iam::*:role/<name>, the member stack's role in each account. amid runs with
# `enrich.role_arn` rendering to that role, routes an event of another account by its image's
# tag, and `amid doctor --account` checks the role: amid's own calls (its own access key) must
# be exactly what AmidPolicy grants, sts:AssumeRole included; the calls made as the role (the
# role's access key) are the member role's, which grants ec2:DescribeImages only.

ROLE_NAME = "amid-describe-images"
OTHER_ACCOUNT = "111122223333"
ROLE_PARAMETERS = {**PARAMETERS, "DescribeImagesRoleName": ROLE_NAME}
OWN_ACCESS_KEY = "testing"  # tests/conftest.py: amid's own credentials
_ACCESS_KEY = re.compile(r"Credential=([^/]+)/")


def _access_key(entry: dict[str, Any]) -> str:
    found = _ACCESS_KEY.search(_header(entry, "Authorization"))
    return found.group(1) if found else ""


@dataclass(frozen=True, slots=True)
class RoleAudit:
    own: list[Need]  # amid's calls with its own credentials: AmidPolicy's business
    as_role: list[Need]  # amid's calls as the assumed role: the member role's business
    doctor_own: list[Need]
    doctor_as_role: list[Need]
    daemon_exit: int
    hook_calls: list[dict[str, Any]]
    doctor_output: str


def amid_grants(parameters: dict[str, str]) -> list[Grant]:
    """What amid's role is granted with these parameters: AmidPolicy and any other policy of
    the template the parameters create (not the operator's AmidDoctorPolicy)."""
    truth = conditions(parameters)
    names = [
        name
        for name, resource in _template()["Resources"].items()
        if resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy")
        and name != "AmidDoctorPolicy"
        and truth.get(resource.get("Condition", ""), True)
    ]
    return [
        grant for name in names for grant in grants(name, conditions=truth, parameters=parameters)
    ]


def _split(stack: Stack, entries: list[dict[str, Any]]) -> tuple[list[Need], list[Need]]:
    mine = [e for e in entries if AMID_AGENT in _header(e, "User-Agent")]
    own = [n for e in mine if _access_key(e) == OWN_ACCESS_KEY for n in stack.needs(e)]
    as_role = [n for e in mine if _access_key(e) != OWN_ACCESS_KEY for n in stack.needs(e)]
    return own, as_role


def _image_in_other_account(url: str) -> str:
    sts = _client("sts", url)
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/{ROLE_NAME}", RoleSessionName="audit-setup"
    )["Credentials"]
    ec2 = botocore.session.get_session().create_client(
        "ec2",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    base = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    image = str(
        ec2.create_image(InstanceId=instance["Instances"][0]["InstanceId"], Name="payments-api")[
            "ImageId"
        ]
    )
    ec2.create_tags(Resources=[image], Tags=[{"Key": "Team", "Value": "payments"}])
    return image


def _deploy_with_role() -> dict[str, str]:
    cloudformation = _client("cloudformation", os.environ["AWS_ENDPOINT_URL"])
    cloudformation.create_stack(
        StackName="amid-roles",
        TemplateBody=_TEMPLATE_PATH.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in ROLE_PARAMETERS.items()],
    )
    stack = cloudformation.describe_stacks(StackName="amid-roles")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def _role_config(outputs: dict[str, str], endpoint: str, work: Path) -> str:
    handler = hook_handler(
        work / "team.jsonl",
        "ok",
        "team",
        "    match: {detail: {State: [available]}, image: {tags: {Team: [payments]}}}\n",
    )
    return f"""
queue:
  url: {outputs["QueueUrl"]}
  region: {REGION}
  endpoint_url: {endpoint}
  wait_time: 1s
  redelivery: {{initial: 0s, max: 1s}}
shutdown_timeout: 10s
dedupe: {{backend: dynamodb, table: {outputs["TableName"]}}}
enrich:
  describe_images: true
  role_arn: "arn:aws:iam::{{{{ account }}}}:role/{ROLE_NAME}"
metrics: {{listen: "127.0.0.1:0", queue_depth_interval: 0}}
logging: {{level: info, format: json}}
handlers:
{handler}"""


def _run_role_scenario(server: RecordingMotoServer, work: Path) -> RoleAudit:
    env = {**os.environ, "AWS_ENDPOINT_URL": server.url}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", server.url)
        outputs = _deploy_with_role()
    stack = Stack(outputs)
    asyncio.run(_ledger_table(server.url, outputs["TableName"]))
    image = _image_in_other_account(server.url)
    sqs = _client("sqs", server.url)
    config = work / "amid.yaml"
    config.write_text(_role_config(outputs, server.url, work))
    daemon: list[dict[str, Any]] = []
    with server.recording(daemon), (work / "amid.log").open("w") as log:
        sqs.send_message(
            QueueUrl=outputs["QueueUrl"],
            MessageBody=event_body("available", image, account=OTHER_ACCOUNT),
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "amid", "run", "-c", str(config)],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _until(lambda: len(records(work / "team.jsonl")) == 1, "routed by the image's tag")
        finally:
            process.send_signal(signal.SIGTERM)
            daemon_exit = process.wait(timeout=30)
    doctor: list[dict[str, Any]] = []
    with server.recording(doctor):
        diagnosis = _amid(
            "doctor", "-c", str(config), "--account", OTHER_ACCOUNT, env=env, cwd=work
        )
    own, as_role = _split(stack, daemon)
    doctor_own, doctor_as_role = _split(stack, doctor)
    return RoleAudit(
        own=own,
        as_role=as_role,
        doctor_own=doctor_own,
        doctor_as_role=doctor_as_role,
        daemon_exit=daemon_exit,
        hook_calls=records(work / "team.jsonl"),
        doctor_output=diagnosis.stdout + diagnosis.stderr,
    )


@pytest.fixture(scope="module")
def role_audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleAudit]:
    work = tmp_path_factory.mktemp("iam-audit-roles")
    server = RecordingMotoServer(work / "recording.jsonl")
    with server.running():
        yield _run_role_scenario(server, work)


class TestRoleInOtherAccounts:
    """Needs deploy/cloudformation/amid.yaml's DescribeImagesRoleName (issue 14)."""

    def test_amid_assumed_the_role_and_routed_by_the_other_accounts_image(
        self, role_audit: RoleAudit
    ) -> None:
        assert role_audit.daemon_exit == 0
        assert [call["handler"] for call in role_audit.hook_calls] == ["team"]
        assumed = {n.resource for n in role_audit.own if n.operation == "sts:AssumeRole"}
        assert assumed == {f"arn:aws:iam::{OTHER_ACCOUNT}:role/{ROLE_NAME}"}

    def test_every_call_with_amids_own_credentials_is_allowed_by_amid_policy(
        self, role_audit: RoleAudit
    ) -> None:
        policy = amid_grants(ROLE_PARAMETERS)
        assert _denied(policy, role_audit.own) == []
        assert (
            _denied(
                policy
                + grants(
                    "AmidDoctorPolicy",
                    conditions=conditions(ROLE_PARAMETERS),
                    parameters=ROLE_PARAMETERS,
                ),
                role_audit.doctor_own,
            )
            == []
        )

    def test_the_assume_role_grant_is_used_and_is_the_only_one_the_parameter_adds(
        self, role_audit: RoleAudit
    ) -> None:
        with_role = amid_grants(ROLE_PARAMETERS)
        without = amid_grants(PARAMETERS)
        added = [grant for grant in with_role if grant not in without]
        assert [(g.action, g.resource) for g in added] == [
            ("sts:AssumeRole", f"arn:{PARTITION}:iam::*:role/{ROLE_NAME}")
        ]
        assert all(used(grant, role_audit.own) for grant in added)
        assert not any(g.action.startswith("sts:") for g in without), "no role, no AssumeRole"

    def test_as_the_role_amid_only_describes_images(self, role_audit: RoleAudit) -> None:
        assert {n.action for n in role_audit.as_role} == {"ec2:DescribeImages"}
        assert {n.action for n in role_audit.doctor_as_role} == {"ec2:DescribeImages"}

    def test_doctor_checked_the_role_in_the_account(self, role_audit: RoleAudit) -> None:
        assert (
            f"ok      describe-images role in {OTHER_ACCOUNT}: assumed" in role_audit.doctor_output
        )
