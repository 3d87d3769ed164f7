"""Fixtures for the scale tests: the scripted receiver, a DynamoDB server for the shared ledger."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.conftest import REGION
from tests.harness import Receiver, flush_reports
from tests.moto_server import MotoServer, free_port

DYNAMODB_SERVER = Path(__file__).with_name("dynamodb_server.py")


class DynamoDBServer(MotoServer):
    """tests/scale/dynamodb_server.py as a subprocess on 127.0.0.1; `url` is its endpoint."""

    def command(self) -> list[str]:
        return [sys.executable, str(DYNAMODB_SERVER), str(self.port)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The webhook destination, answering 200 until a test scripts it otherwise."""
    with Receiver(seed=6) as running:
        yield running


@pytest.fixture(scope="module")
def dynamodb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoDBServer]:
    log: Path = tmp_path_factory.mktemp("dynamodb") / "server.log"
    with DynamoDBServer(free_port(), log).running() as server:
        yield server


@pytest.fixture
async def ledger_dynamodb(dynamodb_server: DynamoDBServer) -> AsyncIterator[Any]:
    """A client of the ledger's DynamoDB server, emptied before each test."""
    request = urllib.request.Request(f"{dynamodb_server.url}/moto-api/reset", method="POST")  # noqa: S310
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
    session = get_session()
    async with session.create_client(
        "dynamodb", region_name=REGION, endpoint_url=dynamodb_server.url
    ) as client:
        yield client


@pytest.fixture
def figures_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests' figure tables are appended, one file for the whole run."""
    return tmp_path_factory.getbasetemp() / "reliability-figures.txt"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    flush_reports(terminalreporter)
