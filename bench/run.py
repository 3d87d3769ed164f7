"""The bench's scenarios: burst throughput, trickle latency, idle CPU, memory, in-process cost.

Every process has its own role and pid: the SQS emulator, the producer, the receiver (the
webhook stand-in) and the consumer under test (the limit, amid or the peer). They share the
machine's cores; each one's CPU seconds come from /proc, so the report can say who used what.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.common import (
    PEER,
    PYTHON,
    RESULTS,
    ROOT,
    Spread,
    aws_environ,
    percentile,
    proc_sample,
    queue_depth,
    sqs_client,
    tree_cpu,
)
from tests.moto_server import MotoServer, free_port

AMID = ROOT / ".venv" / "bin" / "amid"
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
KINDS = ("limit", "limit_post", "amid", "peer")
LABELS = {"limit": "limit", "limit_post": "limit+POST", "amid": "amid", "peer": "peer"}
DEFAULT_VARIANTS = ("amid", "amid+features", "amid-no-history", "amid+silence", "amid+slack-app")
# limit+POST's latency is Python's floor for amid's path: what amid itself adds shows.
TRICKLE_KINDS = ("limit_post", "amid", "peer")
POLLERS = 2  # amid's default, given to the limit and the peer too
MAX_IN_FLIGHT = 64  # amid's default


@dataclass(frozen=True, slots=True)
class Plan:
    repeats: int
    burst: int
    duplicates: float
    max_depth: int
    trickle_rate: float
    trickle_seconds: float
    idle_seconds: float
    cost_events: int
    growth_events: int
    profile_seconds: float
    server: str
    variants: tuple[str, ...] = DEFAULT_VARIANTS  # the amids the burst runs (VARIANTS)
    # More bursts of amid and amid-no-history, side by side, for the record's budget alone:
    # a ~5 % cost is within the spread of 3 bursts (docs/benchmarks.md, issue 23).
    record_pairs: int = 0

    @classmethod
    def full(cls, server: str) -> Plan:
        return cls(
            3, 10_000, 0.2, 500, 20.0, 30.0, 60.0, 5_000, 100_000, 20.0, server, record_pairs=6
        )

    @classmethod
    def quick(cls, server: str) -> Plan:
        return cls(1, 2_000, 0.2, 500, 20.0, 10.0, 10.0, 1_000, 10_000, 0.0, server)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------- processes


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line; raises if it does not come within `timeout`."""
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), True)
    deadline = time.monotonic() + timeout
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                return process.stdout.readline().strip()
            if process.poll() is not None:
                break
    raise RuntimeError(f"{process.args!r} did not print a line within {timeout}s")


