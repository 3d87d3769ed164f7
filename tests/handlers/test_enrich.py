"""The enrich stage against moto's EC2 and STS: answers, memory, other accounts, failures.

An answer (`known`) is the image or, when EC2 finds none, what was remembered or `{}`; any
other failure is not an answer, so routes on `image` wait. The pure rules (`classify`,
`settle`, `role_for`) are tested without I/O at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from structlog.testing import capture_logs

from amid.aws import AssumeRoleFailed, AwsClients
from amid.config import parse_config
from amid.pipeline.enrich import ImageEnricher, ImageLookup, classify, role_for, settle
from amid.store.memory import MemoryStore
from tests.handlers.conftest import Receiver
from tests.images import OTHER_ACCOUNT, OWN_ACCOUNT, ROLE_TEMPLATE, ec2_in, make_image, role_arn

REGION = "us-east-1"
DAY = 86400.0

# moto describes its first image slowly (it loads its AMI catalogue): never a timeout here.
MOTO_PATIENCE = 60.0


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
def via_moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every client (STS included) reaches moto through the SDK environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
async def image_id(ec2: Any) -> str:
    return await make_image(ec2, "web-2025-05-01", {"team": "platform", "build": "7"})


async def count_describe_calls(aws: AwsClients, endpoint_url: str) -> list[str]:
    """Record every DescribeImages the shared EC2 client makes, through botocore's event hooks."""
    calls: list[str] = []
    client = await aws.client("ec2", region=REGION, endpoint_url=endpoint_url)
    client.meta.events.register(
        "before-call.ec2.DescribeImages", lambda **kwargs: calls.append("DescribeImages")
    )
    return calls


def ec2_error(code: str, status: int) -> tuple[int, str]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{code}</Message></Error></Errors>"
        "<RequestID>r</RequestID></Response>"
    )
    return status, body


class TestAnswers:
    async def test_returns_name_description_tags_owner_and_creation_date(
        self, aws: AwsClients, moto_url: str, image_id: str
    ) -> None:
        enricher = ImageEnricher(aws, call_timeout=MOTO_PATIENCE, endpoint_url=moto_url)
        lookup = await enricher.lookup(image_id, REGION)
        assert lookup.known and lookup.outcome == "described"
        assert lookup.image["name"] == "web-2025-05-01"
        assert lookup.image["tags"] == {"team": "platform", "build": "7"}
        assert lookup.image["owner"] == OWN_ACCOUNT
        assert lookup.image["creation_date"]
        assert "remembered" not in lookup.image
        await enricher.aclose()

    async def test_concurrent_requests_for_one_image_share_one_call(
        self, aws: AwsClients, moto_url: str, image_id: str
    ) -> None:
        calls = await count_describe_calls(aws, moto_url)
        enricher = ImageEnricher(aws, call_timeout=MOTO_PATIENCE, endpoint_url=moto_url)
        lookups = await asyncio.gather(*(enricher.lookup(image_id, REGION) for _ in range(10)))
        assert calls == ["DescribeImages"]
        assert all(lookup.image["name"] == "web-2025-05-01" for lookup in lookups)
        await enricher.aclose()

    async def test_an_answer_is_cached_for_the_ttl_then_asked_again(
        self, aws: AwsClients, moto_url: str, image_id: str
    ) -> None:
        calls = await count_describe_calls(aws, moto_url)
        clock = Clock()
        enricher = ImageEnricher(
            aws, call_timeout=MOTO_PATIENCE, ttl=60, endpoint_url=moto_url, clock=clock
        )
        await enricher.lookup(image_id, REGION)
        clock.now += 59
        await enricher.lookup(image_id, REGION)
        assert len(calls) == 1
        clock.now += 2
        await enricher.lookup(image_id, REGION)
        assert len(calls) == 2
        await enricher.aclose()

    async def test_callers_cannot_change_the_cached_answer(
        self, aws: AwsClients, moto_url: str, image_id: str
    ) -> None:
        enricher = ImageEnricher(aws, call_timeout=MOTO_PATIENCE, endpoint_url=moto_url)
        first = await enricher.lookup(image_id, REGION)
        first.image["tags"]["team"] = "changed"  # type: ignore[index]
        assert (await enricher.lookup(image_id, REGION)).image["tags"]["team"] == "platform"
        await enricher.aclose()

    async def test_an_unknown_image_not_remembered_is_an_empty_answer_and_cached(
        self, aws: AwsClients, moto_url: str
    ) -> None:
        calls = await count_describe_calls(aws, moto_url)
        enricher = ImageEnricher(aws, call_timeout=MOTO_PATIENCE, endpoint_url=moto_url)
        with capture_logs() as logs:
            first = await enricher.lookup("ami-0000000000000000f", REGION)
            await enricher.lookup("ami-0000000000000000f", REGION)
        assert first == ImageLookup({}, True, "not_found")
        assert len(calls) == 1
        assert [entry["log_level"] for entry in logs] == ["debug"]
        await enricher.aclose()


