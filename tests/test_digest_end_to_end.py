"""Digests end to end: `amid run` as a subprocess (the daemon in process for reloads), moto's
SQS, Slack and webhook stand-ins on 127.0.0.1.

Every Slack payload a receiver gets is checked with slack-sdk's Block Kit models.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from amid.config import load_config
from amid.tools.offline import synthetic_event
from tests.handlers.conftest import Receiver as SlackStandIn
from tests.harness import AmidConfig, AmidProcess, make_queue, queue_count, wait_until
from tests.helpers import config_yaml, hook_handler, records, running_daemon
from tests.slack_blocks import assert_valid_slack_payload

pytestmark = pytest.mark.slow

HOOK = Path(__file__).parent / "hooks" / "digest_hook.py"
ACCOUNT, OTHER_ACCOUNT = "111122223333", "444455556666"
_IMAGE_LINK = re.compile(r"\|(ami-[0-9a-f]{17})>")


@dataclass(frozen=True)
class DigestRun(AmidConfig):
    """An `amid run` config whose handlers are given as YAML mappings."""

    handler_items: Sequence[dict[str, Any]] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        document = AmidConfig.to_dict(self)
        document["handlers"] = [dict(item) for item in self.handler_items]
        return document


def run_config(
    queue: str, moto_url: str, handlers: Iterable[dict[str, Any]], tmp_path: Path, **options: Any
) -> DigestRun:
    return DigestRun(
        queue,
        moto_url,
        None,  # type: ignore[arg-type] - no harness receiver: the handlers are given whole
        (),
        {"backend": "sqlite", "path": str(tmp_path / "dedupe.sqlite3")},
        handler_items=tuple(handlers),
        **options,
    )


def slack(name: str, receiver: SlackStandIn, **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "slack",
        "webhook_url": f"{receiver.url}/services/{name}",
        "rate_limit": 50,
        **options,
    }


def events(count: int, state: str = "deregistered", account: str = ACCOUNT, start: int = 0):
    return [synthetic_event(state, f"ami-{start + n:017x}", account=account) for n in range(count)]


async def send(sqs: Any, queue: str, bodies: list[dict[str, Any]]) -> None:
    for first in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(body)}
            for i, body in enumerate(bodies[first : first + 10])
        ]
        response = await sqs.send_message_batch(QueueUrl=queue, Entries=entries)
        assert not response.get("Failed")


def posts(receiver: SlackStandIn) -> list[dict[str, Any]]:
    """Every payload the stand-in answered 2xx to, each checked as Block Kit."""
    delivered = []
    for request, status in zip(receiver.requests, receiver.statuses, strict=True):
        payload = request.json()
        assert_valid_slack_payload(payload)
        if 200 <= status < 300:
            delivered.append(payload)
    return delivered


def named(payload: dict[str, Any]) -> list[str]:
    return _IMAGE_LINK.findall(json.dumps(payload["blocks"]))


def image_ids(bodies: list[dict[str, Any]]) -> list[str]:
    return [body["detail"]["ImageId"] for body in bodies]


async def empty(sqs: Any, queue: str) -> bool:
    return await queue_count(sqs, queue) == 0


@pytest.fixture
async def stand_ins() -> Any:
    """Slack stand-ins, each recording what it got and the status it answered."""
    started: list[SlackStandIn] = []

    async def make() -> SlackStandIn:
        receiver = RecordingStandIn()
        await receiver.start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        await receiver.stop()


class RecordingStandIn(SlackStandIn):
    """The handlers' stand-in, also keeping the status each request was answered with."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)
        self.statuses.append(response.status)
        return response


