"""Teams and Google Chat end to end: `amid run` as a subprocess, moto's SQS, a Teams Workflows
stand-in and a Google Chat stand-in on 127.0.0.1.

Every card a stand-in receives is checked: Teams cards by Microsoft's Adaptive Cards
library, Chat messages against the Chat API's shapes. What a test counts, it counts after
the queue is empty, so nothing arrives afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from amid.tools.offline import synthetic_event
from tests.adaptive_cards import assert_valid_teams_payloads, cards_of
from tests.google_chat_schema import assert_valid_chat_payload
from tests.handlers.conftest import Receiver, Reply
from tests.harness import AmidProcess, make_queue, queue_count, wait_until
from tests.test_cli_offline import amid as amid_cli
from tests.test_digest_end_to_end import run_config, send

pytestmark = pytest.mark.slow

TEAMS_SECRET = "/workflows/5ecre7flow/triggers/manual/paths/invoke?sig=S1gN4tur3XXXXXXXX"
CHAT_SECRET = "/v1/spaces/SP4CEid/messages?key=K3yK3yK3yXXXX&token=T0k3nT0k3nXXXX%3D"
SECRETS = ("5ecre7flow", "S1gN4tur3", "SP4CEid", "K3yK3yK3y", "T0k3nT0k3n")
STATES = ("available", "failed", "deregistered", "disabled")


class StandIn(Receiver):
    """A receiver that keeps the status it answered each request with."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.default = Reply(status, "")
        self.statuses: list[int] = []

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)
        self.statuses.append(response.status)
        return response

    def delivered(self) -> list[dict[str, Any]]:
        return [
            r.json()
            for r, status in zip(self.requests, self.statuses, strict=True)
            if 200 <= status < 300
        ]


@pytest.fixture
async def stand_ins() -> AsyncIterator[tuple[StandIn, StandIn]]:
    """(Teams, Google Chat): Workflows answer 202, Chat 200."""
    teams, chat = StandIn(202), StandIn(200)
    await teams.start()
    await chat.start()
    yield teams, chat
    await teams.stop()
    await chat.stop()


def handlers(teams: StandIn, chat: StandIn, **options: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "ops-teams",
            "type": "teams",
            "webhook_url": teams.url + TEAMS_SECRET,
            "rate_limit": 50,
            **options,
        },
        {
            "name": "ops-chat",
            "type": "google_chat",
            "webhook_url": chat.url + CHAT_SECRET,
            "rate_limit": 50,
            **options,
        },
    ]


def teams_image_ids(payloads: list[dict[str, Any]]) -> list[str]:
    """The image id of each single-event card (its first fact)."""
    return [cards_of(p)[0]["body"][1]["facts"][0]["value"] for p in payloads]


def empty(sqs: Any, queue: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await queue_count(sqs, queue) == 0

    return check


def assert_no_secret(amid: AmidProcess, metrics_text: str) -> None:
    log = amid.log.read_text(errors="replace")
    assert log.strip(), "amid logged something"
    for secret in SECRETS:
        assert secret not in log, f"{secret} in the log"
        assert secret not in metrics_text, f"{secret} in /metrics"


async def test_each_state_reaches_both_once_and_duplicates_add_nothing(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: tuple[StandIn, StandIn]
) -> None:
    teams, chat = stand_ins
    queue, _ = await make_queue(sqs)
    bodies = [synthetic_event(state, f"ami-{n:017x}") for n, state in enumerate(STATES)]
    config = run_config(queue, moto_url, handlers(teams, chat), tmp_path)
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue, bodies)
        await wait_until(empty(sqs, queue), timeout=60, what="queue empty")
        await send(sqs, queue, bodies[:2])  # at-least-once: copies of two events
        await wait_until(empty(sqs, queue), timeout=60, what="queue empty again")
        metrics = await amid.metrics()
        _, metrics_text = await asyncio.to_thread(amid._get, "/metrics")
        assert await amid.terminate() == 0

    expected = sorted(body["detail"]["ImageId"] for body in bodies)
    cards = teams.delivered()
    assert len(cards) == 4 and teams.statuses == [202] * 4
    assert_valid_teams_payloads(cards)
    assert sorted(teams_image_ids(cards)) == expected
    messages = chat.delivered()
    assert len(messages) == 4
    for message in messages:
        assert_valid_chat_payload(message)
    assert sorted(m["thread"]["threadKey"] for m in messages) == expected
    for request in chat.requests:
        query = parse_qs(urlsplit(request.path_qs).query)
        assert query["messageReplyOption"] == ["REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"]
        assert query["token"] == ["T0k3nT0k3nXXXX="]
    assert metrics.value("amid_events_total", outcome="duplicate") == 2
    for name in ("ops-teams", "ops-chat"):
        assert metrics.value("amid_notifications_total", handler=name, outcome="delivered") == 4
    assert_no_secret(amid, metrics_text)