def stop(process: subprocess.Popen[Any], timeout: float = 30.0) -> str:
    """SIGTERM, wait (bounded), SIGKILL if need be; returns what it still printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out if isinstance(out, str) else ""


@contextlib.contextmanager
def emulator(kind: str) -> Iterator[tuple[str, int]]:
    """(endpoint, pid) of a fresh SQS-compatible server on 127.0.0.1."""
    if kind == "moto":
        server = MotoServer()
        server.start()
        assert server.process is not None
        try:
            yield server.url, server.process.pid
        finally:
            server.stop()
        return
    port = free_port()
    process = subprocess.Popen(
        ["node", str(PEER / "emulator.mjs"), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        if read_line(process, 30) != "ready":
            raise RuntimeError("fauxqs did not start")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)


@contextlib.contextmanager
def receiver() -> Iterator[tuple[str, int]]:
    """(base URL, pid) of the webhook stand-in."""
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "bench.receiver", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        if read_line(process, 30) != "ready":
            raise RuntimeError("the receiver did not start")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)


# ---------------------------------------------------------------------------- amid variants


class Replace(list[Any]):
    """A list in a variant's fragment that replaces the base's instead of extending it."""


# Every amid the burst runs is the base config below plus one fragment (mappings merged,
# lists appended, a Replace list put instead; "{hook}" in a string is the receiver's base
# URL). "amid" is the plain one, the figure the targets are about; a variant runs as its own
# kind (`burst:<name>`) when `python -m bench --variants` names it, and the report shows its
# cost against "amid".
VARIANTS: dict[str, dict[str, Any]] = {
    "amid": {},
    # The burst with one digest handler and one expectation configured (SPEC 3b/3c): the
    # report adds its events/s, its ratio to amid and its extra CPU per 1,000 events. The
    # digest handler matches no event of the burst (the producer sends no `pending` state),
    # so what it costs is being configured: routing, and whatever the digest stage does per
    # event; the expectation matches the burst's `available` events (a quarter of them), so
    # its per-event bookkeeping is in the figure. A digest that matched the burst would
    # measure its `wait` (events are held until their group is sent), not its cost.
    "amid+features": {
        "handlers": [
            {
                "name": "d",
                "type": "webhook",
                "url": "{hook}/hook",
                "match": {"detail": {"State": ["pending"]}},
                "digest": {"wait": "1s", "max_events": 50},
            }
        ],
        "expectations": [
            {
                "name": "bench-nightly",
                "match": {"detail": {"State": ["available"]}},
                "every": "24h",
                "notify": ["w"],
            }
        ],
    },
}

# The new features' budgets (issue 24). A silence configured but matching no event of the
# burst (no event comes from that account), active throughout (a one-hour window starting
# every minute): its cost is the silence stage's per-event check, nothing held.
VARIANTS["amid+silence"] = {
    "silences": [
        {
            "name": "bench-quiet",
            "match": {"account": ["999999999999"]},
            "schedule": "* * * * *",
            "duration": "1h",
        }
    ]
}
# Slack's app mode instead of the webhook (not beside it): the same one delivery per event
# to the same receiver (bench/receiver.py answers the Web API under /slack/api/), so the
# ratio to amid is what app mode costs over a webhook, without a second request per event
# loading the receiver on the shared cores. Every event of the burst has its own image, so
# each starts its conversation: a read, a claim and a start in the ledger's store, and one
# chat.postMessage. `rate_limit` is lifted so Slack's pacing (1/s) does not set the pace.
VARIANTS["amid+slack-app"] = {
    "handlers": Replace(
        [
            {
                "name": "s",
                "type": "slack",
                "token": "xoxb-bench-0000",
                "channel": "C0BENCH0000",
                "api_url": "{hook}/slack/api/",
                "rate_limit": 1_000_000,
            }
        ]
    )
}

# Variants that are plain amid in another environment: the stock asyncio loop instead of
# uvloop, the standard library's json instead of orjson, or both (issue 24's measurements:
# each library alone and together, in one run). The limits run on amid's loop choice too.
VARIANT_ENV: dict[str, dict[str, str]] = {
    "amid-asyncio": {"AMID_EVENT_LOOP": "asyncio"},
    "amid-json": {"AMID_JSON": "json"},
    "amid-asyncio-json": {"AMID_EVENT_LOOP": "asyncio", "AMID_JSON": "json"},
    # The delivery record off (amid.daemon.HISTORY_ENV): amid / this is the record's budget,
    # at least 0.9 (issue 24); plain amid always keeps the record.
    "amid-no-history": {"AMID_HISTORY": "off"},
}
VARIANTS.update({name: {} for name in VARIANT_ENV})


def merge(base: Any, fragment: Any, hook: str) -> Any:
    """`fragment` over `base`: mappings merged, lists appended (a Replace list replaces),
    "{hook}" filled in."""
    if isinstance(fragment, str):
        return fragment.replace("{hook}", hook)
    if isinstance(fragment, Replace):
        return [merge(None, i, hook) for i in fragment]
    if isinstance(fragment, list):
        return [
            *(base if isinstance(base, list) else []),
            *(merge(None, i, hook) for i in fragment),
        ]
    if isinstance(fragment, dict):
        merged = dict(base) if isinstance(base, dict) else {}
        for key, value in fragment.items():
            merged[key] = merge(merged.get(key), value, hook)
        return merged
    return fragment


def amid_config(
    work: Path,
    queue_url: str,
    endpoint: str,
    hook: str,
    metrics_port: int,
    name: str,
    variant: str = "amid",
) -> Path:
    """amid's defaults except what the bench must set (where things are), plus the variant."""
    base: dict[str, Any] = {
        "queue": {"url": queue_url, "region": "us-east-1", "endpoint_url": endpoint},
        "dedupe": {"backend": "sqlite", "path": str(work / f"{name}.sqlite3")},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "logging": {"level": "info", "format": "json"},
        "handlers": [{"name": "w", "type": "webhook", "url": f"{hook}/hook"}],
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(merge(base, VARIANTS[variant], hook), sort_keys=False))
    return path


