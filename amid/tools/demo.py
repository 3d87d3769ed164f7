"""`amid demo`: the whole pipeline on this machine, no AWS account needed.

An embedded moto server on 127.0.0.1 plays SQS, with amid.tools.localsqs's one
fix (DeleteMessage under the queue's lock, so no message is lost). The demo
creates a queue with a dead-letter queue, sends real-shaped events for all
four states plus a duplicate and an invalid message, and a burst of
deregistrations as a cleanup job makes them; runs the real daemon with two
console handlers (one per event, and a digest that collapses the burst into
one message) and prints what became of each message and the final metric
values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from amid.config import parse_config
from amid.logs import configure_logging
from amid.pipeline.source import approximate_count
from amid.tools.offline import synthetic_event

_REGION = "us-east-1"
_BURST = 6  # deregistrations of a cleanup job, besides the demo's own
_EXPECTATION = "demo-nightly"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _demo_events() -> list[tuple[str, str]]:
    """(label, body) pairs: four states, one duplicate copy, one invalid message."""
    available = synthetic_event("available", "ami-0a1b2c3d4e5f60001", _REGION)
    failed = synthetic_event(
        "failed",
        "ami-0a1b2c3d4e5f60002",
        _REGION,
        error_message="Client.InternalError: snapshot creation failed",
    )
    deregistered = synthetic_event("deregistered", "ami-0a1b2c3d4e5f60003", _REGION)
    disabled = synthetic_event("disabled", "ami-0a1b2c3d4e5f60004", _REGION)
    burst = [
        (
            f"burst: deregistered {number + 1} of {_BURST} (a cleanup job)",
            json.dumps(synthetic_event("deregistered", f"ami-0c1ea0000000{number:05d}", _REGION)),
        )
        for number in range(_BURST)
    ]
    return [
        ("available", json.dumps(available)),
        ("failed", json.dumps(failed)),
        ("deregistered", json.dumps(deregistered)),
        ("disabled", json.dumps(disabled)),
        ("duplicate of the 'available' event (same id)", json.dumps(available)),
        ("invalid (not JSON)", "this is not an EventBridge event"),
        *burst,
    ]


async def run_demo(forever: bool = False) -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("amid demo needs moto's server: pip install 'amid[demo]'")
        return 2
    from amid.tools.localsqs import MotoPatchError, describe, patch_moto

    try:
        patch_moto()  # moto's DeleteMessage can lose a concurrent send (issue 25)
    except MotoPatchError as error:
        print(f"amid demo: {error}")
        return 2
    from aiobotocore.session import get_session

    from amid.daemon import Daemon

    for key, value in {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": _REGION,
    }.items():
        os.environ.setdefault(key, value)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    print(f"▶ local SQS-compatible server ({describe()}) on {endpoint}")
    try:
        async with get_session().create_client(
            "sqs", region_name=_REGION, endpoint_url=endpoint
        ) as sqs:
            dlq = await sqs.create_queue(QueueName="amid-demo-dlq")
            dlq_arn = (
                await sqs.get_queue_attributes(
                    QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"]
                )
            )["Attributes"]["QueueArn"]
            queue = await sqs.create_queue(
                QueueName="amid-demo",
                Attributes={
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}
                    )
                },
            )
            print("▶ queue amid-demo with dead-letter queue amid-demo-dlq (maxReceiveCount 2)")
            for label, body in _demo_events():
                await sqs.send_message(QueueUrl=queue["QueueUrl"], MessageBody=body)
                print(f"  sent: {label}")

            with tempfile.TemporaryDirectory(prefix="amid-demo-") as state_dir:
                config = _demo_config(queue["QueueUrl"], endpoint, Path(state_dir))
                configure_logging("error", "console")
                stop = asyncio.Event()
                daemon = Daemon(config, stop=stop)
                print("▶ amid running (console handlers below; the digest waits 2s for company)\n")
                runner = asyncio.create_task(daemon.run())
                if forever:
                    print(
                        f"  metrics on http://127.0.0.1:{config.metrics.port}/metrics; Ctrl-C stops"
                    )
                    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
                        await runner
                    return 0
                await _until_settled(sqs, queue["QueueUrl"], dlq["QueueUrl"], timeout=60)
                await _expectation_round_trip(daemon.metrics.registry, sqs, queue["QueueUrl"])
                stop.set()
                await runner
                dead = await approximate_count(sqs, dlq["QueueUrl"])
            print()
            _report(daemon.metrics.registry, dead)
    finally:
        server.stop()
    return 0


def _demo_config(queue_url: str, endpoint: str, state_dir: Path) -> Any:
    text = f"""