async def test_a_burst_reaches_each_as_one_digest(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: tuple[StandIn, StandIn]
) -> None:
    teams, chat = stand_ins
    queue, _ = await make_queue(sqs)
    burst = [synthetic_event("deregistered", f"ami-{n:017x}") for n in range(5)]
    digest = {"wait": "1m", "max_events": 5}
    config = run_config(queue, moto_url, handlers(teams, chat, digest=digest), tmp_path)
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue, burst)
        await wait_until(empty(sqs, queue), timeout=60, what="queue empty")

    expected = [body["detail"]["ImageId"] for body in burst]
    [card] = teams.delivered()
    assert_valid_teams_payloads([card])
    body = cards_of(card)[0]["body"]
    assert body[0]["text"] == "🗑️ 5 AMIs deregistered in 123456789012 us-east-1"
    assert sorted(b["text"].removeprefix("• ") for b in body if b["text"].startswith("• ")) == (
        sorted(expected)
    )
    [message] = chat.delivered()
    assert_valid_chat_payload(message)
    assert message["text"] == "🗑️ 5 AMIs deregistered in 123456789012 us-east-1"
    listed = json.dumps(message["cardsV2"])
    assert all(listed.count(image) == 1 for image in expected)


async def test_a_500_then_a_success_is_delivered_once(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: tuple[StandIn, StandIn]
) -> None:
    teams, chat = stand_ins
    teams.then(500, "busy")
    chat.then(500, "busy")
    queue, _ = await make_queue(sqs)
    config = run_config(queue, moto_url, handlers(teams, chat), tmp_path, retry_attempts=3)
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await send(sqs, queue, [synthetic_event("failed")])
        await wait_until(empty(sqs, queue), timeout=60, what="queue empty")
        metrics = await amid.metrics()

    assert teams.statuses == [500, 202]
    assert chat.statuses == [500, 200]
    assert teams.requests[0].body == teams.requests[1].body, "the same card, retried"
    assert_valid_teams_payloads(teams.delivered())
    assert_valid_chat_payload(chat.delivered()[0])
    for name in ("ops-teams", "ops-chat"):
        assert metrics.value("amid_handler_attempts_total", handler=name, outcome="error") == 1
        assert metrics.value("amid_notifications_total", handler=name, outcome="delivered") == 1


async def test_an_overdue_expectation_is_told_to_both(
    sqs: Any, moto_url: str, tmp_path: Path, stand_ins: tuple[StandIn, StandIn]
) -> None:
    teams, chat = stand_ins
    queue, _ = await make_queue(sqs)
    only_failed = {"detail": {"State": ["failed"]}}  # does not apply to notices
    expectation = {
        "name": "nightly",
        "match": {"detail": {"State": ["available"]}},
        "every": "2s",
        "grace": "1s",
        "notify": ["ops-teams", "ops-chat"],
    }
    config = run_config(
        queue,
        moto_url,
        handlers(teams, chat, match=only_failed),
        tmp_path,
        expectations=[expectation],
    )
    async with AmidProcess(config, tmp_path) as amid:
        await amid.wait_ready()
        await wait_until(
            lambda: bool(teams.delivered() and chat.delivered()),
            timeout=60,
            what="an overdue notice to each",
            diagnose=amid.log_tail,
        )
        assert await amid.terminate() == 0

    [card] = teams.delivered()
    assert_valid_teams_payloads([card])
    headline = cards_of(card)[0]["body"][0]["text"]
    assert headline.startswith("⏰ nightly: no matching AMI event for ")
    [message] = chat.delivered()
    assert_valid_chat_payload(message)
    assert message["text"].startswith("⏰ nightly: no matching AMI event for ")
    assert message["thread"] == {"threadKey": "expectation-nightly"}


async def test_test_event_dry_run_prints_both_payloads_and_check_config_lists_them(
    tmp_path: Path, stand_ins: tuple[StandIn, StandIn]
) -> None:
    teams, chat = stand_ins
    config = tmp_path / "amid.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "queue": {"url": "https://sqs.us-east-1.amazonaws.com/123456789012/amid"},
                "dedupe": {"backend": "memory"},
                "handlers": handlers(teams, chat),
            }
        )
    )
    code, out, err = await amid_cli(
        "test-event", "-c", str(config), "--state", "failed", "--dry-run"
    )
    assert code == 0, err
    assert "--- ops-teams (dry run)" in out and "--- ops-chat (dry run)" in out
    assert "application/vnd.microsoft.card.adaptive" in out and "cardsV2" in out
    assert teams.requests == [] and chat.requests == []
    code, summary, err = await amid_cli("check-config", "-c", str(config))
    assert code == 0, err
    assert "ops-teams (teams)" in summary and "ops-chat (google_chat)" in summary
    for secret in SECRETS:
        assert secret not in out + err + summary