@dataclass
class Consumer:
    kind: str
    process: subprocess.Popen[str]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return tree_cpu(self.pid)


def start_consumer(kind: str, queue_url: str, endpoint: str, hook: str, work: Path) -> Consumer:
    env = aws_environ()
    if kind in ("limit", "limit_post"):
        command = [PYTHON, "-m", "bench.limit", "--endpoint", endpoint, "--queue-url", queue_url]
        command += ["--pollers", str(POLLERS), "--in-flight", str(MAX_IN_FLIGHT)]
        if kind == "limit_post":
            command += ["--post", f"{hook}/hook"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        if read_line(process, 30) != "ready":
            raise RuntimeError("the limit did not start")
        return Consumer(kind, process)
    if kind == "peer":
        command = ["node", str(PEER / "consumer.mjs"), "--endpoint", endpoint]
        command += ["--queue-url", queue_url, "--hook", f"{hook}/hook"]
        command += ["--consumers", str(POLLERS)]
        with (work / "peer.log").open("a") as errors:  # the SDK's warnings, abort noise
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env
            )
        if read_line(process, 30) != "ready":
            raise RuntimeError("the peer did not start")
        return Consumer(kind, process)
    port = free_port()
    name = f"amid-{int(time.time() * 1000)}"
    config = amid_config(work, queue_url, endpoint, hook, port, name, variant=kind)
    log_path = work / f"{name}.log"
    with log_path.open("w") as output:
        process = subprocess.Popen(
            [str(AMID), "run", "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, **VARIANT_ENV.get(kind, {})},
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"amid exited with {process.returncode}; see {log_path}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            time.sleep(0.5)  # the pollers' first long polls are under way
            return Consumer(kind, process, log_path)
        time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"amid did not become healthy; see {log_path}")


# ---------------------------------------------------------------------------- the bench


@dataclass
class Bench:
    plan: Plan
    endpoint: str
    server_pid: int
    hook: str
    receiver_pid: int
    work: Path
    http: aiohttp.ClientSession
    sqs: Any
    queues: int = 0
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def new_queue(self, label: str) -> str:
        self.queues += 1
        name = f"{label}-{self.queues}-{int(time.time())}"
        response = await self.sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": "60"}
        )
        url: str = response["QueueUrl"]
        return url

    async def receiver_stats(self) -> dict[str, int]:
        async with self.http.get(f"{self.hook}/stats") as response:
            stats: dict[str, int] = await response.json()
            return stats

    async def receiver_reset(self) -> None:
        async with self.http.post(f"{self.hook}/reset") as response:
            await response.read()

    async def latencies(self) -> list[float]:
        async with self.http.get(f"{self.hook}/latencies") as response:
            values: list[float] = await response.json()
            return values

    def record(self, scenario: str, result: dict[str, Any]) -> None:
        self.runs.setdefault(scenario, []).append(result)
        log(f"{scenario}: {json.dumps(result, default=str)[:400]}")

    def producer(self, *args: str) -> subprocess.Popen[str]:
        command = [PYTHON, "-m", "bench.producer", *args, "--endpoint", self.endpoint]
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=aws_environ(), cwd=ROOT
        )

    # -- burst ----------------------------------------------------------------------------

    async def burst(
        self,
        kind: str,
        *,
        idle: bool = False,
        profile: Path | None = None,
        scenario: str = "burst",
    ) -> None:
        """One burst of `kind`, recorded as `scenario:kind`."""
        plan = self.plan
        url = await self.new_queue(f"burst-{kind}")
        consumer = start_consumer(kind, url, self.endpoint, self.hook, self.work)
        try:
            await self.receiver_reset()
            rss_start = proc_sample(consumer.pid).rss
            before = self.cpu(consumer)
            spy = self.spy(consumer.pid, profile) if profile is not None else None
            producer = self.producer(
                "burst",
                "--queue-url",
                url,
                "--count",
                str(plan.burst),
                "--duplicates",
                str(plan.duplicates),
                "--max-depth",
                str(plan.max_depth),
            )
            rss_1k, max_depth = await self.drain(producer, url, consumer, plan.burst * 0.05 + 120)
            finished = time.time()
            after = self.cpu(consumer)
            sample = proc_sample(consumer.pid)
            summary = json.loads(producer.communicate(timeout=30)[0].strip().splitlines()[-1])
            stats = await self.receiver_stats()
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(timeout=60)
                stop(spy)
            elapsed = finished - summary["started"]
            cpu = {role: after[role] - before[role] for role in before}
            result: dict[str, Any] = {
                "messages": summary["sent"],
                "seconds": elapsed,
                "events_per_s": summary["sent"] / elapsed,
                "producer_seconds": summary["finished"] - summary["started"],
                "max_depth_seen": max_depth,
                "posts": stats["posts"],
                "unique_posted": stats["unique"],
                "cpu_s": {**cpu, "producer": summary["cpu"]},
                "consumer_cpu_s_per_1k": cpu["consumer"] / summary["sent"] * 1000,
                # Every consumer's, so amid's footprint has the peer's beside it (issue 24).
                "rss_start_mib": rss_start / 2**20,
            }
            if kind in VARIANTS:
                result["rss_mib"] = {
                    "start": rss_start / 2**20,
                    "after_1k": rss_1k / 2**20 if rss_1k else None,
                    "after_burst": sample.rss / 2**20,
                    "peak": sample.peak_rss / 2**20,
                }
            if profile is None:
                self.record(f"{scenario}:{kind}", result)
            else:
                self.record("profile", {"events_per_s_under_py_spy": result["events_per_s"]})
            if idle:
                await self.idle(consumer)
        finally:
            output = stop(consumer.process)
            if kind == "peer" and output.strip():
                log(f"peer: {output.strip().splitlines()[-1]}")

    def spy(self, pid: int, profile: Path) -> subprocess.Popen[str]:
        """py-spy recording `pid` until SIGINT; it sometimes fails to attach, so try again."""
        command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
        command += ["--format", "raw", "--output", str(profile), "--duration", "600"]
        for _ in range(10):
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
            )
            time.sleep(1.0)
            if process.poll() is None:
                return process
        raise RuntimeError("py-spy could not attach to amid")

    def cpu(self, consumer: Consumer) -> dict[str, float]:
        return {
            "consumer": consumer.cpu(),
            "server": proc_sample(self.server_pid).cpu,
            "receiver": proc_sample(self.receiver_pid).cpu,
        }

    async def drain(
        self, producer: subprocess.Popen[str], url: str, consumer: Consumer, timeout: float
    ) -> tuple[int | None, int]:
        """Wait until the producer is done and the queue is empty; (RSS at 1k posts, depth)."""
        deadline = time.monotonic() + timeout
        rss_1k: int | None = None
        deepest = 0
        while time.monotonic() < deadline:
            depth = await queue_depth(self.sqs, url)
            deepest = max(deepest, depth)
            if producer.poll() is not None and depth == 0:
                if producer.returncode != 0:
                    raise RuntimeError(f"the producer failed with {producer.returncode}")
                return rss_1k, deepest
            if consumer.kind in VARIANTS and rss_1k is None:
                if (await self.receiver_stats())["posts"] >= 1000:
                    rss_1k = proc_sample(consumer.pid).rss
            if consumer.process.poll() is not None:
                raise RuntimeError(f"{consumer.kind} exited with {consumer.process.returncode}")
            await asyncio.sleep(0.05)
        producer.kill()
        raise RuntimeError(f"{consumer.kind}: the queue did not drain within {timeout:.0f}s")

    # -- idle -----------------------------------------------------------------------------

    async def idle(self, consumer: Consumer) -> None:
        await asyncio.sleep(5)  # let the last deletes and heartbeats settle
        before, server_before = consumer.cpu(), proc_sample(self.server_pid).cpu
        started = time.monotonic()
        await asyncio.sleep(self.plan.idle_seconds)
        seconds = time.monotonic() - started
        used, server = consumer.cpu() - before, proc_sample(self.server_pid).cpu - server_before
        self.record(
            "idle:amid",
            {
                "seconds": seconds,
                "cpu_s": used,
                "core_percent": used / seconds * 100,
                "server_core_percent": server / seconds * 100,
                "rss_mib": proc_sample(consumer.pid).rss / 2**20,
            },
        )

    # -- trickle --------------------------------------------------------------------------

    async def trickle(self, kind: str) -> None:
        plan = self.plan
        url = await self.new_queue(f"trickle-{kind}")
        consumer = start_consumer(kind, url, self.endpoint, self.hook, self.work)
        try:
            # Warm-up (first connections, first sqlite statements), not measured.
            warmup = self.producer("trickle", "--queue-url", url, "--rate", "20", "--seconds", "1")
            warmup.communicate(timeout=60)
            await self.wait_posts(20, time.monotonic() + 30)
            await self.receiver_reset()
            before = self.cpu(consumer)
            producer = self.producer(
                "trickle",
                "--queue-url",
                url,
                "--rate",
                str(plan.trickle_rate),
                "--seconds",
                str(plan.trickle_seconds),
            )
            expected = round(plan.trickle_rate * plan.trickle_seconds)
            producer.communicate(timeout=plan.trickle_seconds + 60)
            await self.wait_posts(expected, time.monotonic() + 30)
            after = self.cpu(consumer)
            values = sorted(await self.latencies())
            self.record(
                f"trickle:{kind}",
                {
                    "sent": expected,
                    "received": len(values),
                    "p50_ms": percentile(values, 0.50) * 1000,
                    "p90_ms": percentile(values, 0.90) * 1000,
                    "p99_ms": percentile(values, 0.99) * 1000,
                    "max_ms": (values[-1] if values else float("nan")) * 1000,
                    "cpu_s": {role: after[role] - before[role] for role in before},
                },
            )
        finally:
            stop(consumer.process)

    async def wait_posts(self, count: int, deadline: float) -> None:
        while time.monotonic() < deadline and (await self.receiver_stats())["posts"] < count:
            await asyncio.sleep(0.1)

    # -- in process -----------------------------------------------------------------------

    def in_process(self) -> None:
        plan = self.plan
        # A count of requests per message, so a few hundred messages tell it. Since the
        # delivery record rides on the ledger's writes, moto's DynamoDB slows and grows with
        # the table (100 messages: 36 ms each; 300: 58 ms and 1.6 GB; 1,000 went past 12 GB
        # and 8 minutes, unfinished): 200 keeps the run short and the machine whole.
        dynamodb_events = min(plan.cost_events, 200)
        for mode, events in (
            ("cost", plan.cost_events),
            ("growth", plan.growth_events),
            ("dynamodb", dynamodb_events),
            ("history", min(plan.cost_events, 2000)),  # the record's cost: rounds on / off
        ):
            for _ in range(self.plan.repeats if mode == "cost" else 1):
                command = [PYTHON, "-m", "bench.pipeline_bench", mode, "--events", str(events)]
                done = subprocess.run(
                    command, capture_output=True, text=True, cwd=ROOT, timeout=900, check=True
                )
                self.record(f"pipeline:{mode}", json.loads(done.stdout.strip().splitlines()[-1]))


