"""ImageEnricher against moto's EC2: details, one call per image, cache, failures give {}."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from amid.aws import AwsClients
from amid.config import parse_config
from amid.pipeline.enrich import ImageEnricher
from tests.handlers.conftest import Receiver

REGION = "us-east-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def aws() -> AsyncIterator[AwsClients]:
    async with AwsClients() as clients:
        yield clients


@pytest.fixture
async def image_id(ec2: Any) -> str:
    registered = await ec2.register_image(
        Name="web-2025-05-01",
        Description="Web tier",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
    )
    image: str = registered["ImageId"]
    await ec2.create_tags(
        Resources=[image],
        Tags=[{"Key": "team", "Value": "platform"}, {"Key": "build", "Value": "7"}],
    )
    return image


async def count_describe_calls(aws: AwsClients, endpoint_url: str) -> list[str]:
    """Record every DescribeImages the shared EC2 client makes, through botocore's event hooks."""
    calls: list[str] = []
    client = await aws.client("ec2", region=REGION, endpoint_url=endpoint_url)
    client.meta.events.register(
        "before-call.ec2.DescribeImages", lambda **kwargs: calls.append("DescribeImages")
    )
    return calls


async def test_returns_name_description_tags_owner_and_creation_date(
    aws: AwsClients, moto_url: str, image_id: str
) -> None:
    enricher = ImageEnricher(aws, endpoint_url=moto_url)
    image = await enricher.describe(image_id, REGION)
    assert image["name"] == "web-2025-05-01"
    assert image["description"] == "Web tier"
    assert image["tags"] == {"team": "platform", "build": "7"}
    assert image["owner"] == "123456789012"
    assert image["creation_date"]
    await enricher.aclose()


async def test_concurrent_requests_for_one_image_share_one_call(
    aws: AwsClients, moto_url: str, image_id: str
) -> None:
    calls = await count_describe_calls(aws, moto_url)
    enricher = ImageEnricher(aws, endpoint_url=moto_url)
    images = await asyncio.gather(*(enricher.describe(image_id, REGION) for _ in range(10)))
    assert calls == ["DescribeImages"]
    assert all(image["name"] == "web-2025-05-01" for image in images)
    await enricher.aclose()


async def test_answer_is_cached_for_the_ttl_then_asked_again(
    aws: AwsClients, moto_url: str, image_id: str
) -> None:
    calls = await count_describe_calls(aws, moto_url)
    clock = Clock()
    enricher = ImageEnricher(aws, ttl=60, endpoint_url=moto_url, clock=clock)
    await enricher.describe(image_id, REGION)
    clock.now += 59
    await enricher.describe(image_id, REGION)
    assert len(calls) == 1
    clock.now += 2
    await enricher.describe(image_id, REGION)
    assert len(calls) == 2
    await enricher.aclose()


async def test_callers_cannot_change_the_cached_answer(
    aws: AwsClients, moto_url: str, image_id: str
) -> None:
    enricher = ImageEnricher(aws, endpoint_url=moto_url)
    first = await enricher.describe(image_id, REGION)
    first["name"] = "changed"
    assert (await enricher.describe(image_id, REGION))["name"] == "web-2025-05-01"
    await enricher.aclose()


async def test_deregistered_image_gives_empty_details_and_is_cached(
    aws: AwsClients, moto_url: str
) -> None:
    calls = await count_describe_calls(aws, moto_url)
    enricher = ImageEnricher(aws, endpoint_url=moto_url)
    with capture_logs() as logs:
        assert await enricher.describe("ami-0000000000000000f", REGION) == {}
        assert await enricher.describe("ami-0000000000000000f", REGION) == {}
    assert len(calls) == 1
    assert [entry["log_level"] for entry in logs] == ["debug"]
    await enricher.aclose()


async def test_unreachable_ec2_gives_empty_details_and_a_warning(
    aws: AwsClients, closed_port_url: str
) -> None:
    enricher = ImageEnricher(aws, endpoint_url=closed_port_url, call_timeout=30)
    with capture_logs() as logs:
        assert await enricher.describe("ami-0123456789abcdef0", REGION) == {}
    assert [entry["log_level"] for entry in logs] == ["warning"]
    await enricher.aclose()


async def test_slow_ec2_is_cut_off_by_the_call_timeout_and_not_cached(
    aws: AwsClients, receiver: Receiver
) -> None:
    receiver.then_hang()
    receiver.then_hang()
    calls = await count_describe_calls(aws, receiver.url)
    enricher = ImageEnricher(aws, endpoint_url=receiver.url, call_timeout=0.2)
    async with asyncio.timeout(5):
        assert await enricher.describe("ami-0123456789abcdef0", REGION) == {}
        assert await enricher.describe("ami-0123456789abcdef0", REGION) == {}
    assert len(calls) == 2
    await enricher.aclose()


async def test_ttl_comes_from_the_config(aws: AwsClients) -> None:
    config = parse_config(
        "queue: {url: http://127.0.0.1:1/123456789012/q}\n"
        "enrich: {describe_images: true, cache_ttl: 5m}\n"
        "handlers: [{name: c, type: console}]\n",
        env={},
    )
    enricher = ImageEnricher.from_config(config, aws)
    assert enricher._ttl == 300
    await enricher.aclose()
