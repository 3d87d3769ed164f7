"""Shared fixtures: a real moto server on 127.0.0.1, AWS clients against it, fake credentials."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.moto_server import MotoServer

REGION = "us-east-1"

# Never reach real AWS from tests, whatever the developer's environment holds.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)


@pytest.fixture(scope="session")
def moto_session_server() -> Iterator[MotoServer]:
    with MotoServer().running() as server:
        yield server


@pytest.fixture
def moto(moto_session_server: MotoServer) -> MotoServer:
    """The moto server, emptied before each test."""
    moto_session_server.reset()
    return moto_session_server


@pytest.fixture
def moto_url(moto: MotoServer) -> str:
    return moto.url


async def _client(service: str, endpoint: str) -> Any:
    return get_session().create_client(service, region_name=REGION, endpoint_url=endpoint)


@pytest.fixture
async def sqs(moto_url: str) -> AsyncIterator[Any]:
    async with await _client("sqs", moto_url) as client:
        yield client


@pytest.fixture
async def sns(moto_url: str) -> AsyncIterator[Any]:
    async with await _client("sns", moto_url) as client:
        yield client


@pytest.fixture
async def dynamodb(moto_url: str) -> AsyncIterator[Any]:
    async with await _client("dynamodb", moto_url) as client:
        yield client


@pytest.fixture
async def ec2(moto_url: str) -> AsyncIterator[Any]:
    async with await _client("ec2", moto_url) as client:
        yield client


@pytest.fixture
async def events_client(moto_url: str) -> AsyncIterator[Any]:
    async with await _client("events", moto_url) as client:
        yield client
