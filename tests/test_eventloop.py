"""The event loop `amid run` runs on: uvloop on Linux, the stock loop elsewhere or on request.

The suite's own tests (pytest-asyncio, the daemon in process) stay on the stock loop: that is
the loop amid runs on off Linux and under AMID_EVENT_LOOP=asyncio, so it keeps its coverage.
Every test that starts `amid run` as a subprocess runs it on uvloop (test_lifecycle, the
reliability and scale harness); the last tests here check which loop that subprocess says it
runs on, and that it handles an event on either.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvloop

from amid.eventloop import ENV, EventLoopError, loop_factory, loop_name, run
from tests.helpers import config_yaml, event_body, hook_handler, make_queue, records, wait_for

LINUX = "linux"


class TestLoopFactory:
    def test_unset_on_linux_is_uvloop(self) -> None:
        assert loop_factory({}, LINUX) is uvloop.new_event_loop

    def test_empty_is_the_same_as_unset(self) -> None:
        assert loop_factory({ENV: " "}, LINUX) is uvloop.new_event_loop

    @pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
    def test_unset_elsewhere_is_the_stock_loop(self, platform: str) -> None:
        assert loop_factory({}, platform) is None

    def test_asyncio_asks_for_the_stock_loop_on_linux(self) -> None:
        assert loop_factory({ENV: "asyncio"}, LINUX) is None

    def test_uvloop_asked_for_by_name_in_any_case(self) -> None:
        assert loop_factory({ENV: "UVLoop"}, LINUX) is uvloop.new_event_loop
        assert loop_factory({ENV: "uvloop"}, "darwin") is uvloop.new_event_loop

    def test_an_unknown_name_is_an_error_naming_the_variable(self) -> None:
        with pytest.raises(EventLoopError, match=r"^AMID_EVENT_LOOP='tokio': expected one of"):
            loop_factory({ENV: "tokio"}, LINUX)

    def test_without_uvloop_unset_falls_back_and_uvloop_is_an_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
        assert loop_factory({}, LINUX) is None
        with pytest.raises(EventLoopError, match="uvloop is not installed"):
            loop_factory({ENV: "uvloop"}, LINUX)


class TestRun:
    @staticmethod
    async def _which() -> str:
        await asyncio.sleep(0)
        return loop_name(asyncio.get_running_loop())

    def test_runs_the_coroutine_on_uvloop(self) -> None:
        assert run(self._which(), uvloop.new_event_loop) == "uvloop"

    def test_runs_the_coroutine_on_the_stock_loop(self) -> None:
        assert run(self._which(), None) == "asyncio"


def _started_line(log: Path) -> dict[str, Any] | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry: dict[str, Any] = json.loads(line)
            if entry.get("event") == "amid started":
                return entry
    return None


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "expected"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_amid_run_handles_an_event_on_the_loop_it_names(
    sqs: Any, moto_url: str, tmp_path: Path, setting: str | None, expected: str
) -> None:
    queue, _ = await make_queue(sqs)
    record = tmp_path / "calls.jsonl"
    config = tmp_path / "amid.yaml"
    config.write_text(config_yaml(queue, moto_url, hook_handler(record)))
    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available"))
    env = {key: value for key, value in os.environ.items() if key != ENV}
    if setting is not None:
        env[ENV] = setting
    log = tmp_path / "amid.log"
    with log.open("wb") as output:
        amid = subprocess.Popen(
            [sys.executable, "-m", "amid", "run", "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        await wait_for(lambda: len(records(record)) == 1, timeout=30)
    finally:
        amid.terminate()
        code = await asyncio.to_thread(amid.wait, 30)
    assert code == 0, log.read_text()
    started = _started_line(log)
    assert started is not None, log.read_text()
    assert started["event_loop"] == expected
    assert records(record)[0]["state"] == "available"


async def test_amid_run_refuses_an_unknown_loop_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "amid.yaml"
    config.write_text(
        config_yaml(
            "http://127.0.0.1:9/123456789012/q",
            "http://127.0.0.1:9",
            hook_handler(tmp_path / "c.jsonl"),
        )
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "amid", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, ENV: "tokio"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == ("AMID_EVENT_LOOP='tokio': expected one of uvloop, asyncio")