class TestMemory:
    async def test_a_description_is_remembered_for_remember_after_it_was_seen(
        self, aws: AwsClients, moto_url: str, image_id: str
    ) -> None:
        clock = Clock()
        memory = MemoryStore(ttl=DAY, clock=clock)
        enricher = ImageEnricher(
            aws, call_timeout=MOTO_PATIENCE, endpoint_url=moto_url, memory=memory, remember=30 * DAY
        )
        await enricher.lookup(image_id, REGION)
        clock.now += 30 * DAY - 1
        remembered = await memory.recall(REGION, image_id)
        assert remembered is not None and remembered["tags"]["team"] == "platform"
        clock.now += 2
        assert await memory.recall(REGION, image_id) is None
        await enricher.aclose()

    async def test_a_deregistered_image_is_answered_from_memory_marked_remembered(
        self, aws: AwsClients, moto_url: str, ec2: Any, image_id: str
    ) -> None:
        memory = MemoryStore(ttl=DAY)
        enricher = ImageEnricher(
            aws,
            call_timeout=MOTO_PATIENCE,
            ttl=0,
            endpoint_url=moto_url,
            memory=memory,
            remember=DAY,
        )
        await enricher.lookup(image_id, REGION)
        await ec2.deregister_image(ImageId=image_id)
        lookup = await enricher.lookup(image_id, REGION)
        assert lookup.known and lookup.outcome == "remembered"
        assert lookup.image["name"] == "web-2025-05-01"
        assert lookup.image["remembered"] is True
        await enricher.aclose()

    async def test_remember_zero_keeps_nothing(
        self, aws: AwsClients, moto_url: str, image_id: str
    ) -> None:
        memory = MemoryStore(ttl=DAY)
        enricher = ImageEnricher(
            aws, call_timeout=MOTO_PATIENCE, endpoint_url=moto_url, memory=memory, remember=0
        )
        await enricher.lookup(image_id, REGION)
        assert await memory.recall(REGION, image_id) is None
        await enricher.aclose()


