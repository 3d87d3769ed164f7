"""Routing by what the image is, end to end: `amid run` against moto, real images, a receiver.

Images are made the way a build pipeline makes them (RunInstances, CreateImage,
CreateTags), in amid's own account and in another one that amid reaches only through
a role (moto keeps the accounts apart by the assumed role's credentials). The routes
are the two of the README: a team's failures to its channel by the `Team` tag, and
every deregistration of a `prod-*` image to the audit.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from amid.store.dynamodb import create_table
from amid.tools.offline import synthetic_event
from tests.harness import AmidConfig, AmidProcess, Receiver, Webhook, make_queue, wait_until
from tests.images import OTHER_ACCOUNT, OWN_ACCOUNT, ROLE_NAME, ThrottlingProxy, ec2_in, make_image

pytestmark = pytest.mark.slow

# Own account: amid's own credentials; any other: the role there.
ROLE = (
    "{% if account != '" + OWN_ACCOUNT + "' %}arn:aws:iam::{{ account }}:role/" + ROLE_NAME
    + "{% endif %}"
)  # fmt: skip
TEAM_CHANNELS = {
    "payments": {"detail": {"State": ["failed"]}, "image": {"tags": {"Team": ["payments"]}}},
    "search": {"detail": {"State": ["failed"]}, "image": {"tags": {"Team": ["search"]}}},
}
PROD_AUDIT = {
    "prod-audit": {
        "detail": {"State": ["deregistered"]},
        "image": {"name": [{"prefix": "prod-"}]},
    }
}


@dataclass(frozen=True, slots=True)
class ImageConfig(AmidConfig):
    """The harness's config, with an `enrich` section and image patterns per handler."""

    enrich: Mapping[str, Any] = field(default_factory=dict)
    matches: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        document = AmidConfig.to_dict(self)
        document["enrich"] = {"describe_images": True, **self.enrich}
        for handler in document["handlers"]:
            if handler["name"] in self.matches:
                handler["match"] = dict(self.matches[handler["name"]])
        return document


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def config(
    queue_url: str,
    moto_url: str,
    receiver: Receiver,
    matches: Mapping[str, Mapping[str, Any]],
    dedupe: Mapping[str, Any],
    *,
    source: str = "amid",
    enrich: Mapping[str, Any] | None = None,
    everything: bool = True,
) -> ImageConfig:
    handlers = [Webhook(name) for name in matches]
    if everything:
        handlers.append(Webhook("everything"))
    return ImageConfig(
        queue_url=queue_url,
        sqs_endpoint=moto_url,
        receiver=receiver,
        handlers=handlers,
        dedupe=dedupe,
        source=source,
        enrich={"role_arn": ROLE, **(enrich or {})},
        matches=matches,
    )


async def send(sqs: Any, queue_url: str, state: str, image: str, account: str = OWN_ACCOUNT) -> str:
    event = synthetic_event(state, image, account=account)
    await sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
    return str(event["id"])


def delivered(receiver: Receiver) -> set[tuple[str, str]]:
    return set(receiver.deliveries())


async def drained(sqs: Any, queue_url: str) -> bool:
    attributes = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))[
        "Attributes"
    ]
    return (
        int(attributes["ApproximateNumberOfMessages"])
        + int(attributes["ApproximateNumberOfMessagesNotVisible"])
        == 0
    )


