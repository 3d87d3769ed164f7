"""`amid doctor` with `enrich.role_arn`: the role is assumed in an account, DescribeImages works."""

from __future__ import annotations

import pytest

from amid.aws import AwsClients
from amid.config import Config, parse_config
from amid.tools.doctor import role_checks
from tests.images import OTHER_ACCOUNT, ROLE_TEMPLATE, ec2_in, make_image, role_arn
from tests.moto_server import free_port


def config(role: str | None = ROLE_TEMPLATE) -> Config:
    enrich = f"enrich: {{describe_images: true, role_arn: '{role}'}}\n" if role else ""
    return parse_config(
        "queue: {url: http://127.0.0.1:1/123456789012/q, region: us-east-1}\n"
        + enrich
        + "handlers: [{name: a, type: console}]\n",
        env={},
    )


async def test_the_role_is_assumed_and_describe_images_answers(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    async with ec2_in(OTHER_ACCOUNT, moto_url) as other:
        await make_image(other, "prod-web")
    async with AwsClients() as aws:
        (check,) = await role_checks(config(), aws, [OTHER_ACCOUNT])
        assert aws.assumed == {role_arn(OTHER_ACCOUNT): 1}
    assert check.ok
    assert check.detail == f"assumed {role_arn(OTHER_ACCOUNT)}; DescribeImages answers (1 seen)"


async def test_a_role_that_cannot_be_assumed_is_a_problem_with_a_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    async with AwsClients() as aws:
        (check,) = await role_checks(config(), aws, [OTHER_ACCOUNT])
    assert not check.ok
    assert check.detail.startswith(f"{role_arn(OTHER_ACCOUNT)}: EndpointConnectionError")
    assert "amid-member.yaml" in check.fix


async def test_without_an_account_it_says_how_to_name_one() -> None:
    async with AwsClients() as aws:
        (check,) = await role_checks(config(), aws, [])
    assert check.ok and "amid doctor --account A" in check.detail


async def test_without_role_arn_there_is_nothing_to_check() -> None:
    async with AwsClients() as aws:
        assert await role_checks(config(None), aws, [OTHER_ACCOUNT]) == []
