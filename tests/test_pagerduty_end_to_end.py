"""Incidents that open and close themselves, end to end: `amid run` processes against moto's
SQS and EC2 on 127.0.0.1, posting to a local Events API v2 server that checks every request as
PagerDuty documents it (tests/pagerduty_server.py).

Images are made in moto as a pipeline makes them (CreateImage, CreateTags), so the dedup key
`{{ image.tags.Pipeline }}` is rendered from what DescribeImages says. Every wait polls with a
deadline far above the expected time; what a test counts, it counts after the processes have
stopped, so nothing can arrive afterwards. Every test also reads the whole log and a scrape of
/metrics for the routing key.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from amid.tools.offline import synthetic_event
from tests.harness import (
    AmidConfig,
    AmidProcess,
    Receiver,
    make_queue,
    queue_count,
    wait_until,
)
from tests.images import OWN_ACCOUNT, make_image
from tests.pagerduty_server import EventsApi, Reply

pytestmark = pytest.mark.slow

ROUTING_KEY = "R0UT1NGK3Yfeedface0123456789ABCD"
TIMEOUT = 60.0
REGION = "us-east-1"
PIPELINE_KEY = "{{ account }}/{{ region }}/{{ image.tags.Pipeline }}"


@dataclass(frozen=True, slots=True)
class PagerDutyConfig(AmidConfig):
    """The harness's `amid run` config with one pagerduty handler (and enrichment when asked)."""

    pagerduty: Mapping[str, Any] = field(default_factory=dict)
    describe_images: bool = False

    def to_dict(self) -> dict[str, Any]:
        document = AmidConfig.to_dict(self)
        document["handlers"] = [dict(self.pagerduty)]
        if self.describe_images:
            document["enrich"] = {"describe_images": True}
        return document


@pytest.fixture
def api() -> Iterator[EventsApi]:
    with EventsApi() as server:
        yield server


def settings(
    queue_url: str, moto_url: str, api: EventsApi, tmp_path: Path, **changes: Any
) -> PagerDutyConfig:
    key_file = tmp_path / "routing-key"
    key_file.write_text(ROUTING_KEY + "\n")
    handler = {
        "name": "oncall",
        "type": "pagerduty",
        "routing_key_file": str(key_file),
        "events_url": api.url,
        **changes.pop("handler", {}),
    }
    return PagerDutyConfig(
        queue_url=queue_url,
        sqs_endpoint=moto_url,
        receiver=Receiver(),  # unused: the only handler is the pagerduty one
        handlers=[],
        dedupe=changes.pop("dedupe", {"backend": "memory"}),
        pagerduty=handler,
        **changes,
    )


async def send(sqs: Any, queue_url: str, event: Mapping[str, Any]) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))


def assert_no_routing_key(amid: AmidProcess, metrics_text: str) -> None:
    log = amid.log.read_text(errors="replace")
    assert log, "the process logged"
    assert ROUTING_KEY not in log
    assert ROUTING_KEY not in metrics_text
    assert "amid_incidents_total" in metrics_text


async def scrape(amid: AmidProcess) -> str:
    status, text = await asyncio.to_thread(amid._get, "/metrics")
    assert status == 200
    return text