async def test_failures_reach_the_team_channel_by_tag_in_amids_account_and_another(
    sqs: Any, ec2: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    payments = await make_image(ec2, "payments-api-42", {"Team": "payments"})
    async with ec2_in(OTHER_ACCOUNT, moto_url) as other:
        search = await make_image(other, "search-indexer-7", {"Team": "search"})
    queue_url, _ = await make_queue(sqs)
    settings = config(queue_url, moto_url, receiver, TEAM_CHANNELS, {"backend": "memory"})
    async with AmidProcess(settings, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        own = await send(sqs, queue_url, "failed", payments)
        far = await send(sqs, queue_url, "failed", search, OTHER_ACCOUNT)
        unknown = await send(sqs, queue_url, "failed", "ami-0000000000000dead")
        await wait_until(lambda: drained(sqs, queue_url), timeout=60, what="every event handled")
        metrics = await amid.metrics()
        assert await amid.terminate() == 0
    assert receiver.deliveries() == {
        (own, "payments"): 1,
        (own, "everything"): 1,
        (far, "search"): 1,
        (far, "everything"): 1,
        (unknown, "everything"): 1,
    }
    assert metrics.value("amid_image_lookups_total", outcome="described") == 2
    assert metrics.value("amid_image_lookups_total", outcome="not_found") == 1


async def test_a_deregistered_image_routes_by_its_remembered_name_after_a_restart(
    sqs: Any, ec2: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    prod = await make_image(ec2, "prod-web-2025-05-01", {"Team": "payments"})
    dev = await make_image(ec2, "dev-web-2025-05-01", {"Team": "payments"})
    queue_url, _ = await make_queue(sqs)
    dedupe = {"backend": "sqlite", "path": str(tmp_path / "dedupe.sqlite3")}
    settings = config(queue_url, moto_url, receiver, PROD_AUDIT, dedupe)
    async with AmidProcess(settings, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        seen = [await send(sqs, queue_url, "available", image) for image in (prod, dev)]
        await wait_until(
            lambda: {(event, "everything") for event in seen} <= delivered(receiver),
            timeout=60,
            what="both images seen available",
        )
        assert await amid.terminate() == 0
    for image in (prod, dev):
        await ec2.deregister_image(ImageId=image)
    async with AmidProcess(settings, tmp_path, name="restarted", aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        gone_prod = await send(sqs, queue_url, "deregistered", prod)
        gone_dev = await send(sqs, queue_url, "deregistered", dev)
        await wait_until(lambda: drained(sqs, queue_url), timeout=60, what="both handled")
        metrics = await amid.metrics()
        assert await amid.terminate() == 0
    got = delivered(receiver)
    assert (gone_prod, "prod-audit") in got
    assert (gone_dev, "prod-audit") not in got, "a dev image is not audited"
    assert {(gone_prod, "everything"), (gone_dev, "everything")} <= got
    assert metrics.value("amid_image_lookups_total", outcome="remembered") == 2


async def test_a_second_replica_routes_a_deregistration_by_what_the_first_remembered(
    sqs: Any, ec2: Any, dynamodb: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    await create_table(dynamodb, "amid-images")
    dedupe = {"backend": "dynamodb", "table": "amid-images"}
    async with ec2_in(OTHER_ACCOUNT, moto_url) as other:
        prod = await make_image(other, "prod-db-3", {"Team": "data"})
    queue_url, _ = await make_queue(sqs)
    first = config(queue_url, moto_url, receiver, PROD_AUDIT, dedupe, source="r1")
    second = config(queue_url, moto_url, receiver, PROD_AUDIT, dedupe, source="r2")
    async with AmidProcess(first, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        seen = await send(sqs, queue_url, "available", prod, OTHER_ACCOUNT)
        await wait_until(
            lambda: (seen, "everything") in delivered(receiver), timeout=60, what="seen by r1"
        )
        assert await amid.terminate() == 0
    async with ec2_in(OTHER_ACCOUNT, moto_url) as other:
        await other.deregister_image(ImageId=prod)
    async with AmidProcess(second, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        gone = await send(sqs, queue_url, "deregistered", prod, OTHER_ACCOUNT)
        await wait_until(lambda: drained(sqs, queue_url), timeout=60, what="handled by r2")
        assert await amid.terminate() == 0
    assert receiver.sources()[(gone, "prod-audit")] == ["r2"]


async def test_throttled_describe_leaves_image_routes_for_redelivery_and_delivers_the_rest_once(
    sqs: Any, ec2: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    payments = await make_image(ec2, "payments-api-43", {"Team": "payments"})
    queue_url, _ = await make_queue(sqs, max_receive=50)
    settings = config(queue_url, moto_url, receiver, TEAM_CHANNELS, {"backend": "memory"})
    with ThrottlingProxy(moto_url) as proxy:
        proxy.throttling.set()
        async with AmidProcess(settings, tmp_path, aws_endpoint=proxy.url) as amid:
            await amid.wait_ready()
            event = await send(sqs, queue_url, "failed", payments)

            async def held_twice() -> bool:
                metrics = await amid.metrics()
                return metrics.value("amid_event_retries_total", reason="enrich_unavailable") >= 2

            await wait_until(held_twice, timeout=60, what="the image route held twice")
            assert receiver.deliveries() == {(event, "everything"): 1}
            proxy.throttling.clear()
            await wait_until(lambda: drained(sqs, queue_url), timeout=60, what="then delivered")
            metrics = await amid.metrics()
            assert await amid.terminate() == 0
    assert receiver.deliveries() == {(event, "everything"): 1, (event, "payments"): 1}
    assert proxy.throttled >= 2
    assert metrics.value("amid_image_lookups_total", outcome="unavailable") >= 2
    assert metrics.value("amid_events_total", state="failed", outcome="handled") == 1


def amid_cli(*args: str, moto_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url}
    return subprocess.run(
        [sys.executable, "-m", "amid", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_images_sync_lets_a_never_seen_image_route_on_its_deregistration(
    sqs: Any, ec2: Any, moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    own = await make_image(ec2, "prod-api-9", {"Team": "payments"})
    async with ec2_in(OTHER_ACCOUNT, moto_url) as other:
        far = await make_image(other, "prod-batch-2", {"Team": "data"})
        farther = [await make_image(other, f"dev-{n}") for n in range(3)]
    queue_url, _ = await make_queue(sqs)
    dedupe = {"backend": "sqlite", "path": str(tmp_path / "dedupe.sqlite3")}
    settings = config(queue_url, moto_url, receiver, PROD_AUDIT, dedupe)
    path = str(settings.write(tmp_path / "sync.yaml"))
    synced_own = amid_cli("images", "sync", "-c", path, moto_url=moto_url)
    synced_far = amid_cli(
        "images", "sync", "-c", path, "--account", OTHER_ACCOUNT, moto_url=moto_url
    )
    again = amid_cli("images", "sync", "-c", path, "--account", OTHER_ACCOUNT, moto_url=moto_url)
    assert synced_own.returncode == 0, synced_own.stderr
    assert "us-east-1 self: 1 image(s)" in synced_own.stdout
    assert synced_far.returncode == 0, synced_far.stderr
    assert f"us-east-1 {OTHER_ACCOUNT}: 4 image(s)" in synced_far.stdout
    assert "remembered 4 image(s) from 1 source(s)" in synced_far.stdout
    assert again.returncode == 0 and again.stdout == synced_far.stdout, "safe to re-run"

    await ec2.deregister_image(ImageId=own)
    async with ec2_in(OTHER_ACCOUNT, moto_url) as other:
        await other.deregister_image(ImageId=far)
        await other.deregister_image(ImageId=farther[0])
    async with AmidProcess(settings, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        events = [
            await send(sqs, queue_url, "deregistered", own),
            await send(sqs, queue_url, "deregistered", far, OTHER_ACCOUNT),
            await send(sqs, queue_url, "deregistered", farther[0], OTHER_ACCOUNT),
        ]
        await wait_until(lambda: drained(sqs, queue_url), timeout=60, what="all handled")
        assert await amid.terminate() == 0
    audited = {event for event, handler in delivered(receiver) if handler == "prod-audit"}
    assert audited == set(events[:2])


async def test_images_sync_with_the_memory_backend_says_why_and_exits_2(
    moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    settings = config(
        "http://127.0.0.1:1/123456789012/q", moto_url, receiver, PROD_AUDIT, {"backend": "memory"}
    )
    path = str(settings.write(tmp_path / "memory.yaml"))
    result = await asyncio.to_thread(amid_cli, "images", "sync", "-c", path, moto_url=moto_url)
    assert result.returncode == 2
    assert "dedupe.backend is memory" in result.stderr