async def test_a_burst_of_sixty_reaches_a_digest_in_ceil_60_over_max_posts_and_the_rest_one_by_one(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    digested, single = await stand_ins(), await stand_ins()
    max_events = 20
    handlers = [
        slack("ops-slack", digested, digest={"wait": "1m", "max_events": max_events}),
        slack("each-slack", single),
    ]
    burst = events(60)
    config = run_config(queue, moto_url, handlers, tmp_path, max_in_flight=200)
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue, burst)  # 6 batch calls: well within a second
        await wait_until(
            lambda: empty(sqs, queue), timeout=60, what="queue empty", diagnose=amid.log_tail
        )
        metrics = await amid.metrics()

    digests = posts(digested)
    assert len(digests) == math.ceil(60 / max_events)
    assert Counter(image for post in digests for image in named(post)) == Counter(image_ids(burst))
    assert all(
        post["text"].endswith(f"{max_events} AMIs deregistered in {ACCOUNT} us-east-1")
        for post in digests
    )
    one_by_one = posts(single)
    assert len(one_by_one) == 60
    assert sorted(image for post in one_by_one for image in named(post)) == sorted(image_ids(burst))
    assert metrics.value("amid_digests_total", handler="ops-slack", outcome="delivered") == 3
    assert metrics.value("amid_digest_events_sum", handler="ops-slack") == 60
    assert metrics.value("amid_notifications_total", handler="ops-slack", outcome="delivered") == 60
    assert metrics.value("amid_digest_pending_events", handler="ops-slack") == 0


