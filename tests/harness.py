"""A harness for reliability and scale tests: amid as real processes, real servers on loopback.

Everything here talks to 127.0.0.1 only and stops itself:

- `Receiver`: the webhook destination. An aiohttp server on its own thread (it
  keeps answering while the test's event loop is busy) that records every
  request and can be scripted per handler path: random 500s from a seeded RNG,
  429 with Retry-After, hanging, refusing (resetting the connection).
- `CuttableProxy`: a TCP proxy between amid and moto that a test can cut (every
  connection reset, new ones too) and restore, to stage an SQS outage without
  losing moto's in-memory state.
- `AmidConfig` / `Webhook`: an amid config whose handlers post to the receiver,
  written as YAML.
- `AmidProcess`: `python -m amid run -c CONFIG` as a subprocess, with its log in
  a file: start, wait_ready, metrics, terminate (SIGTERM), kill (SIGKILL).
- `event_stream` and `PacedProducer`: real-shaped events, some arriving as two
  or three copies, sent in batches of ten while the queue depth stays bounded
  (moto's SQS works in proportion to the depth on every call).
- `sqlite_recorded` / `dynamodb_recorded`: the pairs a ledger holds as
  delivered, to tell a repeat of a recorded success (a bug) from a delivery
  under way at a kill (allowed, counted).
- `where_missing`: for pairs that never arrived, where they could be: the queue
  and dead-letter counts, each replica's in-flight gauge and deleted count, and
  which replica logs name the missing event ids.
- `tally` and `Tally`: what the receiver got against what was expected: lost
  pairs, repeated pairs, a printable table; `report` shows it at the end of the
  pytest run (`flush_reports` in a conftest's `pytest_terminal_summary`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from amid.store.dynamodb import HANDLER_PREFIX
from amid.tools.offline import synthetic_event
from tests.helpers import make_queue as _make_queue
from tests.helpers import queue_count
from tests.moto_server import free_port

__all__ = [
    "STATES",
    "AmidConfig",
    "AmidProcess",
    "Behaviour",
    "CuttableProxy",
    "EventStream",
    "MetricsSnapshot",
    "PacedProducer",
    "Pair",
    "Receiver",
    "Request",
    "Tally",
    "Webhook",
    "dynamodb_recorded",
    "event_stream",
    "flush_reports",
    "make_queue",
    "owner_prefix",
    "queue_count",
    "report",
    "sqlite_recorded",
    "tally",
    "wait_until",
]

STATES = ("available", "failed", "deregistered", "disabled")
REGION = "us-east-1"
Pair = tuple[str, str]  # (event id, handler name)
_T = TypeVar("_T")


# --------------------------------------------------------------------------- loop thread


class _LoopThread:
    """An asyncio loop on a daemon thread; `call` runs a coroutine there from any thread."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


