"""amid's in-process cost per event, and its memory over 100k events, without SQS or HTTP.

    python -m bench.pipeline_bench cost   --events 5000    # µs/event: memory, sqlite, 10 at once
    python -m bench.pipeline_bench growth --events 100000  # RSS after 1k ... 100k events (sqlite)
    python -m bench.pipeline_bench cost --profile out.html # the same under pyinstrument
    python -m bench.pipeline_bench dynamodb --events 1000  # DynamoDB requests per event (moto)
    python -m bench.pipeline_bench history --events 5000   # events/s with the record on / off

Each message goes through the daemon's own `Pipeline.process`: decode, dedupe (claim,
record, complete in the ledger), route, and one handler whose `send` renders the real
webhook request (`WebhookHandler.render`) and posts nothing. 20% of the messages are
duplicate copies, as in the burst. The delivery record (SPEC 3h) is written as the daemon
writes it; `history` measures what that costs (sqlite, 10 at once, rounds of off and on
interleaved, each on a fresh file). Logging is configured as `amid run` configures it (JSON
at info), written to /dev/null. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from amid.config import Config, parse_config
from amid.eventloop import loop_factory
from amid.eventloop import run as run_on
from amid.handlers.base import Handler, Notification
from amid.handlers.webhook import WebhookHandler
from amid.logs import configure_logging
from amid.metrics import Metrics
from amid.pipeline.process import Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.store.base import Ledger
from amid.store.memory import MemoryStore
from amid.store.sqlite import SqliteStore
from bench.common import burst_bodies, proc_sample

CONFIG = """
queue: {url: "http://127.0.0.1:1/000000000000/bench", region: us-east-1}
dedupe: {backend: memory}
handlers:
  - {name: w, type: webhook, url: "http://127.0.0.1:1/hook"}