@contextlib.asynccontextmanager
async def bench(plan: Plan, work: Path) -> AsyncIterator[Bench]:
    with emulator(plan.server) as (endpoint, server_pid), receiver() as (hook, receiver_pid):
        async with aiohttp.ClientSession() as http, sqs_client(endpoint) as sqs:
            yield Bench(plan, endpoint, server_pid, hook, receiver_pid, work, http, sqs)


async def run(plan: Plan, started: str) -> dict[str, Any]:
    work = RESULTS / f"work-{started}"
    work.mkdir(parents=True, exist_ok=True)
    kinds = kinds_of(plan)
    async with bench(plan, work) as b:
        for repeat in range(plan.repeats):
            shift = repeat % len(kinds)
            order = kinds[shift:] + kinds[:shift]  # spread slow drift over kinds
            for kind in order:
                log(f"burst {repeat + 1}/{plan.repeats}: {kind}")
                await b.burst(kind, idle=kind == "amid")
        if "amid-no-history" in kinds:
            for pair in range(plan.record_pairs):
                log(f"the record's budget {pair + 1}/{plan.record_pairs}")
                pair_kinds = ("amid", "amid-no-history")
                for kind in pair_kinds if pair % 2 == 0 else pair_kinds[::-1]:
                    await b.burst(kind, scenario="record")
        for repeat in range(plan.repeats):
            shift = repeat % len(TRICKLE_KINDS)
            for kind in TRICKLE_KINDS[shift:] + TRICKLE_KINDS[:shift]:
                log(f"trickle {repeat + 1}/{plan.repeats}: {kind}")
                await b.trickle(kind)
        if plan.profile_seconds > 0:
            log("profile: amid under a burst, py-spy attached")
            await b.burst("amid", profile=RESULTS / f"amid-{started}.pyspy.txt")
        log("in-process pipeline: cost per event and RSS growth")
        b.in_process()
        runs = b.runs
    shutil.rmtree(work, ignore_errors=True)
    return {"plan": dataclasses.asdict(plan), "runs": runs, "summary": summarize(runs, kinds)}