async def test_a_failed_build_opens_an_incident_and_the_next_good_build_closes_it(
    sqs: Any, ec2: Any, moto_url: str, api: EventsApi, tmp_path: Path
) -> None:
    broken = await make_image(ec2, "golden-web-2026-12-03", {"Pipeline": "golden-web"})
    good = await make_image(ec2, "golden-web-2026-12-04", {"Pipeline": "golden-web"})
    queue_url, _ = await make_queue(sqs, "pd")
    config = settings(
        queue_url,
        moto_url,
        api,
        tmp_path,
        describe_images=True,
        handler={
            "dedup_key": PIPELINE_KEY,
            "match": {"detail": {"State": ["failed", "available", "deregistered"]}},
        },
    )
    failed = synthetic_event("failed", broken, account=OWN_ACCOUNT)
    available = synthetic_event("available", good, account=OWN_ACCOUNT)
    deregistered = synthetic_event("deregistered", broken, account=OWN_ACCOUNT)
    key = f"{OWN_ACCOUNT}/{REGION}/golden-web"

    async with AmidProcess(config, tmp_path, aws_endpoint=moto_url) as amid:
        await amid.wait_ready()
        await send(sqs, queue_url, failed)
        await wait_until(lambda: api.accepted("trigger"), timeout=TIMEOUT, what="the trigger")
        await send(sqs, queue_url, available)
        await wait_until(lambda: api.accepted("resolve"), timeout=TIMEOUT, what="the resolve")
        await send(sqs, queue_url, deregistered)
        for event in (failed, failed, available):  # copies of what was handled already
            await send(sqs, queue_url, event)

        async def settled() -> bool:
            snapshot = await amid.metrics()
            return (
                snapshot.value("amid_events_total", state="deregistered", outcome="handled") == 1
                and snapshot.value("amid_events_total", outcome="duplicate") == 3
                and await queue_count(sqs, queue_url) == 0
            )

        await wait_until(settled, timeout=TIMEOUT, what="the deregistration and the copies")
        metrics = await amid.metrics()
        metrics_text = await scrape(amid)
        assert await amid.terminate() == 0

    assert api.invalid() == []
    trigger, resolve = api.received()  # nothing for the deregistration, nothing for the copies
    assert (trigger.action, resolve.action) == ("trigger", "resolve")
    assert trigger.accepted and resolve.accepted
    assert trigger.dedup_key == resolve.dedup_key == key
    assert trigger.body["routing_key"] == ROUTING_KEY
    payload = trigger.body["payload"]
    assert payload == {
        "summary": f"AMI {broken} failed in {REGION}: Test failure from amid test-event",
        "source": broken,
        "severity": "error",
        "timestamp": failed["time"],
        "component": "ami",
        "group": f"{OWN_ACCOUNT}/{REGION}",
        "class": "failed",
        "custom_details": {
            "detail": failed["detail"],
            "image": {"name": "golden-web-2026-12-03", "tags": {"Pipeline": "golden-web"}},
        },
    }
    assert trigger.body["links"][0]["href"].endswith(f"#ImageDetails:imageId={broken}")
    assert trigger.body["client"] == "amid"
    assert resolve.body == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key}
    assert metrics.value("amid_incidents_total", handler="oncall", action="trigger") == 1
    assert metrics.value("amid_incidents_total", handler="oncall", action="resolve") == 1
    assert metrics.value("amid_incidents_total", handler="oncall", action="acknowledge") == 0
    # The deregistration sent nothing and still counts as delivered: three events, three.
    assert metrics.value("amid_notifications_total", handler="oncall", outcome="delivered") == 3
    assert metrics.value("amid_notifications_total", handler="oncall", outcome="failed") == 0
    assert_no_routing_key(amid, metrics_text)


