"""What the end-to-end tests share: queues on moto, configs, a running daemon, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from amid.config import Config, parse_config
from amid.daemon import Daemon
from amid.pipeline.source import approximate_count
from amid.tools.offline import synthetic_event

HOOK = Path(__file__).parent / "hooks" / "record_hook.py"

queue_count = approximate_count  # visible plus in-flight messages on a queue


async def make_queue(sqs: Any, name: str = "amid", max_receive: int = 3) -> tuple[str, str]:
    """A queue with a dead-letter queue; returns (queue_url, dlq_url)."""
    dlq_url = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
    dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)})
    queue_url = (await sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive}))[
        "QueueUrl"
    ]
    return queue_url, dlq_url


def hook_handler(record: Path, mode: str = "ok", name: str = "hook", extra: str = "") -> str:
    """YAML for a shell handler running tests/hooks/record_hook.py."""
    command = json.dumps([sys.executable, str(HOOK), str(record), mode, "{{ image_id }}"])
    return f"  - name: {name}\n    type: shell\n    command: {command}\n{extra}"


def config_yaml(
    queue_url: str,
    endpoint: str,
    handlers: str,
    *,
    dedupe: str = "backend: memory",
    queue_extra: str = "",
    top_extra: str = "",
) -> str:
    return f"""
queue:
  url: {queue_url}
  region: us-east-1
  endpoint_url: {endpoint}
  wait_time: 1s
  visibility_timeout: 30s
  redelivery: {{initial: 0s, max: 1s}}
{queue_extra}
shutdown_timeout: 5s
dedupe: {{{dedupe}}}
metrics: {{listen: "127.0.0.1:0", queue_depth_interval: 0}}
logging: {{level: debug, format: json}}
defaults:
  timeout: 10s
  retry: {{attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}}
{top_extra}
handlers:
{handlers}
"""


def make_config(*args: Any, **kwargs: Any) -> Config:
    return parse_config(config_yaml(*args, **kwargs), env={})


def event_body(state: str = "available", image_id: str = "ami-0123456789abcdef0", **kw: Any) -> str:
    return json.dumps(synthetic_event(state, image_id, **kw))


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0, interval: float = 0.1
) -> None:
    """Poll until `predicate` holds; fail the test with a clear message after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_daemon(config: Config, config_path: Path | None = None) -> AsyncIterator[Daemon]:
    """The real daemon in this event loop; stopped (drained) on exit."""
    stop, reload = asyncio.Event(), asyncio.Event()
    daemon = Daemon(config, stop=stop, reload=reload, config_path=config_path)
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED, timeout=30)
    if task in done:
        task.result()  # start-up failed: raise it here
    try:
        yield daemon
    finally:
        stop.set()
        started.cancel()
        await asyncio.wait_for(task, timeout=30)