class TestFailures:
    async def test_unreachable_ec2_is_no_answer_and_a_warning(
        self, aws: AwsClients, closed_port_url: str
    ) -> None:
        enricher = ImageEnricher(aws, endpoint_url=closed_port_url, call_timeout=30)
        with capture_logs() as logs:
            lookup = await enricher.lookup("ami-0123456789abcdef0", REGION)
        assert lookup == ImageLookup({}, False, "unavailable")
        assert [entry["log_level"] for entry in logs] == ["warning"]
        await enricher.aclose()

    async def test_slow_ec2_is_cut_off_by_the_call_timeout_and_not_cached(
        self, aws: AwsClients, receiver: Receiver
    ) -> None:
        receiver.then_hang()
        receiver.then_hang()
        calls = await count_describe_calls(aws, receiver.url)
        enricher = ImageEnricher(aws, endpoint_url=receiver.url, call_timeout=0.2)
        async with asyncio.timeout(5):
            assert not (await enricher.lookup("ami-0123456789abcdef0", REGION)).known
            assert not (await enricher.lookup("ami-0123456789abcdef0", REGION)).known
        assert len(calls) == 2
        await enricher.aclose()

    @pytest.mark.parametrize(
        ("code", "status", "outcome"),
        [
            ("RequestLimitExceeded", 503, "unavailable"),
            ("InternalError", 500, "unavailable"),
            ("UnauthorizedOperation", 403, "denied"),
        ],
    )
    async def test_a_throttled_failing_or_refused_describe_is_no_answer(
        self, aws: AwsClients, receiver: Receiver, code: str, status: int, outcome: str
    ) -> None:
        for _ in range(3):  # the SDK's own tries
            receiver.then(*ec2_error(code, status))
        enricher = ImageEnricher(aws, endpoint_url=receiver.url)
        lookup = await enricher.lookup("ami-0123456789abcdef0", REGION)
        assert (lookup.known, lookup.outcome) == (False, outcome)
        await enricher.aclose()

    async def test_templates_still_get_the_remembered_facts_when_ec2_is_unavailable(
        self, aws: AwsClients, closed_port_url: str
    ) -> None:
        memory = MemoryStore(ttl=DAY)
        await memory.remember(REGION, "ami-0123456789abcdef0", {"name": "prod-web"}, DAY)
        enricher = ImageEnricher(aws, endpoint_url=closed_port_url, memory=memory, remember=DAY)
        lookup = await enricher.lookup("ami-0123456789abcdef0", REGION)
        assert not lookup.known
        assert lookup.image == {"name": "prod-web", "remembered": True}
        await enricher.aclose()


