"""`amid doctor` for one amid serving a whole organisation (deploy/cloudformation/amid-central.yaml
and amid-member.yaml): the central bus admits the organisation and nothing wider, and each
member account's rule forwards AMI state changes to it with a role EventBridge may use.

The member checks run with the credentials of a role doctor assumes in the member account.
To add one, write `async def check(member: Member) -> list[Check]` and append it to
MEMBER_CHECKS: it runs in that order, after the role was assumed, for every member given.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from amid.aws import AwsClients, Session
from amid.config import Config
from amid.patterns import PatternError, compile_pattern
from amid.tools.checks import (
    AWS_ERRORS,
    EVENTS_PRINCIPAL,
    Check,
    actions,
    as_list,
    error_text,
    service_principals,
    statements,
)
from amid.tools.offline import synthetic_event

DEFAULT_MEMBER_ROLE = "OrganizationAccountAccessRole"  # what Organizations creates in new accounts
CENTRAL_TEMPLATE = "deploy/cloudformation/amid-central.yaml"
MEMBER_TEMPLATE = "deploy/cloudformation/amid-member.yaml"
ORG_KEY = "aws:principalorgid"


@dataclass(frozen=True, slots=True)
class CentralBus:
    """A custom event bus whose rule feeds amid's queue."""

    name: str
    arn: str
    region: str | None


@dataclass(frozen=True, slots=True)
class MemberTarget:
    """A member account to check, as given on the command line."""

    account: str
    role_name: str = DEFAULT_MEMBER_ROLE
    regions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    """What a member check works with."""

    config: Config
    account: str
    regions: tuple[str, ...]
    bus: CentralBus
    aws: AwsClients  # the member account, through the role doctor assumed there
    central: AwsClients  # doctor's own credentials, in the central account


MemberCheck = Callable[[Member], Awaitable[list[Check]]]


# --- the central bus -------------------------------------------------------------------


def bus_of_rule(rule_arn: str) -> tuple[str, str] | None:
    """(bus name, bus ARN) of a rule on a custom bus: arn:...:rule/<bus>/<rule>."""
    parts = rule_arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "events":
        return None
    path = parts[5].split("/")
    if len(path) != 3 or path[0] != "rule":
        return None
    return path[1], f"{':'.join(parts[:5])}:event-bus/{path[1]}"


def _org_ids(statement: dict[str, Any]) -> list[str]:
    """The organisations a statement is bounded to by StringEquals aws:PrincipalOrgID."""
    condition = statement.get("Condition", {})
    equals = condition.get("StringEquals", {}) if isinstance(condition, dict) else {}
    return [
        str(value)
        for key, values in equals.items()
        if key.lower() == ORG_KEY
        for value in as_list(values)
        if str(value).startswith("o-") and "*" not in str(value)
    ]


def _principal(statement: dict[str, Any]) -> str:
    principal = statement.get("Principal", "")
    if isinstance(principal, dict):
        return ", ".join(str(v) for values in principal.values() for v in as_list(values))
    return str(principal)


async def bus_policy(aws: AwsClients, bus: CentralBus) -> Check:
    """The bus policy admits the organisation's accounts, and no one outside it."""
    name = f"event bus {bus.name} admits the organisation only"
    fix = (
        'one statement: Principal "*", Action events:PutEvents, Condition StringEquals '
        f"aws:PrincipalOrgID = your organisation id ({CENTRAL_TEMPLATE})"
    )
    events = await aws.client("events", bus.region)
    try:
        raw = (await events.describe_event_bus(Name=bus.name)).get("Policy")
    except AWS_ERRORS as error:
        return Check(
            name, False, error_text(error), fix + " (amid doctor needs events:DescribeEventBus)"
        )
    if not raw:
        return Check(name, False, "the bus has no policy: no member account can put events", fix)
    organisations: set[str] = set()
    wider: list[str] = []
    for statement in statements(json.loads(raw)):
        if statement.get("Effect") != "Allow":
            continue
        orgs = _org_ids(statement)
        if not orgs:
            sid = statement.get("Sid", "a statement")
            wider.append(
                f"{sid} admits {_principal(statement) or 'a principal'} beyond the organisation"
            )
        elif {"events:putevents", "events:*", "*"} & actions(statement):
            organisations.update(orgs)
    if wider:
        return Check(name, False, "; ".join(wider), fix)
    if not organisations:
        return Check(name, False, "no statement lets the organisation put events", fix)
    return Check(name, True, f"events:PutEvents for {', '.join(sorted(organisations))} only")


def only_ami_state_changes(pattern: dict[str, Any]) -> bool:
    """The pattern matches no event but EC2's AMI state changes."""
    compiled = compile_pattern(pattern)
    for source, detail_type in (
        ("aws.ec2", "EC2 Instance State-change Notification"),
        ("com.example.images", "EC2 AMI State Change"),
    ):
        other = {**synthetic_event("available"), "source": source, "detail-type": detail_type}
        if compiled.matches(other):
            return False
    return True


# --- member accounts ---------------------------------------------------------------------


