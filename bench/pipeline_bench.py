"""amid's in-process cost per event, and its memory over 100k events, without SQS or HTTP.

    python -m bench.pipeline_bench cost   --events 5000    # µs per event: memory, sqlite, 10 at once
    python -m bench.pipeline_bench growth --events 100000  # RSS after 1k ... 100k events (sqlite)
    python -m bench.pipeline_bench cost --profile out.html # the same under pyinstrument

Each message goes through the daemon's own `Pipeline.process`: decode, dedupe (claim,
record, complete in the ledger), route, and one handler whose `send` renders the real
webhook request (`WebhookHandler.render`) and posts nothing. 20% of the messages are
duplicate copies, as in the burst. Logging is configured as `amid run` configures it (JSON
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
from amid.handlers.base import Handler, Notification
from amid.handlers.webhook import WebhookHandler
from amid.logs import configure_logging
from amid.metrics import Metrics
from amid.pipeline.process import Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.store.base import Ledger
from amid.store.memory import MemoryLedger
from amid.store.sqlite import SqliteLedger
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
) -> dict[str, Any]:
    """`bodies` through `Pipeline.process`, `batch` at once (10: one receive's worth)."""
    config = parse_config(CONFIG, env={})
    metrics = Metrics()
    pipeline = Pipeline(ledger=ledger, metrics=metrics, owner="bench", lease=60.0)
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
    await run_events(MemoryLedger(3600.0), bodies[: min(500, events)])  # warm caches
    memory = MemoryLedger(7 * 86400.0)
    results["memory"] = await run_events(memory, bodies)
    sqlite = await SqliteLedger.open(directory / "cost.sqlite3", 7 * 86400.0)
    try:
        results["sqlite"] = await run_events(sqlite, bodies)
    finally:
        await sqlite.aclose()
    # As the daemon sees them: the 10 messages of a receive in flight together (group commit).
    batched = await SqliteLedger.open(directory / "cost-batched.sqlite3", 7 * 86400.0)
    try:
        results["sqlite_batched"] = await run_events(batched, bodies, batch=10)
    finally:
        await batched.aclose()
    return results


async def growth(events: int, directory: Path) -> dict[str, Any]:
    marks = sorted({m for m in (1_000, 10_000, 25_000, 50_000, 75_000, events) if m <= events})
    rss: dict[str, float] = {}

    def on_progress(done: int) -> None:
        if done in marks:
            rss[str(done)] = proc_sample(os.getpid()).rss / 2**20

    sqlite = await SqliteLedger.open(directory / "growth.sqlite3", 7 * 86400.0)
    try:
        result = await run_events(sqlite, burst_bodies(events, 0.2, seed=5), on_progress)
    finally:
        await sqlite.aclose()
    return {**result, "rss_mib": rss}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["cost", "growth"])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--profile", type=Path, help="write a pyinstrument HTML profile here")
    args = parser.parse_args()
    with open("/dev/null", "w") as sink, contextlib.redirect_stdout(sink):
        configure_logging("info", "json")
        with tempfile.TemporaryDirectory() as tmp:
            job = cost if args.mode == "cost" else growth
            if args.profile is None:
                result = asyncio.run(job(args.events, Path(tmp)))
            else:
                from pyinstrument import Profiler

                with Profiler(async_mode="enabled") as profiler:
                    result = asyncio.run(job(args.events, Path(tmp)))
                args.profile.write_text(profiler.output_html())
                result["profile_text"] = profiler.output_text(unicode=False, show_all=False)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
