"""moto's standalone server as a real subprocess on 127.0.0.1, for tests and benchmarks.

It runs `python -m amid.tools.localsqs`: moto's server with SQS DeleteMessage under
the queue's lock, so a message sent during a delete is not lost (issue 25;
docs/reliability.md, "The local SQS"). `StockMotoServer` runs moto unpatched, for
the test that shows why.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """A running moto server (with amid's one fix); `url` is its endpoint."""

    module = "amid.tools.localsqs"  # run as `python -m module -H 127.0.0.1 -p PORT`

    def __init__(
        self,
        port: int | None = None,
        log: Path | None = None,
        *,
        switch_interval: float | None = None,
    ) -> None:
        self.port = port or free_port()
        # sys.setswitchinterval in the server: how often its threads may be made to take
        # turns (Python's default is 5 ms). Shorter makes races show as a loaded machine does.
        self.switch_interval = switch_interval
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or Path(os.environ.get("AMID_TEST_TMP", "/tmp")) / f"moto-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        argv = [self.module, "-H", "127.0.0.1", "-p", str(self.port)]
        if self.switch_interval is None:
            return [sys.executable, "-m", *argv]
        # `python -m module ...` after sys.setswitchinterval; the module runs unchanged.
        code = (
            "import runpy, sys; sys.setswitchinterval(float(sys.argv[1])); "
            "sys.argv = sys.argv[2:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
        )
        return [sys.executable, "-c", code, repr(self.switch_interval), *argv]

    def start(self, timeout: float = 30.0) -> None:
        log = self.log
        with log.open("wb") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}; see {log}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()  # noqa: S310
                return
            time.sleep(0.1)
        raise RuntimeError(f"moto server did not start in {timeout}s; see {log}")

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[MotoServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


class StockMotoServer(MotoServer):
    """moto's server exactly as released: DeleteMessage can lose a concurrent send."""

    module = "moto.server"
