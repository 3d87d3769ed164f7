"""One amid for a whole organisation, deployed into moto's server the way docs/scaling.md
rolls it out: an organisation with an OU and a member account, the central stack in the
management account, and the member template as a service-managed StackSet on the OU in two
regions. The member account is reached through an assumed role: moto keeps accounts apart by
the credentials of the role.

moto's CloudFormation skips two resources, so they are applied here from the templates' own
documents, with the stack's values: the QueuePolicy (not supported at all) and the event
bus's Policy property (ignored); and it stores roles' inline policies as Python text, which
is written back as JSON. moto enforces neither of them, nor IAM: their documents are
checked as data in test_org_policies.py.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

from tests.deploy.test_deploy_checks import _CfnLoader

TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "cloudformation"
CENTRAL_TEMPLATE = TEMPLATES / "amid-central.yaml"
MEMBER_TEMPLATE = TEMPLATES / "amid-member.yaml"
SINGLE_TEMPLATE = TEMPLATES / "amid.yaml"
REGION = "us-east-1"
MEMBER_REGIONS = ("us-east-1", "eu-west-1")
DESCRIBE_IMAGES_ROLE = "amid-describe-images"
MEMBER_ACCESS_ROLE = "OrganizationAccountAccessRole"
STACK_SET = "amid-member"
CENTRAL_STACK = "amid-central"
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]


def template(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506
    return data


def parameters(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()]


@dataclass
class Organisation:
    endpoint: str
    org_id: str
    ou_id: str
    management: str  # the management account, which also holds the central stack
    member: str
    central: dict[str, str]  # the central stack's outputs

    def client(self, service: str, region: str = REGION) -> Any:
        """A client with the management (and central) account's credentials."""
        return boto3.client(service, region_name=region, endpoint_url=self.endpoint)

    def member_credentials(self) -> dict[str, str]:
        answer = self.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{self.member}:role/{MEMBER_ACCESS_ROLE}",
            RoleSessionName="amid-tests",
        )
        credentials = answer["Credentials"]
        return {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }

    def member_client(self, service: str, region: str = REGION) -> Any:
        """A client acting in the member account, through the role assumed there."""
        return boto3.client(
            service, region_name=region, endpoint_url=self.endpoint, **self.member_credentials()
        )

    def central_values(self) -> dict[str, str]:
        """What the central template's Ref, GetAtt and Sub resolve to in this stack."""
        return {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": self.management,
            "OrganizationId": self.org_id,
            "EventBusName": self.central["EventBusArn"].rsplit("/", 1)[1],
            "Queue.Arn": self.central["QueueArn"],
            "DeadLetterQueue.Arn": self.client("sqs").get_queue_attributes(
                QueueUrl=self.central["DeadLetterQueueUrl"], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"],
            "AmiStateChangeRule.Arn": self.central["RuleArn"],
        }

    def queue_policy(self) -> str:
        document = template(CENTRAL_TEMPLATE)["Resources"]["QueuePolicy"]["Properties"]
        return json.dumps(materialise(document["PolicyDocument"], self.central_values()))

    def bus_policy(self) -> str:
        document = template(CENTRAL_TEMPLATE)["Resources"]["EventBus"]["Properties"]["Policy"]
        return json.dumps(materialise(document, self.central_values()))

    def apply_policies(self) -> None:
        """What moto's CloudFormation skips: the queue policy and the bus policy."""
        self.client("sqs").set_queue_attributes(
            QueueUrl=self.central["QueueUrl"], Attributes={"Policy": self.queue_policy()}
        )
        self.client("events").put_permission(
            EventBusName=self.central_values()["EventBusName"], Policy=self.bus_policy()
        )


def materialise(node: Any, values: dict[str, str]) -> Any:
    """A template document with Ref, Fn::GetAtt and Fn::Sub replaced by the stack's values."""
    if isinstance(node, dict):
        if "Ref" in node:
            return values[node["Ref"]]
        if "Fn::GetAtt" in node:
            return values[".".join(node["Fn::GetAtt"])]
        if "Fn::Sub" in node:
            return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], node["Fn::Sub"])
        return {key: materialise(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [materialise(item, values) for item in node]
    return node


def outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    description = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    assert description["StackStatus"] == "CREATE_COMPLETE", description["StackStatus"]
    return {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}


def create_organisation(endpoint: str) -> tuple[str, str, str, str]:
    """(organisation id, OU id, management account, member account)."""
    organizations = boto3.client("organizations", region_name=REGION, endpoint_url=endpoint)
    organisation = organizations.create_organization(FeatureSet="ALL")["Organization"]
    root = organizations.list_roots()["Roots"][0]["Id"]
    ou = organizations.create_organizational_unit(ParentId=root, Name="workloads")
    ou_id = ou["OrganizationalUnit"]["Id"]
    created = organizations.create_account(Email="images@example.com", AccountName="images")
    member = created["CreateAccountStatus"]["AccountId"]
    organizations.move_account(AccountId=member, SourceParentId=root, DestinationParentId=ou_id)
    return organisation["Id"], ou_id, organisation["MasterAccountId"], member


def central_parameters(org_id: str) -> dict[str, str]:
    return {"OrganizationId": org_id, "DescribeImagesRoleName": DESCRIBE_IMAGES_ROLE}


MEMBER_PARAMETERS = (
    "CentralEventBusArn",
    "AmidRoleArn",
    "DescribeImagesRoleName",
    "OrganizationId",
    "GlobalResourcesRegion",
)


def member_parameters(org: Organisation) -> dict[str, str]:
    """The StackSet's parameters, as in docs/scaling.md."""
    values = {
        "CentralEventBusArn": org.central["EventBusArn"],
        "AmidRoleArn": org.central["AmidRoleArn"],
        "DescribeImagesRoleName": DESCRIBE_IMAGES_ROLE,
        "OrganizationId": org.org_id,
        "GlobalResourcesRegion": REGION,
    }
    assert tuple(values) == MEMBER_PARAMETERS
    return values


def deploy_organisation(endpoint: str, *, members: bool = True) -> Organisation:
    """The organisation, the central stack and (unless told not to) the member StackSet."""
    org_id, ou_id, management, member = create_organisation(endpoint)
    cloudformation = boto3.client("cloudformation", region_name=REGION, endpoint_url=endpoint)
    cloudformation.create_stack(
        StackName=CENTRAL_STACK,
        TemplateBody=CENTRAL_TEMPLATE.read_text(),
        Parameters=parameters(central_parameters(org_id)),
        Capabilities=CAPABILITIES,
    )
    org = Organisation(
        endpoint, org_id, ou_id, management, member, outputs(cloudformation, CENTRAL_STACK)
    )
    org.apply_policies()
    if members:
        roll_out_members(org)
    return org


def roll_out_members(org: Organisation) -> str:
    """create-stack-set (service-managed, auto-deployment) and create-stack-instances on the
    OU in MEMBER_REGIONS: docs/scaling.md's commands. Returns the operation's status."""
    cloudformation = org.client("cloudformation")
    cloudformation.create_stack_set(
        StackSetName=STACK_SET,
        TemplateBody=MEMBER_TEMPLATE.read_text(),
        PermissionModel="SERVICE_MANAGED",
        AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False},
        Capabilities=CAPABILITIES,
        Parameters=parameters(member_parameters(org)),
    )
    operation = cloudformation.create_stack_instances(
        StackSetName=STACK_SET,
        DeploymentTargets={"OrganizationalUnitIds": [org.ou_id]},
        Regions=list(MEMBER_REGIONS),
        OperationPreferences={
            "RegionConcurrencyType": "PARALLEL",
            "FailureTolerancePercentage": 0,
            "MaxConcurrentPercentage": 100,
        },
    )
    answer = cloudformation.describe_stack_set_operation(
        StackSetName=STACK_SET, OperationId=operation["OperationId"]
    )
    rewrite_inline_policies(org.member_client("iam"))
    return str(answer["StackSetOperation"]["Status"])


def rewrite_inline_policies(iam: Any) -> None:
    """moto's CloudFormation stores a role's inline policy as Python text (single quotes),
    where IAM holds JSON: write each back as the JSON document it is."""
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)
            text = document["PolicyDocument"]
            if isinstance(text, str):
                iam.put_role_policy(
                    RoleName=role["RoleName"],
                    PolicyName=name,
                    PolicyDocument=json.dumps(ast.literal_eval(text)),
                )