queue:
  url: {queue_url}
  region: {_REGION}
  endpoint_url: {endpoint}
  wait_time: 1s
  visibility_timeout: 30s
  redelivery: {{initial: 0s, max: 1s}}
  on_invalid: keep
shutdown_timeout: 5s
dedupe:
  backend: sqlite
  path: {state_dir / "dedupe.sqlite3"}
metrics:
  listen: 127.0.0.1:{_free_port()}
  queue_depth_interval: 0
logging: {{level: error, format: console}}
handlers:
  - name: console
    type: console
    match: {{detail: {{State: [{{anything-but: deregistered}}]}}}}
  - name: cleanup-digest
    type: console
    match: {{detail: {{State: [deregistered]}}}}
    digest: {{wait: 2s}}
expectations:
  - name: {_EXPECTATION}
    match: {{detail: {{State: [available]}}}}
    every: 3s
    grace: 1s
    notify: [console]
"""
    return parse_config(text, env={})


async def _expectation_round_trip(registry: Any, sqs: Any, queue_url: str) -> None:
    """Wait for the expectation to go overdue, then send the event that ends the episode."""

    def value(name: str, **labels: str) -> float:
        return float(registry.get_sample_value(name, {"expectation": _EXPECTATION, **labels}) or 0)

    print(f"\n▶ expectation {_EXPECTATION}: an available event every 3s (+1s grace); none comes")
    if not await _until(lambda: value("amid_expectation_overdue") == 1, timeout=30):
        print("  (it did not go overdue within 30s)")
        return
    event = synthetic_event("available", "ami-0a1b2c3d4e5f60005", _REGION)
    await sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
    print("▶ sent another available event: the expectation recovers")
    recovered = "amid_expectation_notifications_total"
    if not await _until(
        lambda: value(recovered, handler="console", status="recovered") >= 1, timeout=30
    ):
        print("  (it did not recover within 30s)")


async def _until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def _until_settled(sqs: Any, queue_url: str, dlq_url: str, timeout: float) -> None:
    """Until the main queue is empty and the invalid message has reached the dead-letter queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            await approximate_count(sqs, queue_url) == 0
            and await approximate_count(sqs, dlq_url) >= 1
        ):
            return
        await asyncio.sleep(0.5)
    print(f"  (demo stopped after {timeout:g}s without settling)")


def _report(registry: Any, dead_letters: int) -> None:
    def value(name: str, **labels: str) -> int:
        return int(registry.get_sample_value(name, labels) or 0)

    print("▶ what happened")
    for state in ("available", "failed", "deregistered", "disabled"):
        handled = value("amid_events_total", state=state, outcome="handled")
        duplicate = value("amid_events_total", state=state, outcome="duplicate")
        extra = f", {duplicate} duplicate copy dropped" if duplicate else ""
        print(f"  {state:<13} delivered {handled}x{extra}")
    digests = value("amid_digests_total", handler="cleanup-digest", outcome="delivered")
    carried = int(
        registry.get_sample_value("amid_digest_events_sum", {"handler": "cleanup-digest"}) or 0
    )
    print(f"  digest        {carried} deregistered events in {digests} message(s)")
    print(
        f"  invalid       counted on each of its "
        f"{value('amid_messages_invalid_total', reason='not_json')} receives (reason not_json), "
        f"left for the redrive policy: {dead_letters} in the dead-letter queue"
    )
    told = {
        status: value(
            "amid_expectation_notifications_total",
            expectation=_EXPECTATION,
            handler="console",
            status=status,
        )
        for status in ("overdue", "recovered")
    }
    print(
        f"  expectation   {_EXPECTATION}: overdue told {told['overdue']}x, "
        f"recovered told {told['recovered']}x"
    )
    print("\n▶ final metrics (non-zero amid_* samples)")
    for metric in registry.collect():
        for sample in metric.samples:
            if (
                sample.name.startswith("amid_")
                and sample.value
                and not sample.name.endswith(("_bucket", "_created"))
            ):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                print(f"  {sample.name}{{{labels}}} {sample.value:g}")
