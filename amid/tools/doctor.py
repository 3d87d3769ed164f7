"""`amid doctor`: what usually goes wrong between EventBridge and amid, checked live.

Each check reads only (Get/Describe/List calls) and says ok or problem, and for
a problem how to fix it. A check whose prerequisite failed is not run. When the
queue is fed by a custom event bus (one amid for a whole organisation), its bus
policy is checked too and, for each member account given, the forwarding rule and
role there (amid/tools/organisation.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from amid.aws import AwsClients
from amid.config import Config, SnsHandlerConfig
from amid.patterns import PatternError, compile_pattern
from amid.tools.checks import AWS_ERRORS as _AWS_ERRORS
from amid.tools.checks import EVENTS_PRINCIPAL, Check, service_principals
from amid.tools.checks import as_list as _as_list
from amid.tools.checks import error_text as _error
from amid.tools.checks import statements as _statements
from amid.tools.offline import synthetic_event
from amid.tools.organisation import (
    CentralBus,
    MemberTarget,
    bus_of_rule,
    bus_policy,
    member_checks,
    only_ami_state_changes,
)

__all__ = ["Check", "MemberTarget", "diagnose", "report"]


async def diagnose(
    config: Config, aws: AwsClients, members: Sequence[MemberTarget] = ()
) -> list[Check]:
    region = config.queue.resolved_region
    sqs = await aws.client("sqs", region, config.queue.endpoint_url)
    checks: list[Check] = []
    try:
        attributes: dict[str, str] = (
            await sqs.get_queue_attributes(QueueUrl=config.queue.url, AttributeNames=["All"])
        )["Attributes"]
    except _AWS_ERRORS as error:
        checks.append(
            Check(
                "queue reachable",
                False,
                f"{config.queue.url}: {_error(error)}",
                "check queue.url, the region and credentials; amid needs sqs:GetQueueAttributes",
            )
        )
        checks.extend(await _handler_checks(config, aws))
        checks.extend(await _dedupe_checks(config, aws))
        return checks  # the members' checks need the bus the queue's policy names
    queue_arn = attributes.get("QueueArn", "")
    checks.append(Check("queue reachable", True, queue_arn))
    checks.append(await _redrive(sqs, attributes))
    checks.append(_retention(config, attributes))
    policy_check, source_arns = _queue_policy(attributes)
    checks.append(policy_check)
    buses = _custom_buses(source_arns, region)
    checks.append(await _rules(aws, region, queue_arn, source_arns, buses))
    for bus in buses:
        checks.append(await bus_policy(aws, bus))
    checks.append(await _encryption(aws, region, attributes))
    checks.extend(await _handler_checks(config, aws))
    checks.extend(await _dedupe_checks(config, aws))
    central = buses[0] if buses else None
    for member in members:
        checks.extend(await member_checks(config, aws, central, member))
    return checks


def _custom_buses(source_arns: set[str] | None, region: str | None) -> list[CentralBus]:
    """The custom buses whose rules the queue policy admits: the organisation layout."""
    found: dict[str, CentralBus] = {}
    for arn in sorted(source_arns or ()):
        bus = bus_of_rule(arn)
        if bus is not None:
            found.setdefault(bus[1], CentralBus(bus[0], bus[1], arn.split(":")[3] or region))
    return list(found.values())


async def _redrive(sqs: Any, attributes: dict[str, str]) -> Check:
    name = "redrive policy"
    fix = (
        "give the queue a RedrivePolicy with a dead-letter queue (deploy/cloudformation/amid.yaml)"
    )
    raw = attributes.get("RedrivePolicy")
    if not raw:
        return Check(name, False, "none: a message that always fails cycles forever", fix)
    policy = json.loads(raw)
    target = str(policy.get("deadLetterTargetArn", ""))
    parts = target.split(":")
    if len(parts) != 6:
        return Check(name, False, f"deadLetterTargetArn {target!r} is not a queue ARN", fix)
    try:
        await sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
    except _AWS_ERRORS as error:
        return Check(name, False, f"dead-letter queue {parts[5]}: {_error(error)}", fix)
    receives = policy.get("maxReceiveCount")
    return Check(name, True, f"dead-letter queue {parts[5]} after {receives} receives")


def _retention(config: Config, attributes: dict[str, str]) -> Check:
    retention = float(attributes.get("MessageRetentionPeriod", 345600))
    ttl = config.dedupe.ttl
    detail = f"messages kept {retention / 86400:g} d, event ids remembered {ttl / 86400:g} d"
    if retention < ttl:
        return Check("retention shorter than dedupe ttl", True, detail)
    return Check(
        "retention shorter than dedupe ttl",
        False,
        detail + ": a late redelivery could be notified twice",
        "lower the queue's MessageRetentionPeriod or raise dedupe.ttl above it",
    )


def _queue_policy(attributes: dict[str, str]) -> tuple[Check, set[str] | None]:
    """Does the queue policy let EventBridge send? Returns the rule ARNs it is limited to."""
    name = "queue policy admits EventBridge"
    fix = (
        "allow Principal {Service: events.amazonaws.com} sqs:SendMessage on the queue, "
        "with aws:SourceArn = the rule's ARN"
    )
    raw = attributes.get("Policy")
    if not raw:
        return Check(
            name, False, "the queue has no policy: EventBridge cannot send to it", fix
        ), None
    for statement in _statements(json.loads(raw)):
        if statement.get("Effect") != "Allow":
            continue
        actions = {a.lower() for a in _as_list(statement.get("Action", []))}
        if (
            EVENTS_PRINCIPAL in service_principals(statement)
            and {"sqs:sendmessage", "sqs:*"} & actions
        ):
            condition = statement.get("Condition", {})
            arns: set[str] = set()
            for operator in ("ArnEquals", "ArnLike", "StringEquals", "StringLike"):
                arns.update(_as_list(condition.get(operator, {}).get("aws:SourceArn", [])))
            limited = f", only for {', '.join(sorted(arns))}" if arns else ", for any rule"
            return Check(name, True, f"events.amazonaws.com may send{limited}"), arns or None
    return Check(name, False, "no statement allows events.amazonaws.com sqs:SendMessage", fix), None


async def _rules(
    aws: AwsClients,
    region: str | None,
    queue_arn: str,
    source_arns: set[str] | None,
    buses: list[CentralBus],
) -> Check:
    """An enabled rule matching AMI state changes targets the queue: on the default bus, or
    on a custom bus the queue policy admits (there it must match nothing else, for other
    accounts put events on that bus)."""
    name = "EventBridge rule targets the queue"
    fix = (
        "create an enabled rule with {source: [aws.ec2], detail-type: [EC2 AMI State Change]} "
        "targeting the queue"
    )
    events = await aws.client("events", region)
    sample = synthetic_event("failed")
    problems: list[str] = []
    for bus in [None, *buses]:
        on_bus = {} if bus is None else {"EventBusName": bus.name}
        try:
            names = (await events.list_rule_names_by_target(TargetArn=queue_arn, **on_bus)).get(
                "RuleNames", []
            )
            rules = [await events.describe_rule(Name=n, **on_bus) for n in names]
        except _AWS_ERRORS as error:
            return Check(name, False, _error(error), fix + " (amid doctor needs events:List*)")
        for rule in rules:
            rule_name = rule["Name"] if bus is None else f"{bus.name}/{rule['Name']}"
            try:
                pattern = json.loads(rule.get("EventPattern") or "null")
                matches = bool(pattern) and compile_pattern(pattern).matches(sample)
                exact = bus is None or (matches and only_ami_state_changes(pattern))
            except (PatternError, ValueError):
                matches = exact = False
            if not matches:
                problems.append(f"{rule_name} does not match AMI state changes")
            elif not exact:
                problems.append(
                    f"{rule_name} matches other events too: only AMI state changes may reach "
                    "the queue from the organisation's bus"
                )
            elif rule.get("State") != "ENABLED":
                problems.append(f"{rule_name} is {rule.get('State', 'not enabled').lower()}")
            elif source_arns is not None and rule["Arn"] not in source_arns:
                problems.append(f"{rule_name} is not admitted by the queue policy's aws:SourceArn")
            else:
                return Check(name, True, f"{rule_name} (enabled, matches AMI state changes)")
    detail = "; ".join(problems) if problems else "no rule targets the queue"
    return Check(name, False, detail, fix)


async def _encryption(aws: AwsClients, region: str | None, attributes: dict[str, str]) -> Check:
    name = "queue encryption usable by EventBridge"
    key = attributes.get("KmsMasterKeyId")
    if not key:
        sse = "SSE-SQS" if attributes.get("SqsManagedSseEnabled") == "true" else "not encrypted"
        return Check(name, True, sse)
    if key in ("alias/aws/sqs",) or key.endswith(":alias/aws/sqs"):
        return Check(
            name,
            False,
            "the AWS-managed key alias/aws/sqs cannot be used by EventBridge",
            "use SSE-SQS, or a customer-managed KMS key whose policy allows events.amazonaws.com",
        )
    kms = await aws.client("kms", region)
    try:
        policy = json.loads((await kms.get_key_policy(KeyId=key, PolicyName="default"))["Policy"])
    except _AWS_ERRORS as error:
        return Check(
            name, False, f"key {key}: {_error(error)}", "check the key and amid's kms:GetKeyPolicy"
        )
    for statement in _statements(policy):
        actions = {a.lower() for a in _as_list(statement.get("Action", []))}
        if (
            statement.get("Effect") == "Allow"
            and EVENTS_PRINCIPAL in service_principals(statement)
            and ({"kms:generatedatakey", "kms:generatedatakey*", "kms:*"} & actions)
        ):
            return Check(name, True, f"KMS key {key} allows events.amazonaws.com")
    return Check(
        name,
        False,
        f"KMS key {key}: its policy does not let events.amazonaws.com use it",
        "allow events.amazonaws.com kms:GenerateDataKey and kms:Decrypt in the key policy",
    )


async def _handler_checks(config: Config, aws: AwsClients) -> list[Check]:
    checks = []
    for handler in config.handlers:
        if not isinstance(handler, SnsHandlerConfig):
            continue
        sns = await aws.client("sns", handler.region, handler.endpoint_url)
        name = f"SNS topic of {handler.name}"
        try:
            await sns.get_topic_attributes(TopicArn=handler.topic_arn)
        except _AWS_ERRORS as error:
            checks.append(
                Check(
                    name,
                    False,
                    f"{handler.topic_arn}: {_error(error)}",
                    "create the topic or fix topic_arn",
                )
            )
        else:
            checks.append(Check(name, True, handler.topic_arn))
    from amid.tools.slack_checks import slack_checks  # only configs with a Slack app pay for it

    checks.extend(await slack_checks(config))
    return checks


async def _dedupe_checks(config: Config, aws: AwsClients) -> list[Check]:
    if config.dedupe.backend != "dynamodb":
        return []
    table = config.dedupe.table
    dynamodb = await aws.client("dynamodb", config.queue.resolved_region)
    fix = "deploy the table with deploy/cloudformation/amid.yaml (EnableDynamoDbDedupe=true)"
    try:
        await dynamodb.describe_table(TableName=table)
        ttl = (await dynamodb.describe_time_to_live(TableName=table))["TimeToLiveDescription"]
    except _AWS_ERRORS as error:
        return [Check("dedupe table", False, f"{table}: {_error(error)}", fix)]
    if (
        ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING")
        or ttl.get("AttributeName") != "expires_at"
    ):
        return [
            Check(
                "dedupe table",
                False,
                f"{table} has no TTL on expires_at: it grows forever",
                f"aws dynamodb update-time-to-live --table-name {table} "
                "--time-to-live-specification Enabled=true,AttributeName=expires_at",
            )
        ]
    return [Check("dedupe table", True, f"{table} with TTL on expires_at")]


def report(checks: Iterable[Check]) -> tuple[str, bool]:
    checks = list(checks)
    lines = [check.line() for check in checks]
    problems = sum(not check.ok for check in checks)
    lines.append(f"{len(checks)} checks, {problems} problem(s)")
    return "\n".join(lines), problems == 0


# --- image routing: the role amid assumes in other accounts ---


async def role_checks(config: Config, aws: AwsClients, accounts: Sequence[str]) -> list[Check]:
    """With `enrich.role_arn`: for each account, the role is assumed and DescribeImages works."""
    from amid.pipeline.enrich import error_code, role_for

    template = config.enrich.role_arn
    if template is None:
        return []
    region = config.queue.resolved_region or "us-east-1"
    if not accounts:
        return [
            Check(
                "describe-images role",
                True,
                "enrich.role_arn is set; name an account to check it: amid doctor --account A",
            )
        ]
    fix = (
        "deploy deploy/cloudformation/amid-member.yaml in that account with "
        "DescribeImagesRoleName (the role trusts amid's role), and give amid sts:AssumeRole "
        "on it (DescribeImagesRoleName in amid.yaml)"
    )
    checks = []
    for account in accounts:
        name = f"describe-images role in {account}"
        role = role_for(template, account, region)
        if role is None:
            checks.append(Check(name, True, "role_arn renders empty: amid's own credentials"))
            continue
        try:
            ec2 = await aws.client("ec2", region=region, role_arn=role)
            answer = await ec2.describe_images(Owners=["self"], MaxResults=5)
        except Exception as error:  # noqa: BLE001 - every failure is a problem to report
            checks.append(Check(name, False, f"{role}: {error_code(error)}: {error}", fix))
            continue
        seen = len(answer.get("Images", []))
        checks.append(Check(name, True, f"assumed {role}; DescribeImages answers ({seen} seen)"))
    return checks
