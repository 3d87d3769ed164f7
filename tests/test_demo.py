"""`amid demo`: the whole pipeline locally, a burst of deregistrations collapsing into a digest."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_shows_a_burst_collapsing_into_one_digest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "amid", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "with SQS DeleteMessage under the queue's lock) on http://127.0.0.1:" in result.stdout
    assert "🗑️ 7 AMIs deregistered in 123456789012 us-east-1 (digest)" in result.stdout
    assert "digest        7 deregistered events in 1 message(s)" in result.stdout