class TestOtherAccounts:
    async def test_an_image_of_another_account_is_described_through_the_role(
        self, via_moto: str
    ) -> None:
        async with ec2_in(OTHER_ACCOUNT, via_moto) as other:
            image = await make_image(other, "payments-api", {"Team": "payments"})
        async with AwsClients() as aws:
            own = ImageEnricher(aws, call_timeout=MOTO_PATIENCE)
            assert (await own.lookup(image, REGION, OTHER_ACCOUNT)).outcome == "not_found"
            enricher = ImageEnricher(aws, call_timeout=MOTO_PATIENCE, role_arn=ROLE_TEMPLATE)
            lookup = await enricher.lookup(image, REGION, OTHER_ACCOUNT)
            assert lookup.outcome == "described"
            assert lookup.image["owner"] == OTHER_ACCOUNT
            assert lookup.image["tags"] == {"Team": "payments"}
            assert aws.assumed == {role_arn(OTHER_ACCOUNT): 1}
            await own.aclose()
            await enricher.aclose()

    async def test_credentials_are_cached_per_role_then_renewed_before_they_expire(
        self, via_moto: str
    ) -> None:
        async with ec2_in(OTHER_ACCOUNT, via_moto) as other:
            images = [await make_image(other, f"img-{n}") for n in range(3)]
        offset = timedelta()

        def clock() -> datetime:
            return datetime.now(UTC) + offset

        async with AwsClients(clock=clock) as aws:
            enricher = ImageEnricher(aws, call_timeout=MOTO_PATIENCE, ttl=0, role_arn=ROLE_TEMPLATE)
            for image in images:
                assert (await enricher.lookup(image, REGION, OTHER_ACCOUNT)).known
            assert aws.assumed == {role_arn(OTHER_ACCOUNT): 1}, "one AssumeRole for three calls"
            offset = timedelta(minutes=50)  # the 1 h credentials are 10 minutes from expiry
            assert (await enricher.lookup(images[0], REGION, OTHER_ACCOUNT)).known
            assert aws.assumed == {role_arn(OTHER_ACCOUNT): 2}, "renewed before expiry"
            # 5 minutes from expiry (the mandatory window): renewed before the call goes out.
            offset = timedelta(minutes=55)
            lookup = await enricher.lookup(images[1], REGION, OTHER_ACCOUNT)
            assert lookup.outcome == "described"
            assert aws.assumed == {role_arn(OTHER_ACCOUNT): 3}
            await enricher.aclose()

    async def test_sts_unreachable_is_no_answer(
        self, closed_port_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", closed_port_url)
        async with AwsClients() as aws:
            enricher = ImageEnricher(aws, role_arn=ROLE_TEMPLATE, call_timeout=30)
            lookup = await enricher.lookup("ami-0123456789abcdef0", REGION, OTHER_ACCOUNT)
            assert (lookup.known, lookup.outcome) == (False, "unavailable")
            await enricher.aclose()


async def test_the_settings_come_from_the_config(aws: AwsClients) -> None:
    config = parse_config(
        "queue: {url: http://127.0.0.1:1/123456789012/q}\n"
        "enrich: {describe_images: true, cache_ttl: 5m, remember: 7d,"
        ' role_arn: "arn:aws:iam::{{ account }}:role/r"}\n'
        "handlers: [{name: c, type: console}]\n",
        env={},
    )
    enricher = ImageEnricher.from_config(config, aws, memory=MemoryStore(ttl=DAY))
    assert (enricher._ttl, enricher._remember) == (300, 7 * DAY)
    assert enricher._role_arn == "arn:aws:iam::{{ account }}:role/r"
    await enricher.aclose()


# --- the pure rules ---------------------------------------------------------------------


def client_error(code: str, operation: str = "DescribeImages") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class TestClassify:
    @pytest.mark.parametrize(
        "code", ["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"]
    )
    def test_an_image_that_is_not_there_is_an_answer(self, code: str) -> None:
        assert classify(client_error(code)) == "not_found"

    @pytest.mark.parametrize(
        "error",
        [
            client_error("RequestLimitExceeded"),
            client_error("Throttling"),
            client_error("InternalError"),
            client_error("Unavailable"),
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
            ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
            TimeoutError(),
            AssumeRoleFailed("arn:aws:iam::1:role/r", client_error("Throttling", "AssumeRole")),
            AssumeRoleFailed("arn:aws:iam::1:role/r", EndpointConnectionError(endpoint_url="x")),
        ],
    )
    def test_transient_failures_are_unavailable(self, error: BaseException) -> None:
        assert classify(error) == "unavailable"

    @pytest.mark.parametrize(
        "error",
        [
            client_error("UnauthorizedOperation"),
            client_error("AuthFailure"),
            AssumeRoleFailed("arn:aws:iam::1:role/r", client_error("AccessDenied", "AssumeRole")),
            AssumeRoleFailed("arn:aws:iam::1:role/r", client_error("RegionDisabledException")),
        ],
    )
    def test_refusals_are_denied(self, error: BaseException) -> None:
        assert classify(error) == "denied"

    def test_an_unknown_error_code_is_unavailable_never_an_answer(self) -> None:
        assert classify(client_error("SomethingNew")) == "unavailable"


class TestSettle:
    def test_a_description_wins_over_memory(self) -> None:
        assert settle({"name": "new"}, {"name": "old"}) == ImageLookup(
            {"name": "new"}, True, "described"
        )

    def test_not_found_uses_memory_and_marks_it(self) -> None:
        assert settle(None, {"name": "old"}) == ImageLookup(
            {"name": "old", "remembered": True}, True, "remembered"
        )

    def test_not_found_and_not_remembered_is_empty(self) -> None:
        assert settle(None, None) == ImageLookup({}, True, "not_found")


class TestRoleFor:
    def test_the_template_is_rendered_with_account_and_region(self) -> None:
        template = "arn:aws:iam::{{ account }}:role/r-{{ region }}"
        assert role_for(template, "111122223333", "eu-west-1") == (
            "arn:aws:iam::111122223333:role/r-eu-west-1"
        )

    def test_no_template_or_an_empty_rendering_means_amids_own_credentials(self) -> None:
        template = "{% if account != '123456789012' %}arn:aws:iam::{{ account }}:role/r{% endif %}"
        assert role_for(None, "111122223333", "us-east-1") is None
        assert role_for(template, "123456789012", "us-east-1") is None
        assert role_for(template, "111122223333", "us-east-1") == "arn:aws:iam::111122223333:role/r"