async def test_throttling_and_server_errors_are_retried_into_one_accepted_trigger_each(
    sqs: Any, moto_url: str, api: EventsApi, tmp_path: Path
) -> None:
    queue_url, _ = await make_queue(sqs, "pd-retry")
    config = settings(queue_url, moto_url, api, tmp_path, backoff=(0.05, 0.2))
    first = synthetic_event("failed", "ami-0aaaaaaaaaaaaaaa1")
    second = synthetic_event("failed", "ami-0aaaaaaaaaaaaaaa2")
    keys = [f"123456789012/{REGION}/{e['detail']['ImageId']}" for e in (first, second)]

    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        api.script(Reply(429, {"Retry-After": "1"}), 202)
        await send(sqs, queue_url, first)
        await wait_until(lambda: api.accepted(), timeout=TIMEOUT, what="the first trigger")
        api.script(500, 500, 202)
        await send(sqs, queue_url, second)
        await wait_until(lambda: len(api.accepted()) == 2, timeout=TIMEOUT, what="the second")

        async def drained() -> bool:
            return await queue_count(sqs, queue_url) == 0

        await wait_until(drained, timeout=TIMEOUT, what="both messages deleted")
        metrics = await amid.metrics()
        metrics_text = await scrape(amid)
        assert await amid.terminate() == 0

    received = api.received()
    assert api.invalid() == []
    assert [r.status for r in received] == [429, 202, 500, 500, 202]
    assert [r.dedup_key for r in received] == [keys[0]] * 2 + [keys[1]] * 3
    assert Counter(r.dedup_key for r in api.accepted("trigger")) == dict.fromkeys(keys, 1)
    assert received[1].at - received[0].at >= 1.0, "Retry-After: 1 was honoured"
    assert metrics.value("amid_events_total", state="failed", outcome="handled") == 2
    assert metrics.value("amid_events_total", state="failed", outcome="retry") == 0
    assert metrics.value("amid_handler_attempts_total", handler="oncall", outcome="error") == 3
    assert metrics.value("amid_handler_attempts_total", handler="oncall", outcome="success") == 2
    assert metrics.value("amid_incidents_total", handler="oncall", action="trigger") == 2
    assert_no_routing_key(amid, metrics_text)


async def test_a_refused_event_is_not_retried_in_process_and_ends_in_the_dead_letter_queue(
    sqs: Any, moto_url: str, api: EventsApi, tmp_path: Path
) -> None:
    queue_url, dlq_url = await make_queue(sqs, "pd-dlq", max_receive=2)
    config = settings(queue_url, moto_url, api, tmp_path)
    # PagerDuty's 400 quotes the request back; here it quotes the routing key too.
    echo = json.dumps({"status": "invalid event", "errors": [f"routing key {ROUTING_KEY}"]})
    api.script(*[Reply(400, body=echo)] * 5)
    event = synthetic_event("failed", "ami-0bbbbbbbbbbbbbbb1")

    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue_url, event)

        async def dead_lettered() -> bool:
            return await queue_count(sqs, dlq_url) == 1

        await wait_until(dead_lettered, timeout=TIMEOUT, what="the message in the DLQ")
        metrics = await amid.metrics()
        metrics_text = await scrape(amid)
        assert await amid.terminate() == 0

    # One try per receive, two receives (maxReceiveCount 2), then SQS moved it.
    assert [r.status for r in api.received()] == [400, 400]
    assert await queue_count(sqs, queue_url) == 0
    assert metrics.value("amid_handler_attempts_total", handler="oncall", outcome="error") == 2
    assert (
        metrics.value("amid_notification_failures_total", handler="oncall", reason="http_400") == 2
    )
    assert metrics.value("amid_incidents_total", handler="oncall") == 0
    log = amid.log.read_text()
    assert "pagerduty answered HTTP 400" in log and "routing key ***" in log
    assert_no_routing_key(amid, metrics_text)


EXPECTATION = {
    "name": "nightly",
    "match": {"detail": {"State": ["available"]}},
    "every": "2s",
    "grace": "1s",
    "notify": ["oncall"],
}
EXPECTATION_KEY = "amid/expectation/nightly"


async def overdue_is(amid: AmidProcess, value: float) -> bool:
    """The watch has checked (and sent what was owed) with this result: a barrier."""
    snapshot = await amid.metrics()
    return any(
        name == "amid_expectation_overdue" and labels.get("expectation") == "nightly" and v == value
        for name, labels, v in snapshot.samples
    )


