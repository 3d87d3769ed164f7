"""amid's endpoint table answers exactly as botocore's stock one, holding only amid's services."""

from __future__ import annotations

import gzip
import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import AioSession
from botocore.loaders import create_loader
from botocore.regions import EndpointResolver

from amid.aws import AwsClients, Session
from amid.endpoints import (
    AMID_SERVICES,
    LeanEndpointResolver,
    lean_endpoint_resolver,
    read_endpoints,
    stock_endpoint_resolver,
)

REGIONS = (
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "cn-north-1",
    "cn-northwest-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "aws-global",
    "fips-us-gov-west-1",
    "xx-nowhere-1",
    None,
)
SERVICES = (*sorted(AMID_SERVICES), "s3", "lambda")  # the last two: answered by the whole table
CLIENT_SERVICES = {
    "sqs": "list_queues",
    "sns": "list_topics",
    "dynamodb": "list_tables",
    "ec2": "describe_regions",
    "sts": "get_caller_identity",
    "events": "list_rules",
    "kms": "list_keys",
    "iam": "list_users",
}


def _outcome(call: Any, *args: Any, **kwargs: Any) -> str:
    """What a resolver call gives, exactly (types and order included), or what it raises."""
    try:
        return repr(call(*args, **kwargs))
    except Exception as error:
        return f"raised {type(error).__name__}: {error}"


def _resolvers() -> tuple[EndpointResolver, EndpointResolver]:
    return lean_endpoint_resolver(create_loader()), stock_endpoint_resolver(create_loader())