# --------------------------------------------------------------------------- receiver


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the receiver answers one handler path; each request draws once from the seeded RNG.

    The rates are fractions of requests, tried in this order: `refuse` (the
    connection is reset without an answer), `hang` (no answer for `hang_for`
    seconds, then 503), `throttle` (429 with `Retry-After: retry_after`),
    `fail` (`fail_status`). Everything else gets 200. Every answer but a hang
    comes `delay` seconds after the request was recorded, so a test can find
    deliveries under way: recorded by the receiver, not yet answered.
    """

    delay: float = 0.0
    fail: float = 0.0
    fail_status: int = 500
    throttle: float = 0.0
    retry_after: float = 1.0
    hang: float = 0.0
    hang_for: float = 30.0
    refuse: float = 0.0


@dataclass(frozen=True, slots=True)
class Request:
    """One request the receiver saw. `status` is None when the connection was refused."""

    event_id: str
    handler: str
    at: float  # time.monotonic() when it arrived
    status: int | None
    source: str  # the `from` query parameter: which amid process sent it

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Receiver:
    """The webhook destination: `http://127.0.0.1:<port>/<handler>?from=<source>`.

    A POST's event id is the `id` of its JSON body (the webhook handler's
    default body is the event), else the X-Amid-Event-Id header. A request that
    got a 2xx answer is a delivery; `deliveries()` counts them per
    (event id, handler).

        with Receiver(seed=1) as receiver:
            receiver.script("flaky", Behaviour(fail=0.1))
            url = receiver.url_for("flaky", source="r1")
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._scripts: dict[str, Behaviour] = {}
        self._thread: _LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, handler: str, source: str = "amid") -> str:
        return f"{self.url}/{handler}?from={source}"

    def start(self) -> Receiver:
        self._thread = _LoopThread("receiver")
        self.port = self._thread.call(self._serve())
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(Exception):
                thread.call(self._shutdown(), timeout=15)
            thread.stop()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, handler: str, behaviour: Behaviour) -> None:
        """Answer `handler`'s path this way from now on (Behaviour() is plain 200)."""
        with self._lock:
            self._scripts[handler] = behaviour

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def deliveries(self) -> Counter[Pair]:
        """2xx answers per (event id, handler)."""
        return Counter((r.event_id, r.handler) for r in self.requests() if r.delivered)

    def sources(self) -> dict[Pair, list[str]]:
        """Per delivered pair, which process delivered it (`from`), in order of arrival."""
        sources: dict[Pair, list[str]] = {}
        for r in sorted(self.requests(), key=lambda r: r.at):
            if r.delivered:
                sources.setdefault((r.event_id, r.handler), []).append(r.source)
        return sources

    def delivered_count(self) -> int:
        with self._lock:
            return sum(1 for r in self._requests if r.delivered)

    async def _serve(self) -> int:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/{handler}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=512)
        await site.start()
        server = site._server  # the bound socket: port 0 picked a free one
        sockets = getattr(server, "sockets", None) or []
        port: int = sockets[0].getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _decide(self, handler: str) -> tuple[str, Behaviour]:
        with self._lock:
            behaviour = self._scripts.get(handler, Behaviour())
            draw = self._rng.random()
        edge = 0.0
        for outcome, rate in (
            ("refuse", behaviour.refuse),
            ("hang", behaviour.hang),
            ("throttle", behaviour.throttle),
            ("fail", behaviour.fail),
        ):
            edge += rate
            if draw < edge:
                return outcome, behaviour
        return "ok", behaviour

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        handler = request.match_info["handler"]
        raw = await request.read()
        event_id = request.headers.get("X-Amid-Event-Id", "")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event_id = str(json.loads(raw)["id"])
        arrived = time.monotonic()
        outcome, behaviour = self._decide(handler)
        status = _STATUS[outcome] if outcome != "fail" else behaviour.fail_status
        # Recorded before answering: a sender killed meanwhile still counts as delivered,
        # as a real destination would have acted on the request.
        record = Request(event_id, handler, arrived, status, request.query.get("from", ""))
        with self._lock:
            self._requests.append(record)
        await asyncio.sleep(behaviour.hang_for if outcome == "hang" else behaviour.delay)
        if status is None:
            if request.transport is not None:
                _reset(request.transport)
            return web.Response(status=500)  # never reaches the peer
        headers = {"Retry-After": f"{behaviour.retry_after:g}"} if outcome == "throttle" else {}
        return web.Response(status=status, text=f"{outcome}\n", headers=headers)


_STATUS: dict[str, int | None] = {"ok": 200, "refuse": None, "hang": 503, "throttle": 429}


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with RST (SO_LINGER 0): the peer sees a reset connection, not a clean close."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()