async def member_checks(
    config: Config, central: AwsClients, bus: CentralBus | None, target: MemberTarget
) -> list[Check]:
    """Assume the role in the member account, then run MEMBER_CHECKS there."""
    name = f"member {target.account} reachable"
    if bus is None:
        return [
            Check(
                name,
                False,
                "the queue is not fed by a custom event bus, so members have nothing to forward to",
                f"deploy {CENTRAL_TEMPLATE} and point queue.url at its queue",
            )
        ]
    partition = bus.arn.split(":")[1]
    role_arn = f"arn:{partition}:iam::{target.account}:role/{target.role_name}"
    sts = await central.client("sts", bus.region)
    try:
        credentials = (await sts.assume_role(RoleArn=role_arn, RoleSessionName="amid-doctor"))[
            "Credentials"
        ]
    except AWS_ERRORS as error:
        return [
            Check(
                name,
                False,
                f"cannot assume {role_arn}: {error_text(error)}",
                "run amid doctor with credentials that may assume that role, or name another "
                "read-only role with --member-role",
            )
        ]
    session = Session()
    session.set_credentials(
        credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
    )
    checks = [Check(name, True, f"as {role_arn}")]
    regions = target.regions or ((bus.region,) if bus.region else ())
    async with AwsClients(session) as aws:
        member = Member(config, target.account, regions, bus, aws, central)
        for check in MEMBER_CHECKS:
            checks.extend(await check(member))
    return checks


def _matches_ami(pattern: str | None) -> bool:
    try:
        return bool(pattern) and compile_pattern(json.loads(pattern or "")).matches(
            synthetic_event("failed")
        )
    except (PatternError, ValueError):
        return False


async def forwarding(member: Member) -> list[Check]:
    """In each region, a rule on the default bus sends AMI state changes to the central bus
    with a role; that role exists, EventBridge may assume it, and it may put events there."""
    fix = (
        f"deploy {MEMBER_TEMPLATE} in this account and region (the StackSet of "
        "docs/scaling.md) with CentralEventBusArn = " + member.bus.arn
    )
    checks: list[Check] = []
    for region in member.regions:
        name = f"member {member.account} {region} rule forwards to {member.bus.name}"
        events = await member.aws.client("events", region)
        try:
            names = (await events.list_rule_names_by_target(TargetArn=member.bus.arn)).get(
                "RuleNames", []
            )
            problems: list[str] = []
            found: tuple[str, str] | None = None
            for rule_name in names:
                rule = await events.describe_rule(Name=rule_name)
                if not _matches_ami(rule.get("EventPattern")):
                    problems.append(f"{rule_name} does not match AMI state changes")
                    continue
                if rule.get("State") != "ENABLED":
                    problems.append(f"{rule_name} is {rule.get('State', 'not enabled').lower()}")
                    continue
                targets = (await events.list_targets_by_rule(Rule=rule_name)).get("Targets", [])
                role = next(
                    (t.get("RoleArn") for t in targets if t.get("Arn") == member.bus.arn), None
                )
                if not role:
                    problems.append(
                        f"{rule_name} names no role: a bus of another account that admits an "
                        "organisation takes events only from a rule with a role"
                    )
                    continue
                found = (rule_name, str(role))
                break
        except AWS_ERRORS as error:
            checks.append(Check(name, False, error_text(error), fix))
            continue
        if found is None:
            detail = "; ".join(problems) if problems else f"no rule targets {member.bus.arn}"
            checks.append(Check(name, False, detail, fix))
            continue
        checks.append(Check(name, True, f"{found[0]} (enabled, matches AMI state changes)"))
        checks.append(await _forward_role(member, region, found[1], fix))
    return checks


async def _role_documents(iam: Any, role_name: str) -> list[dict[str, Any]]:
    """Every permission policy of a role: inline and attached managed ones."""
    documents = []
    for policy_name in (await iam.list_role_policies(RoleName=role_name)).get("PolicyNames", []):
        document = (await iam.get_role_policy(RoleName=role_name, PolicyName=policy_name))[
            "PolicyDocument"
        ]
        documents.append(_document(document))
    attached = (await iam.list_attached_role_policies(RoleName=role_name)).get(
        "AttachedPolicies", []
    )
    for policy in attached:
        version = (await iam.get_policy(PolicyArn=policy["PolicyArn"]))["Policy"][
            "DefaultVersionId"
        ]
        document = (await iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version))[
            "PolicyVersion"
        ]["Document"]
        documents.append(_document(document))
    return documents


def _document(document: Any) -> dict[str, Any]:
    """IAM returns policy documents as URL-encoded JSON text (the SDKs often decode them)."""
    if isinstance(document, str):
        parsed: dict[str, Any] = json.loads(unquote(document))
        return parsed
    return dict(document)


async def _forward_role(member: Member, region: str, role_arn: str, fix: str) -> Check:
    role_name = role_arn.rsplit("/", 1)[-1]
    name = f"member {member.account} {region} forwarding role {role_name}"
    iam = await member.aws.client("iam", region)
    try:
        role = (await iam.get_role(RoleName=role_name))["Role"]
        documents = await _role_documents(iam, role_name)
    except AWS_ERRORS as error:
        return Check(name, False, error_text(error), fix)
    trust = _document(role.get("AssumeRolePolicyDocument", {}))
    trusted = any(
        s.get("Effect") == "Allow"
        and EVENTS_PRINCIPAL in service_principals(s)
        and {"sts:assumerole", "sts:*"} & actions(s)
        for s in statements(trust)
    )
    if not trusted:
        return Check(
            name, False, f"its trust policy does not let {EVENTS_PRINCIPAL} assume it", fix
        )
    may_put = any(
        s.get("Effect") == "Allow"
        and {"events:putevents", "events:*", "*"} & actions(s)
        and any(fnmatch.fnmatchcase(member.bus.arn, str(r)) for r in as_list(s.get("Resource", [])))
        for document in documents
        for s in statements(document)
    )
    if not may_put:
        return Check(name, False, f"it may not events:PutEvents on {member.bus.arn}", fix)
    return Check(name, True, f"EventBridge may assume it to put events on {member.bus.name}")


MEMBER_CHECKS: tuple[MemberCheck, ...] = (forwarding,)