def kinds_of(plan: Plan) -> tuple[str, ...]:
    """The consumers the burst runs, in order: the limits, the amid variants, the peer."""
    return ("limit", "limit_post", *plan.variants, "peer")


def summarize(
    runs: dict[str, list[dict[str, Any]]], kinds: tuple[str, ...] = KINDS
) -> dict[str, Any]:
    """Median, min and max of every figure the report shows."""

    def spread(scenario: str, *path: str) -> dict[str, float]:
        values = []
        for run_result in runs.get(scenario, []):
            value: Any = run_result
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float):
                values.append(float(value))
        return Spread.of(values).as_dict()

    def paired(over: str, kind: str, scenarios: tuple[str, ...]) -> list[tuple[Any, Any]]:
        """(over's burst, kind's burst) of the same repeat, in each scenario."""
        return [
            pair
            for scenario in scenarios
            for pair in zip(
                runs.get(f"{scenario}:{over}", []), runs.get(f"{scenario}:{kind}", []), strict=False
            )
        ]

    def ratio(
        over: str, kind: str = "amid", scenarios: tuple[str, ...] = ("burst",)
    ) -> dict[str, float]:
        """kind's events/s over `over`'s, burst by burst (the same repeat), median of those."""
        pairs = paired(over, kind, scenarios)
        return Spread.of([a["events_per_s"] / b["events_per_s"] for b, a in pairs]).as_dict()

    summary: dict[str, Any] = {"kinds": list(kinds)}
    for kind in kinds:
        summary[f"{kind}_events_per_s"] = spread(f"burst:{kind}", "events_per_s")
        summary[f"{kind}_cpu_s_per_1k"] = spread(f"burst:{kind}", "consumer_cpu_s_per_1k")
        summary[f"{kind}_server_cpu_s"] = spread(f"burst:{kind}", "cpu_s", "server")
        summary[f"{kind}_receiver_cpu_s"] = spread(f"burst:{kind}", "cpu_s", "receiver")
        summary[f"{kind}_producer_cpu_s"] = spread(f"burst:{kind}", "cpu_s", "producer")
        summary[f"{kind}_seconds"] = spread(f"burst:{kind}", "seconds")
        summary[f"{kind}_rss_start_mib"] = spread(f"burst:{kind}", "rss_start_mib")
    for kind in TRICKLE_KINDS:
        for figure in ("p50_ms", "p99_ms"):
            summary[f"{kind}_{figure}"] = spread(f"trickle:{kind}", figure)
    summary["amid_over_limit"] = ratio("limit")
    summary["amid_over_limit_post"] = ratio("limit_post")
    summary["amid_over_peer"] = ratio("peer")
    summary["limit_post_over_limit"] = ratio("limit", "limit_post")
    for variant in (k for k in kinds if k in VARIANTS and k != "amid"):
        summary[f"{variant}_over_amid"] = ratio("amid", variant)
    if "amid-no-history" in kinds:  # the record's budget: amid (on) / amid-no-history (off)
        both = ("burst", "record")  # the rotated repeats and the extra pairs
        summary["amid_over_amid-no-history"] = ratio("amid-no-history", scenarios=both)
        summary["record_pairs"] = len(paired("amid-no-history", "amid", both))
        for kind in ("amid", "amid-no-history"):
            cpu = [r["consumer_cpu_s_per_1k"] for s in both for r in runs.get(f"{s}:{kind}", [])]
            summary[f"record_{kind}_cpu_s_per_1k"] = Spread.of(cpu).as_dict()
    for figure in ("start", "after_1k", "after_burst", "peak"):
        summary[f"amid_rss_{figure}_mib"] = spread("burst:amid", "rss_mib", figure)
    summary["amid_idle_core_percent"] = spread("idle:amid", "core_percent")
    for ledger in ("memory", "sqlite", "sqlite_batched"):
        for unit in ("wall_us_per_event", "cpu_us_per_event"):
            summary[f"pipeline_{ledger}_{unit}"] = spread("pipeline:cost", ledger, unit)
    growth = runs.get("pipeline:growth", [{}])[0]
    summary["pipeline_growth_rss_mib"] = growth.get("rss_mib", {})
    summary["dynamodb_requests"] = runs.get("pipeline:dynamodb", [{}])[0]
    summary["pipeline_history"] = runs.get("pipeline:history", [{}])[0]
    return summary


def environment() -> dict[str, str]:
    """The machine the figures come from."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "unknown",
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def version(*command: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            return done.stdout.strip()
        return "unknown"

    peer_lock = json.loads((PEER / "package-lock.json").read_text())["packages"]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory_gib": f"{memory_kb / 2**20:.1f}",
        "python": sys.version.split()[0],
        "node": version("node", "--version"),
        "kernel": os.uname().release,
        "sqs_consumer": peer_lock["node_modules/sqs-consumer"]["version"],
        "client_sqs": peer_lock["node_modules/@aws-sdk/client-sqs"]["version"],
        "fauxqs": peer_lock["node_modules/fauxqs"]["version"],
        "amid": version(str(AMID), "--version").removeprefix("amid "),
    }
