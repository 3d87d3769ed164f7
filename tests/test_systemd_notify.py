"""`amid run` under a (stand-in) systemd: READY after the first receive, WATCHDOG pings, STOPPING."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import config_yaml, hook_handler, make_queue

pytestmark = pytest.mark.slow


async def test_amid_tells_systemd_ready_watchdog_and_stopping(
    sqs: Any, moto_url: str, tmp_path: Path
):
    queue, _ = await make_queue(sqs)
    config = tmp_path / "amid.yaml"
    config.write_text(config_yaml(queue, moto_url, hook_handler(tmp_path / "calls.jsonl")))
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
    with (tmp_path / "amid.log").open("wb") as log:
        amid = subprocess.Popen(
            [sys.executable, "-m", "amid", "run", "-c", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def until(message: str) -> None:
        async with asyncio.timeout(30):
            while message not in seen:
                data = await loop.sock_recv(listener, 4096)
                seen.extend(data.decode().splitlines())

    try:
        await until("READY=1")
        await until("WATCHDOG=1")
        amid.send_signal(signal.SIGTERM)
        await until("STOPPING=1")
        code = await asyncio.to_thread(amid.wait, 30)
    finally:
        if amid.poll() is None:
            amid.kill()
            amid.wait()
        listener.close()
    assert code == 0, (tmp_path / "amid.log").read_text()
    assert seen.index("READY=1") < seen.index("STOPPING=1")