def test_the_kept_table_is_the_stock_one_without_other_services() -> None:
    lean, stock = _resolvers()
    expected = OrderedDict(stock._endpoint_data)
    expected["partitions"] = [
        OrderedDict(
            (key, OrderedDict((s, v) for s, v in value.items() if s in AMID_SERVICES))
            if key == "services"
            else (key, value)
            for key, value in partition.items()
        )
        for partition in stock._endpoint_data["partitions"]
    ]
    assert isinstance(lean, LeanEndpointResolver)
    assert repr(lean._endpoint_data) == repr(expected)
    assert lean.uses_builtin_data is stock.uses_builtin_data is True
    kept = {name for p in lean._endpoint_data["partitions"] for name in p["services"]}
    assert kept == set(AMID_SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_endpoints_resolve_as_botocore_resolves_them(service: str) -> None:
    lean, stock = _resolvers()
    for resolver in (lean, stock):
        assert resolver.get_available_partitions() == stock.get_available_partitions()
    for region in REGIONS:
        for dualstack in (False, True):
            for fips in (False, True):
                for partition in (None, "aws", "aws-cn", "aws-us-gov"):
                    outcomes = [
                        _outcome(
                            r.construct_endpoint,
                            service,
                            region,
                            partition_name=partition,
                            use_dualstack_endpoint=dualstack,
                            use_fips_endpoint=fips,
                        )
                        for r in (lean, stock)
                    ]
                    assert outcomes[0] == outcomes[1], (region, dualstack, fips, partition)
        if region is not None:
            assert _outcome(lean.get_partition_for_region, region) == _outcome(
                stock.get_partition_for_region, region
            )
    for partition in stock.get_available_partitions():
        for tags in (None, ["fips"], ["dualstack"], ["dualstack", "fips"]):
            for non_regional in (False, True):
                assert lean.get_available_endpoints(
                    service, partition, non_regional, tags
                ) == stock.get_available_endpoints(service, partition, non_regional, tags)
            assert lean.get_partition_dns_suffix(partition, tags) == stock.get_partition_dns_suffix(
                partition, tags
            )
        assert repr(lean.get_service_endpoints_data(service, partition)) == repr(
            stock.get_service_endpoints_data(service, partition)
        )


def test_every_service_amid_makes_a_client_for_is_kept() -> None:
    source = Path(__file__).parent.parent / "amid"
    named = {
        name
        for path in source.rglob("*.py")
        for name in re.findall(r'\.client\(\s*"([a-z0-9-]+)"', path.read_text(encoding="utf-8"))
    }
    assert {"sqs", "sns", "dynamodb", "ec2"} <= named
    assert named <= AMID_SERVICES


def test_the_whole_table_is_read_only_for_another_service() -> None:
    lean, stock = _resolvers()
    assert isinstance(lean, LeanEndpointResolver)
    for service in AMID_SERVICES:
        lean.construct_endpoint(service, "eu-west-1")
        lean.get_available_endpoints(service)
    assert lean._whole is None
    assert repr(lean.construct_endpoint("s3", "eu-west-1")) == repr(
        stock.construct_endpoint("s3", "eu-west-1")
    )
    whole = lean._whole
    assert whole is not None
    lean.get_available_endpoints("lambda")
    assert lean._whole is whole  # built once


class _Signed(Exception):
    """Raised where the request is about to be signed: nothing is sent."""


def _capture_signing(client: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def before_sign(request: Any, signing_name: str, region_name: str, **kwargs: Any) -> None:
        seen.update(
            signed_url=request.url,
            signed_name=signing_name,
            signed_region=region_name,
            signed_version=kwargs.get("signature_version"),
        )
        raise _Signed

    client.meta.events.register("before-sign", before_sign)
    return seen


async def _client_view(
    session: AioSession, service: str, region: str, endpoint_url: str | None
) -> dict[str, Any]:
    async with session.create_client(
        service, region_name=region, endpoint_url=endpoint_url
    ) as client:
        signed = _capture_signing(client)
        with pytest.raises(_Signed):
            await getattr(client, CLIENT_SERVICES[service])()
        return {
            "endpoint_url": client.meta.endpoint_url,
            "region_name": client.meta.region_name,
            "partition": client.meta.partition,
            "signer_region": client._request_signer.region_name,
            "signer_name": client._request_signer.signing_name,
            "signature_version": client._request_signer.signature_version,
            **signed,
        }


@pytest.mark.parametrize("endpoint_url", [None, "http://127.0.0.1:1"])
async def test_clients_reach_and_sign_for_the_same_endpoints(endpoint_url: str | None) -> None:
    lean, stock = Session(), AioSession()
    assert isinstance(lean._get_internal_component("endpoint_resolver"), LeanEndpointResolver)
    for service in CLIENT_SERVICES:
        for region in ("us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"):
            ours = await _client_view(lean, service, region, endpoint_url)
            theirs = await _client_view(stock, service, region, endpoint_url)
            assert ours == theirs, (service, region)
            assert ours["signed_url"], (service, region)  # the request got as far as signing


async def test_amid_clients_use_the_lean_table() -> None:
    async with AwsClients() as aws:
        await aws.client("sqs", "us-east-1", "http://127.0.0.1:1")
        resolver = aws._session._get_internal_component("endpoint_resolver")
    assert isinstance(resolver, LeanEndpointResolver)
    assert resolver._whole is None


def _tiny_table(hostname: str) -> dict[str, Any]:
    return {
        "partitions": [
            {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "regionRegex": "^(us|eu)\\-\\w+\\-\\d+$",
                "regions": {"us-east-1": {}},
                "defaults": {"hostname": "{service}.{region}.{dnsSuffix}"},
                "services": {
                    "sqs": {"endpoints": {"us-east-1": {"hostname": hostname}}},
                    "s3": {"endpoints": {"us-east-1": {}}},
                },
            }
        ],
        "version": 3,
    }


def test_a_data_path_table_is_read_as_botocore_reads_it(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps(_tiny_table("sqs.example")))
    lean = lean_endpoint_resolver(create_loader(str(tmp_path)))
    assert isinstance(lean, LeanEndpointResolver)
    assert lean.uses_builtin_data is False
    assert lean.construct_endpoint("sqs", "us-east-1")["hostname"] == "sqs.example"
    assert list(lean._endpoint_data["partitions"][0]["services"]) == ["sqs"]


def test_a_gzipped_table_is_left_to_botocore(tmp_path: Path) -> None:
    table = json.dumps(_tiny_table("sqs.gz.example")).encode()
    (tmp_path / "endpoints.json.gz").write_bytes(gzip.compress(table))
    resolver = lean_endpoint_resolver(create_loader(str(tmp_path)))
    assert type(resolver) is EndpointResolver
    assert resolver.construct_endpoint("sqs", "us-east-1")["hostname"] == "sqs.gz.example"


@pytest.mark.parametrize(
    "text",
    [
        '{"partitions":[],"version":3}',
        ' \n{ "version" : 3 ,\t"partitions" : [ ] }\r\n',
        '{"partitions":[{"services":{}}]}',
        '{"partitions":[{"a":1,"services":{"sqs":{"x":[1,{"y":null}]},"s3":{"z":"}"}},"b":2}]}',
        '{"partitions":[{"services":{"sqs":{"v":1},"sqs":{"v":2}},"services":{"s3":{}}}]}',
        '{"partitions":[{"services":{"s\\u0071s":{"k":"\\u00e9"}}}],"x":{"y":[]}}',
    ],
)
def test_reading_matches_json_loads(text: str) -> None:
    expected = json.loads(text, object_pairs_hook=OrderedDict)
    for partition in expected.get("partitions", []):
        services = partition.get("services")
        if services is not None:
            partition["services"] = OrderedDict((k, v) for k, v in services.items() if k == "sqs")
    assert repr(read_endpoints(text, frozenset({"sqs"}))) == repr(expected)


@pytest.mark.parametrize("text", ['{"partitions":[]} x', '{"partitions":[}', '{"a" 1}', "[]"])
def test_reading_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        read_endpoints(text, frozenset({"sqs"}))
