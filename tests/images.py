"""Real images in moto: RunInstances + CreateImage + CreateTags, in amid's account or another.

moto keeps accounts apart by credentials: an image made with the credentials of a role
assumed in another account exists only there, and amid's own credentials cannot see it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiobotocore.session import get_session

REGION = "us-east-1"
OWN_ACCOUNT = "123456789012"  # moto's default account: amid's own
OTHER_ACCOUNT = "111122223333"
ROLE_NAME = "amid-describe-images"
ROLE_TEMPLATE = "arn:aws:iam::{{ account }}:role/" + ROLE_NAME


def role_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:role/{ROLE_NAME}"


async def make_image(ec2: Any, name: str, tags: Mapping[str, str] | None = None) -> str:
    """An image made from a running instance, as a build pipeline would; returns its id."""
    base = (await ec2.describe_images(Owners=["amazon"], MaxResults=5))["Images"][0]["ImageId"]
    instance = (
        await ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    )["Instances"][0]["InstanceId"]
    image: str = (await ec2.create_image(InstanceId=instance, Name=name))["ImageId"]
    if tags:
        await ec2.create_tags(
            Resources=[image], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )
    return image


@contextlib.asynccontextmanager
async def ec2_in(account: str, endpoint: str, region: str = REGION) -> AsyncIterator[Any]:
    """An EC2 client acting in `account`, through a role assumed there (moto's STS)."""
    session = get_session()
    async with session.create_client("sts", region_name=region, endpoint_url=endpoint) as sts:
        credentials = (
            await sts.assume_role(RoleArn=role_arn(account), RoleSessionName="test-setup")
        )["Credentials"]
    async with session.create_client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    ) as ec2:
        yield ec2