# --------------------------------------------------------------------------- proxy


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 to `upstream` ("host:port" or a URL) that can be cut.

    `cut()` resets every open connection and resets each new one at once (the
    listening port stays bound, so `restore()` needs no rebinding) until
    `restore()`. Use `url` as the client's endpoint.
    """

    def __init__(self, upstream: str) -> None:
        host_port = upstream.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        self._upstream = (host, int(port))
        self._thread: _LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._cut = False
        self.cuts = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CuttableProxy:
        self._thread = _LoopThread("proxy")
        self.port = self._thread.call(self._listen())
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(Exception):
                thread.call(self._close(), timeout=15)
            thread.stop()

    def __enter__(self) -> CuttableProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def cut(self) -> None:
        """From now on, no byte passes: open connections are reset, new ones too."""
        assert self._thread is not None, "start the proxy first"
        self._thread.call(self._set_cut(True))

    def restore(self) -> None:
        assert self._thread is not None, "start the proxy first"
        self._thread.call(self._set_cut(False))

    async def outage(self, seconds: float) -> None:
        """Cut for `seconds`, then restore (also when cancelled)."""
        await asyncio.to_thread(self.cut)
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(self.restore)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=512)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._set_cut(True)

    async def _set_cut(self, cut: bool) -> None:
        if cut and not self._cut:
            self.cuts += 1
        self._cut = cut
        if cut:
            for writer in list(self._open):
                _reset(writer.transport)
            self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            _reset(writer.transport)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            _reset(writer.transport)
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for end in (writer, up_writer):
            self._open.discard(end)
            end.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            if writer.can_write_eof() and not writer.is_closing():
                with contextlib.suppress(OSError):
                    writer.write_eof()


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook handler posting to the receiver; `states` limits it with a `match`."""

    name: str
    states: frozenset[str] | None = None

    def wants(self, event: Mapping[str, Any]) -> bool:
        return self.states is None or event["detail"]["State"] in self.states

    def to_dict(self, receiver: Receiver, source: str) -> dict[str, Any]:
        handler: dict[str, Any] = {
            "name": self.name,
            "type": "webhook",
            "url": receiver.url_for(self.name, source),
        }
        if self.states is not None:
            handler["match"] = {"detail": {"State": sorted(self.states)}}
        return handler