"""


class RenderOnly:
    """The webhook handler with its send cut short: it renders the request and stops."""

    def __init__(self, inner: WebhookHandler) -> None:
        self._inner = inner
        self.name = inner.name

    def render(self, notification: Notification) -> Any:
        return self._inner.render(notification)

    async def send(self, notification: Notification) -> None:
        self._inner.render(notification)

    async def aclose(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:  # whatever else the Handler protocol grows
        return getattr(self._inner, name)


def runtime(config: Config, metrics: Metrics) -> Runtime:
    webhook_config = config.handlers[0]
    inner = WebhookHandler(webhook_config, cast(Any, None), metrics)  # type: ignore[arg-type]
    handler = cast(Handler, RenderOnly(inner))
    return Runtime(config=config, router=Router(config.handlers), handlers={"w": handler})


async def run_events(
    ledger: Ledger,
    bodies: list[str],
    on_progress: Callable[[int], None] | None = None,
    batch: int = 1,
    history: bool = True,
) -> dict[str, Any]:
    """`bodies` through `Pipeline.process`, `batch` at once (10: one receive's worth);
    `history` writes the delivery record, as the daemon does."""
    config = parse_config(CONFIG, env={})
    metrics = Metrics()
    pipeline = Pipeline(
        ledger=ledger,
        metrics=metrics,
        owner="bench",
        lease=60.0,
        history=history,
    )
    current = runtime(config, metrics)
    outcomes: dict[str, int] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(bodies), batch):
        chunk = bodies[start : start + batch]
        if batch == 1:
            done = [await pipeline.process(chunk[0], current)]
        else:
            done = await asyncio.gather(*(pipeline.process(body, current) for body in chunk))
        for outcome in done:
            outcomes[outcome.label] = outcomes.get(outcome.label, 0) + 1
        if on_progress is not None:
            on_progress(start + len(chunk))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "events": len(bodies),
        "outcomes": outcomes,
        "wall_us_per_event": wall / len(bodies) * 1e6,
        "cpu_us_per_event": cpu / len(bodies) * 1e6,
    }


async def cost(events: int, directory: Path) -> dict[str, Any]:
    bodies = burst_bodies(events, 0.2, seed=3)
    results: dict[str, Any] = {}
    await run_events(MemoryStore(3600.0), bodies[: min(500, events)])  # warm caches
    memory = MemoryStore(7 * 86400.0)
    results["memory"] = await run_events(memory, bodies)
    sqlite = await SqliteStore.open(directory / "cost.sqlite3", 7 * 86400.0)
    try:
        results["sqlite"] = await run_events(sqlite, bodies)
    finally:
        await sqlite.aclose()
    # As the daemon sees them: the 10 messages of a receive in flight together (group commit).
    batched = await SqliteStore.open(directory / "cost-batched.sqlite3", 7 * 86400.0)
    try:
        results["sqlite_batched"] = await run_events(batched, bodies, batch=10)
    finally:
        await batched.aclose()
    return results


async def history(events: int, directory: Path, rounds: int = 11) -> dict[str, Any]:
    """events/s of the sqlite pipeline (10 at once, as the daemon) with the delivery record
    off and on, in interleaved rounds (the order alternates, each run on a fresh file): each
    round's on/off ratio compares two runs a moment apart, so the drift of a shared machine
    falls on both; the median of those ratios is the record's cost, in events per wall
    second and per CPU second (the steadier one on a shared machine)."""
    bodies = burst_bodies(events, 0.2, seed=7)
    await run_events(MemoryStore(3600.0), bodies[: min(500, events)])  # warm caches
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for round_ in range(rounds):
        for kind in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            path = directory / f"history-{round_}-{kind}.sqlite3"
            store = await SqliteStore.open(path, 7 * 86400.0)
            try:
                runs[kind].append(await run_events(store, bodies, batch=10, history=kind == "on"))
            finally:
                await store.aclose()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    def rates(kind: str, key: str) -> list[float]:
        return [1e6 / run[key] for run in runs[kind]]

    result: dict[str, Any] = {"events": events, "rounds": rounds}
    for measure, key in (("wall", "wall_us_per_event"), ("cpu", "cpu_us_per_event")):
        off, on = rates("off", key), rates("on", key)
        result[f"{measure}_events_per_s_off"] = median(off)
        result[f"{measure}_events_per_s_on"] = median(on)
        result[f"{measure}_on_over_off"] = median([b / a for a, b in zip(off, on, strict=True)])
    return result


async def growth(events: int, directory: Path) -> dict[str, Any]:
    marks = sorted({m for m in (1_000, 10_000, 25_000, 50_000, 75_000, events) if m <= events})
    rss: dict[str, float] = {}

    def on_progress(done: int) -> None:
        if done in marks:
            rss[str(done)] = proc_sample(os.getpid()).rss / 2**20

    sqlite = await SqliteStore.open(directory / "growth.sqlite3", 7 * 86400.0)
    try:
        result = await run_events(sqlite, burst_bodies(events, 0.2, seed=5), on_progress)
    finally:
        await sqlite.aclose()
    return {**result, "rss_mib": rss}


async def dynamodb(events: int, directory: Path) -> dict[str, Any]:
    """The DynamoDB ledger's requests per event, one at a time and 10 at once, on moto.

    Counted twice: per operation by the client (botocore's before-send, so retries count)
    and in total by moto's own request log; the two must agree.
    """
    from aiobotocore.session import get_session

    from amid.store.dynamodb import DynamoStore, create_table
    from bench.common import AWS_ENV, REGION
    from tests.moto_server import MotoServer

    os.environ.update(AWS_ENV)
    server = MotoServer(log=directory / "moto.log")
    server.start()
    results: dict[str, Any] = {}
    try:
        async with get_session().create_client(
            "dynamodb", region_name=REGION, endpoint_url=server.url
        ) as client:
            await create_table(client, "bench")
            sent: dict[str, int] = {}

            def count(event_name: str, **_: Any) -> None:
                operation = event_name.rsplit(".", 1)[-1]
                sent[operation] = sent.get(operation, 0) + 1

            client.meta.events.register("before-send.dynamodb", count)
            for batch in (1, 10):
                sent.clear()
                logged = _moto_requests(server.log)
                bodies = burst_bodies(events, 0.2, seed=11 + batch)
                ledger = DynamoStore(client, "bench", 7 * 86400.0)
                result = await run_events(ledger, bodies, batch=batch)
                total = sum(sent.values())
                await asyncio.sleep(1.0)  # moto's log is written after each response
                results[f"batch_{batch}"] = {
                    **result,
                    "requests": dict(sent),
                    "requests_per_message": total / events,
                    "moto_logged_per_message": (_moto_requests(server.log) - logged) / events,
                }
    finally:
        server.stop()
    return results


def _moto_requests(log: Path) -> int:
    """Requests moto's server has logged (one werkzeug line per request)."""
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '"POST / ' in line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["cost", "growth", "dynamodb", "history"])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--profile", type=Path, help="write a pyinstrument HTML profile here")
    args = parser.parse_args()
    with open("/dev/null", "w") as sink, contextlib.redirect_stdout(sink):
        configure_logging("info", "json")
        with tempfile.TemporaryDirectory() as tmp:
            job = {"cost": cost, "growth": growth, "dynamodb": dynamodb, "history": history}[
                args.mode
            ]
            if args.profile is None:  # on amid's own loop, as `amid run` is
                result = run_on(job(args.events, Path(tmp)), loop_factory())
            else:
                from pyinstrument import Profiler

                with Profiler(async_mode="enabled") as profiler:
                    result = asyncio.run(job(args.events, Path(tmp)))
                args.profile.write_text(profiler.output_html())
                result["profile_text"] = profiler.output_text(unicode=False, show_all=False)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
