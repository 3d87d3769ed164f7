"""Fixtures for the reliability tests: the scripted receiver, a cuttable proxy in front of moto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import CuttableProxy, Receiver, flush_reports


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The webhook destination, answering 200 until a test scripts it otherwise."""
    with Receiver(seed=8) as running:
        yield running


@pytest.fixture
def sqs_proxy(moto_url: str) -> Iterator[CuttableProxy]:
    """moto behind a proxy that a test can cut, to stage an SQS outage."""
    with CuttableProxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
def figures_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests' figure tables are appended, one file for the whole run."""
    return tmp_path_factory.getbasetemp() / "reliability-figures.txt"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    flush_reports(terminalreporter)