async def test_an_overdue_expectation_triggers_once_and_resolves_once_across_a_restart(
    sqs: Any, moto_url: str, api: EventsApi, tmp_path: Path
) -> None:
    queue_url, _ = await make_queue(sqs, "pd-expect")
    config = settings(
        queue_url,
        moto_url,
        api,
        tmp_path,
        dedupe={"backend": "sqlite", "path": str(tmp_path / "amid.sqlite3")},
        expectations=[EXPECTATION],
        # Events: only failures; notices ignore `match` and `actions` alike.
        handler={"match": {"detail": {"State": ["failed"]}}, "actions": {"failed": "none"}},
    )
    async with AmidProcess(config, tmp_path, name="first") as first:
        await first.wait_ready()
        await wait_until(
            lambda: api.accepted("trigger", EXPECTATION_KEY), timeout=TIMEOUT, what="the trigger"
        )
        await wait_until(lambda: overdue_is(first, 1), timeout=TIMEOUT, what="overdue shown")
        first_metrics = await scrape(first)
        assert await first.terminate() == 0
    (trigger,) = api.received()
    episode = trigger.body["payload"]["custom_details"]["id"]

    async with AmidProcess(config, tmp_path, name="second") as second:
        await second.wait_ready()
        await wait_until(lambda: overdue_is(second, 1), timeout=TIMEOUT, what="second checked")
        await send(sqs, queue_url, synthetic_event("available", "ami-0ccccccccccccccc1"))
        await wait_until(
            lambda: api.accepted("resolve", EXPECTATION_KEY), timeout=TIMEOUT, what="the resolve"
        )
        await wait_until(lambda: overdue_is(second, 0), timeout=TIMEOUT, what="recovered shown")
        second_metrics = await scrape(second)
        assert await second.terminate() == 0

    assert api.invalid() == []
    triggers = Counter(
        r.body["payload"]["custom_details"]["id"] for r in api.accepted("trigger", EXPECTATION_KEY)
    )
    assert triggers[episode] == 1, "the restart did not trigger the open episode again"
    assert len(api.accepted("resolve", EXPECTATION_KEY)) == 1
    resolve = api.accepted("resolve")[0]
    assert resolve.at > trigger.at
    assert trigger.body["payload"]["class"] == "overdue"
    assert trigger.body["payload"]["summary"].startswith("⏰ nightly: no matching AMI event")
    assert "amid_incidents_total" in first_metrics
    assert_no_routing_key(first, first_metrics)
    assert_no_routing_key(second, second_metrics)


def test_check_config_and_test_event_never_print_the_routing_key(
    api: EventsApi, tmp_path: Path
) -> None:
    config = tmp_path / "amid.yaml"
    config.write_text(
        "queue: {url: 'http://127.0.0.1:1/123456789012/q'}\n"
        "dedupe: {backend: memory}\n"
        "handlers:\n"
        "  - name: oncall\n"
        "    type: pagerduty\n"
        "    routing_key: ${PD_ROUTING_KEY}\n"
        f"    events_url: {api.url}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMID_")}
    env["PD_ROUTING_KEY"] = ROUTING_KEY
    outputs = {}
    for args in (
        ["check-config"],
        ["test-event", "--state", "failed", "--dry-run"],
        ["test-event", "--state", "failed"],
    ):
        shown = subprocess.run(
            [sys.executable, "-m", "amid", args[0], "-c", str(config), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        outputs[" ".join(args)] = shown.stdout + shown.stderr

    assert (
        "pagerduty: dedup_key {{ account }}/{{ region }}/{{ image_id }}" in outputs["check-config"]
    )
    dry_run = outputs["test-event --state failed --dry-run"]
    assert '"routing_key": "**********"' in dry_run and '"event_action": "trigger"' in dry_run
    assert "✓ oncall: delivered after 1 attempt(s)" in outputs["test-event --state failed"]
    (sent,) = api.received()  # the dry run sent nothing
    assert sent.accepted and sent.body["routing_key"] == ROUTING_KEY
    for output in outputs.values():
        assert ROUTING_KEY not in output