@dataclass(frozen=True, slots=True)
class AmidConfig:
    """An `amid run` config: SQS at `sqs_endpoint`, webhooks to the receiver, one metrics port.

    `source` tags every webhook URL (`?from=`), so the receiver knows which
    process delivered. `dedupe` is the YAML mapping of the `dedupe` section.
    """

    queue_url: str
    sqs_endpoint: str
    receiver: Receiver
    handlers: Sequence[Webhook]
    dedupe: Mapping[str, Any]
    source: str = "amid"
    metrics_port: int = field(default_factory=free_port)
    visibility_timeout: float = 30.0
    max_in_flight: int = 64
    pollers: int = 2
    wait_time: float = 1.0
    redelivery: tuple[float, float] = (1.0, 2.0)
    retry_attempts: int = 3
    backoff: tuple[float, float] = (0.01, 0.05)
    timeout: float = 10.0
    shutdown_timeout: float = 5.0
    log_level: str = "info"
    expectations: Sequence[Mapping[str, Any]] = ()  # `expectations:` items, as YAML mappings
    silences: Sequence[Mapping[str, Any]] = ()  # `silences:` items, as YAML mappings

    def to_dict(self) -> dict[str, Any]:
        document = {
            "queue": {
                "url": self.queue_url,
                "region": REGION,
                "endpoint_url": self.sqs_endpoint,
                "wait_time": self.wait_time,
                "visibility_timeout": self.visibility_timeout,
                "max_in_flight": self.max_in_flight,
                "pollers": self.pollers,
                "redelivery": {"initial": self.redelivery[0], "max": self.redelivery[1]},
            },
            "shutdown_timeout": self.shutdown_timeout,
            "dedupe": dict(self.dedupe),
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}", "queue_depth_interval": 0},
            "logging": {"level": self.log_level, "format": "json"},
            "defaults": {
                "timeout": self.timeout,
                "retry": {
                    "attempts": self.retry_attempts,
                    "initial_backoff": self.backoff[0],
                    "max_backoff": self.backoff[1],
                },
            },
            "handlers": [h.to_dict(self.receiver, self.source) for h in self.handlers],
        }
        if self.expectations:
            document["expectations"] = [dict(e) for e in self.expectations]
        if self.silences:
            document["silences"] = [dict(s) for s in self.silences]
        return document

    def write(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


# --------------------------------------------------------------------------- amid process


class MetricsSnapshot:
    """One scrape of /metrics; `value("amid_events_total", outcome="duplicate")` sums matches."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )


class AmidProcess:
    """`python -m amid run -c CONFIG` as a subprocess; its stdout and stderr go to `log`.

    AWS clients other than SQS (the DynamoDB ledger) reach `aws_endpoint`
    through `AWS_ENDPOINT_URL`, with fake credentials. Use as
    `async with AmidProcess(...) as amid:`; leaving the block kills it if it runs.
    """

    def __init__(
        self,
        config: AmidConfig,
        workdir: Path,
        *,
        name: str | None = None,
        aws_endpoint: str | None = None,
    ) -> None:
        self.config = config
        self.name = name or config.source
        self.config_path = config.write(workdir / f"{self.name}.yaml")
        self.log = workdir / f"{self.name}.log"
        self._aws_endpoint = aws_endpoint
        self.process: subprocess.Popen[bytes] | None = None
        self.killed_at: float | None = None  # time.monotonic() of kill()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.metrics_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AMID_CONFIG"):
            env.pop(name, None)
        env.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_EC2_METADATA_DISABLED": "true",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self._aws_endpoint is not None:
            env["AWS_ENDPOINT_URL"] = self._aws_endpoint
        return env

    def command(self, *arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`python -m amid ARGUMENTS -c CONFIG` (a one-off command, such as `silence add`) with
        this process's config and environment; waits for it."""
        return subprocess.run(
            [sys.executable, "-m", "amid", *arguments, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=timeout,
            check=False,
        )

    def start(self) -> AmidProcess:
        assert not self.running, f"{self.name} is already running"
        self.killed_at = None
        with self.log.open("ab") as output:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "amid", "run", "-c", str(self.config_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._env(),
            )
        return self

    async def __aenter__(self) -> AmidProcess:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        if self.running:
            await self.kill()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as response:  # noqa: S310
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /readyz until 200 (a ReceiveMessage succeeded); fail if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(self._get, "/readyz")
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.2)

    async def metrics(self) -> MetricsSnapshot:
        status, text = await asyncio.to_thread(self._get, "/metrics")
        assert status == 200, f"/metrics answered {status}"
        return MetricsSnapshot(text)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the exit; its return code (killed after `timeout`: -9)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                return await self.kill()
        return int(self.process.returncode)

    async def kill(self) -> int:
        """SIGKILL now: nothing is flushed, nothing given back. Returns -9."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.killed_at = time.monotonic()
        return await asyncio.to_thread(self.process.wait, 30)


# --------------------------------------------------------------------------- events and queue


async def make_queue(sqs: Any, name: str = "amid", max_receive: int = 10) -> tuple[str, str]:
    """A queue with a dead-letter queue after `max_receive` receives; (queue_url, dlq_url)."""
    return await _make_queue(sqs, name, max_receive)


@dataclass(frozen=True, slots=True)
class EventStream:
    """Unique events and the message bodies to send: each event once or as several copies."""

    events: Sequence[Mapping[str, Any]]
    bodies: Sequence[str]

    def expected(self, handlers: Iterable[Webhook]) -> set[Pair]:
        """Every (event id, handler) pair whose handler's match fits the event."""
        handlers = list(handlers)
        return {(e["id"], h.name) for e in self.events for h in handlers if h.wants(e)}

    @property
    def copies(self) -> int:
        return len(self.bodies) - len(self.events)


def event_stream(count: int, *, seed: int, copy_rate: float = 0.3, spread: int = 50) -> EventStream:
    """`count` events over the four states; `copy_rate` of them sent two or three times.

    A copy lands up to `spread` messages after its original: some in the same
    receive batch (handled at the same time), some well after (a plain duplicate).
    """
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    keyed: list[tuple[float, int, str]] = []
    for index in range(count):
        event = synthetic_event(rng.choice(STATES), f"ami-{index:017x}")
        event["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        events.append(event)
        body = json.dumps(event)
        copies = rng.choice((2, 3)) if rng.random() < copy_rate else 1
        keyed.append((float(index), 0, body))
        keyed.extend((index + rng.uniform(0, spread), n, body) for n in range(1, copies))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return EventStream(events, [body for _, _, body in keyed])


class PacedProducer:
    """Sends bodies with SendMessageBatch (10 a call), keeping the queue depth near `max_depth`.

    Depth (visible plus in flight) is read every `max_depth // 3` messages;
    while one more chunk would take it past `max_depth`, the producer waits.
    """

    def __init__(self, sqs: Any, queue_url: str, *, max_depth: int = 300) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._max_depth = max_depth
        self._chunk = max(10, max_depth // 3)
        self.sent = 0
        self.sent_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send(self, bodies: Iterable[str]) -> None:
        batch: list[str] = []
        since_check = self._chunk  # check before the first message
        for body in bodies:
            if since_check >= self._chunk:
                await self._wait_for_room()
                since_check = 0
            batch.append(body)
            if len(batch) == 10:
                await self._send_batch(batch)
                since_check += len(batch)
                batch = []
        if batch:
            await self._send_batch(batch)

    async def _wait_for_room(self) -> None:
        while await queue_count(self._sqs, self._url) + self._chunk > self._max_depth:
            await asyncio.sleep(0.2)

    async def _send_batch(self, bodies: Sequence[str]) -> None:
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
        response = await self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
        failed = response.get("Failed", [])
        assert not failed, f"SendMessageBatch refused {failed}"
        self.sent += len(bodies)
        self.sent_changed.set()

    def start(self, bodies: Iterable[str]) -> asyncio.Task[None]:
        """Send in the background; `aclose()` stops it (use `async with producer:`)."""
        self._task = asyncio.create_task(self.send(bodies), name="paced-producer")
        return self._task

    async def __aenter__(self) -> PacedProducer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_sent(self, count: int) -> None:
        """Until at least `count` messages went out."""
        while self.sent < count:
            self.sent_changed.clear()
            await self.sent_changed.wait()


# --------------------------------------------------------------------------- ledger contents


def sqlite_recorded(path: Path) -> set[Pair]:
    """The (event id, handler) pairs the sqlite ledger at `path` holds as delivered.

    Read it only while no amid process uses the file (after a kill, before a restart).
    """
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {(str(e), str(h)) for e, h in db.execute("SELECT event_id, handler FROM deliveries")}


def owner_prefix(pid: int) -> str:
    """The start of the ledger owner id of the amid process `pid` (amid.daemon._owner_id)."""
    return f"{socket.gethostname()}:{pid}:"


async def dynamodb_recorded(client: Any, table: str, owner: str) -> set[Pair]:
    """The pairs the DynamoDB ledger holds as delivered by an owner whose id starts with `owner`."""
    pairs: set[Pair] = set()
    params: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(#owner, :owner) AND begins_with(sk, :handler)",
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": {":owner": {"S": owner}, ":handler": {"S": HANDLER_PREFIX}},
    }
    while True:
        page = await client.scan(**params)
        for item in page.get("Items", []):
            pairs.add((item["pk"]["S"], item["sk"]["S"].removeprefix(HANDLER_PREFIX)))
        if "LastEvaluatedKey" not in page:
            return pairs
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Tally:
    """The receiver's deliveries held against the expected (event id, handler) pairs."""

    events: int
    messages: int
    expected: int
    deliveries: int  # 2xx answers, repeats included
    requests: int  # every request, failures included
    lost: frozenset[Pair]
    repeated: Mapping[Pair, int]  # pair -> deliveries, for pairs delivered more than once
    unexpected: frozenset[Pair]  # delivered but not expected (a handler whose match did not fit)
    seconds: float

    @property
    def repeated_events(self) -> set[str]:
        return {event_id for event_id, _ in self.repeated}

    @property
    def extra_deliveries(self) -> int:
        return sum(count - 1 for count in self.repeated.values())

    def table(self, title: str, extra: Mapping[str, object] | None = None) -> str:
        rows: list[tuple[str, object]] = [
            ("events (unique)", self.events),
            ("messages sent (copies included)", self.messages),
            ("expected (event, handler) pairs", self.expected),
            ("requests to handlers (failures included)", self.requests),
            ("deliveries (2xx)", self.deliveries),
            ("lost pairs", len(self.lost)),
            ("repeated pairs", len(self.repeated)),
            ("extra deliveries", self.extra_deliveries),
            ("unexpected pairs", len(self.unexpected)),
            *(extra or {}).items(),
            ("time (s)", f"{self.seconds:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [title, "-" * len(title)]
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)


def tally(
    stream: EventStream, handlers: Iterable[Webhook], receiver: Receiver, seconds: float
) -> Tally:
    expected = stream.expected(handlers)
    requests = receiver.requests()
    delivered = Counter((r.event_id, r.handler) for r in requests if r.delivered)
    return Tally(
        events=len(stream.events),
        messages=len(stream.bodies),
        expected=len(expected),
        deliveries=sum(delivered.values()),
        requests=len(requests),
        lost=frozenset(expected - set(delivered)),
        repeated={pair: n for pair, n in delivered.items() if n > 1},
        unexpected=frozenset(set(delivered) - expected),
        seconds=seconds,
    )


# --------------------------------------------------------------------------- waiting, reports


async def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    diagnose: Callable[[], str | Coroutine[Any, Any, str]] | None = None,
) -> None:
    """Poll `predicate` (sync or async) until true. The timeout is a safety stop, not a
    speed assertion: set it far above the expected time; `diagnose` (sync or async) adds
    context on failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            detail = ""
            if diagnose is not None:
                said = diagnose()
                detail = "\n" + (await said if asyncio.iscoroutine(said) else str(said))
            raise AssertionError(f"not reached within {timeout:g}s: {what}{detail}")
        await asyncio.sleep(interval)


async def where_missing(
    missing: Iterable[Pair],
    sqs: Any,
    queue: str,
    dlq: str,
    replicas: Mapping[str, AmidProcess],
    sent: int | None = None,
) -> str:
    """Where pairs that never arrived could be, so a failure names its cause at once.

    Messages still on the queue or in flight mean amid is slow or stuck; in the
    dead-letter queue, that it gave up; if every replica says nothing in flight,
    the queue is empty and no log names the event, the message left the queue
    without any replica receiving it (moto losing it, as in issue 25).
    """
    pairs = sorted(missing)
    shown = ", ".join(f"{event}/{handler}" for event, handler in pairs[:10])
    more = f" (and {len(pairs) - 10} more)" if len(pairs) > 10 else ""
    lines = [f"{len(pairs)} pairs missing: {shown}{more}"]
    try:
        counts = f"{await queue_count(sqs, queue)} on the queue (visible + in flight), "
        counts += f"{await queue_count(sqs, dlq)} on the dead-letter queue"
    except Exception as error:  # a diagnosis must not hide the failure it explains
        counts = f"queue counts unavailable: {error!r}"
    lines.append(counts)
    ids = {event for event, _ in pairs}
    named: dict[str, list[str]] = {}
    deleted = 0.0
    for name, replica in replicas.items():
        state = "running" if replica.running else "not running"
        try:
            metrics = await replica.metrics()
            deleted += metrics.value("amid_messages_deleted_total")
            gauges = (
                f"amid_inflight_messages {metrics.value('amid_inflight_messages'):g}, "
                f"amid_messages_deleted_total {metrics.value('amid_messages_deleted_total'):g}"
            )
        except (OSError, AssertionError) as error:
            gauges = f"metrics unavailable: {error!r}"
        lines.append(f"{name} ({state}): {gauges}")
        text = replica.log.read_text(errors="replace") if replica.log.exists() else ""
        named[name] = sorted(event for event in ids if event in text)
    if sent is not None:
        lines.append(f"messages sent {sent}; deleted by the replicas (still answering) {deleted:g}")
    naming = {name: found for name, found in named.items() if found}
    if naming:
        lines += [f"{name}'s log names {', '.join(found)}" for name, found in naming.items()]
    else:
        lines.append(f"no replica's log names any of the {len(ids)} missing event ids")
    return "\n".join(lines)


_REPORTS: list[str] = []


def report(text: str, file: Path | None = None) -> None:
    """Show `text` at the end of the pytest run (terminal summary) and append it to `file`."""
    _REPORTS.append(text)
    print(f"\n{text}")
    if file is not None:
        with file.open("a", encoding="utf-8") as out:
            out.write(text + "\n\n")


def flush_reports(terminalreporter: Any) -> None:
    """For `pytest_terminal_summary`: print the reports gathered so far, once."""
    if not _REPORTS:
        return
    terminalreporter.section("amid reliability figures")
    while _REPORTS:
        terminalreporter.write_line(_REPORTS.pop(0))
        terminalreporter.write_line("")