async def test_three_groups_by_account_and_state_stay_apart(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    receiver = await stand_ins()
    groups = {
        (ACCOUNT, "deregistered"): events(3, "deregistered", ACCOUNT, start=0),
        (ACCOUNT, "failed"): events(3, "failed", ACCOUNT, start=10),
        (OTHER_ACCOUNT, "deregistered"): events(3, "deregistered", OTHER_ACCOUNT, start=20),
    }
    handlers = [slack("ops-slack", receiver, digest={"wait": "2s"})]
    async with AmidProcess(run_config(queue, moto_url, handlers, tmp_path), tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue, [body for bodies in groups.values() for body in bodies])
        await wait_until(lambda: empty(sqs, queue), timeout=60, what="queue empty")

    digests = posts(receiver)
    assert len(digests) == 3
    got = {frozenset(named(post)): post["text"] for post in digests}
    for (account, state), bodies in groups.items():
        text = got[frozenset(image_ids(bodies))]
        assert text.endswith(f"3 AMIs {state} in {account} us-east-1")


async def test_a_shell_digest_gets_the_whole_group_on_stdin(
    sqs: Any, moto_url: str, tmp_path: Path
) -> None:
    queue, _ = await make_queue(sqs)
    record = tmp_path / "hook.jsonl"
    hook = {
        "name": "on-cleanup",
        "type": "shell",
        "command": [sys.executable, str(HOOK), str(record)],
        "digest": {"wait": "1m", "max_events": 5},
    }
    burst = events(5)
    async with AmidProcess(run_config(queue, moto_url, [hook], tmp_path), tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue, burst)
        await wait_until(lambda: empty(sqs, queue), timeout=60, what="queue empty")

    [call] = records(record)
    assert call["env"]["AMID_DIGEST_COUNT"] == "5"
    assert call["stdin"]["count"] == 5
    assert sorted(e["id"] for e in call["stdin"]["events"]) == sorted(e["id"] for e in burst)
    assert call["stdin"]["group"] == {
        "account": ACCOUNT,
        "region": "us-east-1",
        "detail.State": "deregistered",
    }


async def test_sigkill_while_a_group_waits_then_restart_carries_every_event_exactly_once(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    receiver = await stand_ins()
    sent_first, waiting = events(4, start=0), events(3, start=100)

    def config(wait: str) -> DigestRun:
        handlers = [slack("ops-slack", receiver, digest={"wait": wait, "max_events": 4})]
        return run_config(queue, moto_url, handlers, tmp_path, visibility_timeout=3)

    first = AmidProcess(config("1h"), tmp_path, name="first")
    async with first:
        await first.wait_ready()
        await send(sqs, queue, sent_first)  # a full group: sent and recorded at once
        await wait_until(lambda: len(receiver.requests) == 1, timeout=60, what="first digest")
        await send(sqs, queue, waiting)  # a group of three, waiting for a fourth

        async def three_waiting() -> bool:
            metrics = await first.metrics()
            return metrics.value("amid_digest_pending_events", handler="ops-slack") == 3

        await wait_until(three_waiting, timeout=60, what="three events waiting")
        await first.kill()
    assert len(receiver.requests) == 1, "nothing of the waiting group went out"

    second = AmidProcess(config("2s"), tmp_path, name="second")
    async with second:
        await second.wait_ready()
        # A copy of an event the first digest carried: a duplicate now.
        await send(sqs, queue, sent_first[:1])
        await wait_until(lambda: empty(sqs, queue), timeout=90, what="queue empty")
        metrics = await second.metrics()

    carried = Counter(image for post in posts(receiver) for image in named(post))
    assert carried == Counter(image_ids(sent_first + waiting))
    assert metrics.value("amid_events_total", state="deregistered", outcome="duplicate") == 1


async def test_sigterm_sends_the_waiting_group_before_exit(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    receiver = await stand_ins()
    handlers = [slack("ops-slack", receiver, digest={"wait": "1h"})]
    burst = events(3)
    amid = AmidProcess(run_config(queue, moto_url, handlers, tmp_path), tmp_path)
    async with amid:
        await amid.wait_ready()
        await send(sqs, queue, burst)

        async def all_waiting() -> bool:
            metrics = await amid.metrics()
            return metrics.value("amid_digest_pending_events", handler="ops-slack") == 3

        await wait_until(all_waiting, timeout=60, what="three events waiting")
        assert receiver.requests == []
        assert await amid.terminate() == 0

    [digest] = posts(receiver)
    assert sorted(named(digest)) == sorted(image_ids(burst))
    assert await queue_count(sqs, queue) == 0, "the digest's messages were deleted"


async def test_a_digest_answered_500_twice_then_200_is_sent_once(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    receiver = await stand_ins()
    receiver.then(500)
    receiver.then(500)
    handlers = [slack("ops-slack", receiver, digest={"wait": "1m", "max_events": 3})]
    burst = events(3, "failed")
    amid = AmidProcess(run_config(queue, moto_url, handlers, tmp_path, retry_attempts=3), tmp_path)
    async with amid:
        await amid.wait_ready()
        await send(sqs, queue, burst)
        await wait_until(lambda: empty(sqs, queue), timeout=60, what="queue empty")
        metrics = await amid.metrics()

    assert receiver.statuses == [500, 500, 200]
    [digest] = posts(receiver)
    assert sorted(named(digest)) == sorted(image_ids(burst))
    assert all(request.json() == digest for request in receiver.requests), "retried whole"
    assert metrics.value("amid_handler_attempts_total", handler="ops-slack", outcome="error") == 2
    assert metrics.value("amid_digests_total", handler="ops-slack", outcome="delivered") == 1


async def test_a_digest_answered_429_waits_its_retry_after(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    receiver = await stand_ins()
    receiver.then(429, headers={"Retry-After": "2"})
    handlers = [slack("ops-slack", receiver, digest={"wait": "1m", "max_events": 2})]
    amid = AmidProcess(run_config(queue, moto_url, handlers, tmp_path), tmp_path)
    async with amid:
        await amid.wait_ready()
        await send(sqs, queue, events(2))
        await wait_until(lambda: empty(sqs, queue), timeout=60, what="queue empty")

    assert receiver.statuses == [429, 200]
    throttled, accepted = receiver.requests
    assert accepted.at - throttled.at >= 2.0 - 0.05, "Retry-After is never shortened"
    assert len(posts(receiver)) == 1


async def test_a_burst_many_times_max_in_flight_drains_long_before_any_window_ends(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    receiver = await stand_ins()
    handlers = [slack("ops-slack", receiver, digest={"wait": "1h", "max_events": 100})]
    burst = events(40)
    config = run_config(queue, moto_url, handlers, tmp_path, max_in_flight=5)
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue, burst)
        # Only the in-flight budget can send these: every window is an hour long.
        await wait_until(
            lambda: empty(sqs, queue), timeout=120, what="queue empty", diagnose=amid.log_tail
        )

    digests = posts(receiver)
    carried = Counter(image for post in digests for image in named(post))
    assert carried == Counter(image_ids(burst))
    assert all(len(named(post)) <= 5 for post in digests)


async def test_a_redelivered_event_a_digest_carried_calls_only_the_handler_that_failed(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
) -> None:
    queue, _ = await make_queue(sqs)
    digested, flaky = await stand_ins(), await stand_ins()
    for _ in range(4):  # every try of the first delivery fails (2 events, 2 attempts)
        flaky.then(500)
    handlers = [
        slack("ops-slack", digested, digest={"wait": "1m", "max_events": 2}),
        slack("flaky", flaky, retry={"attempts": 2, "initial_backoff": "10ms"}),
    ]
    burst = events(2)
    amid = AmidProcess(run_config(queue, moto_url, handlers, tmp_path), tmp_path)
    async with amid:
        await amid.wait_ready()
        await send(sqs, queue, burst[:1])
        await send(sqs, queue, burst[1:])
        await wait_until(lambda: empty(sqs, queue), timeout=60, what="queue empty")
        metrics = await amid.metrics()

    [digest] = posts(digested)
    assert sorted(named(digest)) == sorted(image_ids(burst))
    assert sorted(image for post in posts(flaky) for image in named(post)) == sorted(
        image_ids(burst)
    )
    assert metrics.value("amid_events_total", outcome="retry") >= 1


class TestReload:
    """SIGHUP: changed digest settings apply to new groups, old groups finish as gathered;
    a removed handler's waiting events go back to the queue, and nothing is lost."""

    @staticmethod
    def write(path: Path, queue: str, moto_url: str, handlers: str) -> None:
        path.write_text(config_yaml(queue, moto_url, handlers), encoding="utf-8")

    @staticmethod
    def webhook(receiver: SlackStandIn, digest: str) -> str:
        return (
            f"  - name: inventory\n    type: webhook\n    url: {receiver.url}/inventory\n"
            f"    digest: {digest}\n"
        )

    async def test_new_settings_make_new_groups_while_the_old_group_finishes_as_gathered(
        self, sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
    ) -> None:
        queue, _ = await make_queue(sqs)
        receiver = await stand_ins()
        path = tmp_path / "amid.yaml"
        self.write(path, queue, moto_url, self.webhook(receiver, "{wait: 3s, max_events: 10}"))
        before, after = events(2, start=0), events(2, start=10)
        async with running_daemon(load_config(path), path) as daemon:
            await send(sqs, queue, before)
            await wait_until(
                lambda: pending(daemon, "inventory") == 2, timeout=30, what="two waiting"
            )
            self.write(path, queue, moto_url, self.webhook(receiver, "{wait: 1h, max_events: 2}"))
            daemon.request_reload()
            await wait_until(lambda: reloads(daemon) == 1, timeout=30, what="reloaded")
            await send(sqs, queue, after)
            await wait_until(lambda: empty(sqs, queue), timeout=60, what="queue empty")

        groups = [sorted(e["id"] for e in r.json()["events"]) for r in receiver.requests]
        assert sorted(groups) == sorted(
            [sorted(e["id"] for e in before), sorted(e["id"] for e in after)]
        )

    async def test_a_removed_handler_hands_its_waiting_events_back_without_loss(
        self, sqs: Any, moto_url: str, tmp_path: Path, stand_ins: Any
    ) -> None:
        queue, _ = await make_queue(sqs, max_receive=10)
        receiver = await stand_ins()
        record = tmp_path / "keep.jsonl"
        keep = hook_handler(record, name="keep")
        path = tmp_path / "amid.yaml"
        self.write(path, queue, moto_url, keep + self.webhook(receiver, "{wait: 1h}"))
        burst = events(3)
        async with running_daemon(load_config(path), path) as daemon:
            await send(sqs, queue, burst)
            await wait_until(
                lambda: pending(daemon, "inventory") == 3, timeout=30, what="three waiting"
            )
            self.write(path, queue, moto_url, keep)
            daemon.request_reload()
            await wait_until(lambda: empty(sqs, queue), timeout=60, what="queue empty")
            assert pending(daemon, "inventory") == 0

        assert receiver.requests == []
        assert sorted(call["event_id"] for call in records(record)) == sorted(
            e["id"] for e in burst
        ), "the kept handler was called once per event, before and after the reload"


def pending(daemon: Any, handler: str) -> float:
    registry = daemon.metrics.registry
    return registry.get_sample_value("amid_digest_pending_events", {"handler": handler}) or 0


def reloads(daemon: Any) -> float:
    registry = daemon.metrics.registry
    return registry.get_sample_value("amid_config_reloads_total", {"outcome": "success"}) or 0
