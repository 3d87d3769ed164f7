"""The slack handler in app mode (SPEC 3d) against a local Slack-compatible Web API server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from amid import jsoncodec
from amid.config import ConfigError, RetryConfig, parse_config
from amid.handlers import HandlerResources, build_handler
from amid.handlers.base import ExpectationNotice, Notification
from amid.handlers.slack_app import SlackAppHandler
from amid.pipeline.deliver import DeliveryResult, deliver
from amid.store.base import Conversation, claim_conversation
from amid.store.memory import MemoryStore
from tests.handlers.conftest import seed_digest, seed_event
from tests.slack_api import CHANNEL, TOKEN, Scripted, SlackApi
from tests.slack_blocks import assert_valid_slack_payload

RETRY = RetryConfig(attempts=3, initial_backoff=0.01, max_backoff=0.02)


@pytest.fixture
async def api() -> AsyncIterator[SlackApi]:
    server = await SlackApi().start()
    yield server
    await server.stop()


def app(api: SlackApi, **options: Any) -> dict[str, Any]:
    return {
        "name": "ops-slack",
        "type": "slack",
        "token": TOKEN,
        "channel": CHANNEL,
        "api_url": api.api_url,
        "rate_limit": 1000,
        **options,
    }


def config_text(*items: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"queue": {"url": "http://127.0.0.1:1/123456789012/q"}, "handlers": list(items)}
    )


Build = Callable[..., Awaitable[SlackAppHandler]]


@pytest.fixture
async def build(resources: HandlerResources) -> AsyncIterator[Build]:
    """App-mode handlers over one conversation store (a replica's store, shared by copies)."""
    store = MemoryStore(3600)
    built: list[SlackAppHandler] = []

    async def make(item: dict[str, Any], conversations: Any = store) -> SlackAppHandler:
        config = parse_config(config_text(item), env={})
        shared = dataclasses.replace(resources, conversations=conversations)
        handler = build_handler(config.handlers[0], config, shared)
        assert isinstance(handler, SlackAppHandler)
        built.append(handler)
        return handler

    yield make
    for handler in built:
        await handler.aclose()


def event(state: str, event_id: str, image_id: str = "ami-0123456789example") -> Notification:
    return Notification(dataclasses.replace(seed_event(state, ImageId=image_id), id=event_id), {})


async def send(handler: SlackAppHandler, message: Any, attempts: int = 3) -> DeliveryResult:
    retry = RETRY.model_copy(update={"attempts": attempts})
    return await deliver(handler, message, timeout=5, retry=retry, metrics=handler._metrics)


def conversations(handler: SlackAppHandler, action: str) -> float:
    value = handler._metrics.registry.get_sample_value(
        "amid_slack_conversations_total", {"handler": handler.name, "action": action}
    )
    return value or 0.0


class TestConfig:
    def test_exactly_one_of_the_webhook_and_token_forms(self) -> None:
        item = {
            "name": "s",
            "type": "slack",
            "token": TOKEN,
            "channel": CHANNEL,
            "webhook_url": "https://hooks.slack.com/services/T/B/x",
        }
        with pytest.raises(ConfigError) as raised:
            parse_config(config_text(item), env={})
        message = str(raised.value)
        assert "handlers[0]" in message and "exactly one of" in message
        assert TOKEN not in message

    def test_a_token_needs_a_channel(self) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_config(config_text({"name": "s", "type": "slack", "token": TOKEN}), env={})
        assert "handlers[0]: channel: required with a token" in str(raised.value)

    def test_the_token_file_is_read_and_defaults_are_slacks(self, tmp_path: Path) -> None:
        secret = tmp_path / "token"
        secret.write_text(TOKEN + "\n")
        item = {"name": "s", "type": "slack", "token_file": str(secret), "channel": CHANNEL}
        handler = parse_config(config_text(item), env={}).handlers[0]
        assert handler.token.get_secret_value() == TOKEN  # type: ignore[union-attr]
        assert handler.api_url == "https://slack.com/api/"  # type: ignore[union-attr]
        assert handler.thread_by == "{{ image_id }}"  # type: ignore[union-attr]
        assert TOKEN not in repr(handler)

    def test_a_thread_by_that_does_not_compile_names_its_path(self) -> None:
        item = {"name": "s", "type": "slack", "token": TOKEN, "channel": CHANNEL}
        with pytest.raises(ConfigError) as raised:
            parse_config(config_text({**item, "thread_by": "{{ image_id"}), env={})
        assert "handlers[0].thread_by" in str(raised.value)


class TestConversation:
    async def test_the_first_event_posts_the_parent_and_later_ones_reply_and_update(
        self, api: SlackApi, build: Build
    ) -> None:
        handler = await build(app(api))
        first = await send(handler, event("available", "e1"))
        second = await send(handler, event("deregistered", "e2"))
        assert first.delivered and second.delivered
        [parent] = api.parents()
        [reply] = api.replies(parent.ts)
        assert first.reference == f"{CHANNEL}/{parent.ts}"
        assert second.reference == f"{CHANNEL}/{reply.ts}"
        assert "deregistered" in reply.text, "the reply names the new state"
        assert parent.edits == 1 and "deregistered" in parent.text, "the parent shows it now"
        history = json.dumps(parent.blocks[-1], ensure_ascii=False)
        assert "available 1 May 12:34" in history and "→ deregistered" in history
        assert [c.method for c in api.calls] == ["chat.postMessage"] * 2 + ["chat.update"]
        for action, count in (("started", 1), ("replied", 1), ("updated", 1), ("restarted", 0)):
            assert conversations(handler, action) == count

    async def test_the_kept_message_is_the_newest_payload_in_amid_s_compact_json(
        self, api: SlackApi, build: Build
    ) -> None:
        store = MemoryStore(3600)
        handler = await build(app(api), store)
        await send(handler, event("available", "e1"))
        await send(handler, event("deregistered", "e2"))
        kept = await store.conversation(handler.name, "ami-0123456789example")
        assert kept is not None
        newest = handler.render(event("deregistered", "e2"))["first event of the key"][0]
        assert kept.shown == jsoncodec.dumps(newest["body"]), "compact, non-ASCII as is"

    async def test_an_older_event_arriving_late_leaves_the_parent_on_the_newest_state(
        self, api: SlackApi, build: Build
    ) -> None:
        handler = await build(app(api))
        late = Notification(
            dataclasses.replace(seed_event("available", time="2025-05-01T09:12:00Z"), id="e0"), {}
        )
        await send(handler, event("deregistered", "e1"))  # 12:34
        await send(handler, late)  # 09:12 the same day, delivered after
        [parent] = api.parents()
        [reply] = api.replies(parent.ts)
        assert "available" in reply.text, "the reply names the late event's state"
        assert parent.edits == 1 and "deregistered" in parent.text, "the parent stays newest"
        history = json.dumps(parent.blocks[-1], ensure_ascii=False)
        assert "available 1 May 09:12 → deregistered 1 May 12:34" in history

    async def test_the_update_carries_no_poster_name_or_icon(
        self, api: SlackApi, build: Build
    ) -> None:
        handler = await build(app(api, username="amid", icon_emoji=":robot_face:"))
        await send(handler, event("available", "e1"))
        await send(handler, event("deregistered", "e2"))
        assert all(call.body["username"] == "amid" for call in api.posts())
        [update] = api.of("chat.update")
        assert not update.body.keys() & {"username", "icon_emoji", "thread_ts"}

    async def test_two_images_are_two_conversations(self, api: SlackApi, build: Build) -> None:
        handler = await build(app(api))
        await send(handler, event("available", "e1", "ami-000000000000000a1"))
        await send(handler, event("available", "e2", "ami-000000000000000b2"))
        assert len(api.parents()) == 2

    async def test_thread_by_groups_what_it_names(self, api: SlackApi, build: Build) -> None:
        handler = await build(app(api, thread_by="{{ region }}"))
        await send(handler, event("available", "e1", "ami-000000000000000a1"))
        await send(handler, event("available", "e2", "ami-000000000000000b2"))
        [parent] = api.parents()
        assert len(api.replies(parent.ts)) == 1

    async def test_a_failed_update_is_retried_alone_never_the_reply(
        self, api: SlackApi, build: Build
    ) -> None:
        handler = await build(app(api))
        await send(handler, event("available", "e1"))
        api.then("chat.update", Scripted("internal_error"), Scripted("internal_error"))
        api.then("chat.update", Scripted("internal_error"))
        failed = await send(handler, event("deregistered", "e2"))
        assert not failed.delivered and failed.attempts == 3
        redelivered = await send(handler, event("deregistered", "e2"))  # SQS brings it back
        assert redelivered.delivered
        [parent] = api.parents()
        assert len(api.replies(parent.ts)) == 1, "one reply for the event, whatever followed"
        assert parent.edits == 1
        assert len(api.of("chat.update")) == 4

    async def test_events_in_flight_in_one_or_two_copies_start_exactly_one_conversation(
        self, api: SlackApi, build: Build
    ) -> None:
        first, second = await build(app(api)), await build(app(api))
        results = await asyncio.gather(
            *(
                send(handler, event(state, f"e{n}"))
                for n, (handler, state) in enumerate(
                    [(first, "available"), (first, "failed"), (second, "disabled")]
                )
            )
        )
        assert all(result.delivered for result in results)
        [parent] = api.parents()
        assert len(api.replies(parent.ts)) == 2

    async def test_an_event_waits_for_another_copys_parent_within_a_bound(
        self, api: SlackApi, resources: HandlerResources
    ) -> None:
        store = MemoryStore(3600)
        config = parse_config(config_text(app(api, timeout="1s")), env={})
        shared = dataclasses.replace(resources, conversations=store)
        handler = build_handler(config.handlers[0], config, shared)
        assert isinstance(handler, SlackAppHandler)
        try:
            # Another replica holds the key and has not posted yet.
            held = claim_conversation("other-replica/e0", 60)
            await store.change_conversation(handler.name, "ami-0123456789example", held, 60)
            busy = await send(handler, event("failed", "e1"), attempts=1)
            assert not busy.delivered and busy.retryable and busy.reason == "conversation_busy"
            assert api.calls == [], "nothing posted while another copy holds the key"
            # That replica died: its claim runs out and this event starts the conversation.
            short = claim_conversation("other-replica/e0", 0.2)
            expired = Conversation(owner="other-replica/e0", claimed_until=0)
            await store.change_conversation(
                handler.name, "ami-0123456789example", lambda old, now: expired, 60
            )
            await store.change_conversation(handler.name, "ami-0123456789example", short, 60)
            assert (await send(handler, event("failed", "e1"))).delivered
            assert len(api.parents()) == 1
        finally:
            await handler.aclose()

    async def test_a_parent_that_could_not_be_posted_frees_the_key(
        self, api: SlackApi, build: Build
    ) -> None:
        handler = await build(app(api))
        api.then("chat.postMessage", Scripted("internal_error"))
        assert not (await send(handler, event("available", "e1"), attempts=1)).delivered
        assert (await send(handler, event("deregistered", "e2"))).delivered
        [parent] = api.parents()
        assert "deregistered" in parent.text and api.replies(parent.ts) == []

    @pytest.mark.parametrize("at", ["reply", "update"])
    async def test_a_deleted_parent_starts_a_new_conversation(
        self, api: SlackApi, build: Build, at: str
    ) -> None:
        handler = await build(app(api))
        await send(handler, event("available", "e1"))
        [old] = api.parents()
        if at == "reply":
            api.delete(old.ts)
        else:
            api.then("chat.update", Scripted("cant_update_message"))
        result = await send(handler, event("deregistered", "e2"))
        assert result.delivered
        new = [parent for parent in api.parents() if parent.ts != old.ts]
        assert len(new) == 1 and "deregistered" in new[0].text
        assert "available" in json.dumps(new[0].blocks[-1]), "the history goes on"
        assert conversations(handler, "restarted") == 1
        await send(handler, event("disabled", "e3"))
        assert len(api.replies(new[0].ts)) == 1, "later events thread under the new parent"


class TestSlackAnswers:
    async def test_invalid_auth_is_permanent_logged_with_its_code_never_the_token(
        self, api: SlackApi, build: Build, caplog: pytest.LogCaptureFixture
    ) -> None:
        handler = await build(app(api, token="xoxb-revoked-s3cr3t"))
        caplog.set_level(logging.DEBUG)
        with capture_logs() as logs:
            result = await send(handler, event("available", "e1"))
        assert not result.delivered and not result.retryable
        assert result.reason == "slack_invalid_auth" and result.attempts == 1
        assert any("invalid_auth" in str(line.get("error")) for line in logs)
        everything = json.dumps(logs, default=str) + caplog.text
        assert "s3cr3t" not in everything and TOKEN not in everything
        assert len(api.calls) == 1, "slack-sdk's own retries are off"

    async def test_ratelimited_honours_retry_after(self, api: SlackApi, build: Build) -> None:
        handler = await build(app(api))
        api.then("chat.postMessage", Scripted(status=429, retry_after=61))
        result = await send(handler, event("available", "e1"))
        assert not result.delivered and result.retryable
        assert (result.reason, result.retry_after) == ("slack_ratelimited", 61)
        assert len(api.calls) == 1

    async def test_a_5xx_is_retried(self, api: SlackApi, build: Build) -> None:
        handler = await build(app(api))
        api.then("chat.postMessage", Scripted(status=503))
        result = await send(handler, event("available", "e1"))
        assert result.delivered and result.attempts == 2

    async def test_posts_are_paced_per_channel(self, api: SlackApi, build: Build) -> None:
        one = await build(app(api, name="a"))
        other = await build(app(api, name="b"))
        elsewhere = await build(app(api, name="c", channel="C0000000002"))
        assert one._limit.limiter is other._limit.limiter
        assert one._limit.limiter is not elsewhere._limit.limiter


class TestOtherMessages:
    async def test_a_digest_is_one_new_message(self, api: SlackApi, build: Build) -> None:
        handler = await build(app(api))
        await send(handler, event("available", "e1", "ami-00000000000000000"))
        result = await send(handler, seed_digest(3))
        assert result.delivered
        assert len(api.parents()) == 2 and not api.of("chat.update")
        digest = api.posts()[-1]
        assert "thread_ts" not in digest.body and "3 AMIs deregistered" in digest.body["text"]

    async def test_an_expectations_overdue_and_recovered_share_a_thread(
        self, api: SlackApi, build: Build
    ) -> None:
        handler = await build(app(api))
        due = datetime(2026, 12, 4, 6, tzinfo=UTC)
        overdue = ExpectationNotice("nightly", "overdue", None, due, "every 24h", id="n-o")
        recovered = dataclasses.replace(overdue, status="recovered", id="n-r", checked=due)
        assert (await send(handler, overdue)).delivered
        assert (await send(handler, recovered)).delivered
        [parent] = api.parents()
        [reply] = api.replies(parent.ts)
        assert "nightly" in reply.text
        assert parent.edits == 1 and "recovered" in json.dumps(parent.blocks)

    async def test_the_dry_run_shows_both_calls_with_the_token_redacted(
        self, api: SlackApi, build: Build
    ) -> None:
        handler = await build(app(api))
        shown = handler.render(event("available", "e1"))
        [post] = shown["first event of the key"]
        reply, update = shown["later events"]
        assert (post["method"], reply["method"], update["method"]) == (
            "chat.postMessage",
            "chat.postMessage",
            "chat.update",
        )
        assert reply["body"]["thread_ts"] and update["body"]["ts"]
        for call in (post, reply, update):
            assert_valid_slack_payload(call["body"])
        assert TOKEN not in json.dumps(shown) and "Bearer ***" in json.dumps(shown)
        assert shown["thread_by"] == "ami-0123456789example"
        assert api.calls == []
