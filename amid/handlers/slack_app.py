"""`slack` in app mode (SPEC 3d): a bot token, one living conversation per `thread_by` key.

The Web API is spoken through slack-sdk's `AsyncWebClient` on amid's own aiohttp session,
with its retry handlers off (amid's `deliver` retries, once) and a logger that says
nothing (slack-sdk logs request details at debug). The conversation's rules are pure
(`conversation.py`); this module does the calls and keeps the conversation in the store
through the narrow door it is given (`ConversationStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from amid import __version__, jsoncodec
from amid.config import Config, SlackHandlerConfig
from amid.handlers import ratelimit
from amid.handlers.base import (
    Digest,
    ExpectationNotice,
    HandlerError,
    Sendable,
    report_template_failures,
    single_event,
)
from amid.handlers.conversation import Answer, Call, after, opening
from amid.handlers.http import parse_retry_after
from amid.handlers.slack import SlackHandler, cut, escape
from amid.metrics import Metrics
from amid.store.base import (
    Conversation,
    ConversationStep,
    ConversationStore,
    Entry,
    LedgerUnavailable,
    claim_conversation,
    release_conversation,
    reply_in_conversation,
    start_conversation,
)
from amid.templates import TemplateError, render, template_context

if TYPE_CHECKING:
    from amid.handlers import HandlerResources

_log = structlog.get_logger("amid.handlers.slack")
_T = TypeVar("_T")

KEEP_WITHOUT_MEMORY = 30 * 86400.0  # how long a conversation is kept when enrich.remember is 0
WAIT_FOR_PARENT = 5.0  # how long an event waits for another copy's parent, per try (at most)
CLAIM_LEASE = 30.0  # how long a claim holds a key while its parent is posted (at least)
_POLL = 0.05
_HISTORY_MAX = 2000
REDACTED = "Bearer ***"
_POST_ONLY = frozenset({"username", "icon_emoji", "icon_url", "thread_ts", "reply_broadcast"})


def _quiet_logger() -> logging.Logger:
    """slack-sdk's logger: disabled, so no request detail (headers, bodies) is ever logged."""
    logger = logging.getLogger("amid.handlers.slack.sdk")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    logger.disabled = True
    return logger


def web_client(config: SlackHandlerConfig, session: aiohttp.ClientSession) -> AsyncWebClient:
    """slack-sdk's client for the handler's token and api_url, on amid's session."""
    assert config.token is not None  # noqa: S101 - app mode
    return AsyncWebClient(
        token=config.token.get_secret_value(),
        base_url=config.api_url,
        session=session,
        logger=_quiet_logger(),
        retry_handlers=[],  # amid's deliver() retries; the client must not as well
        user_agent_prefix=f"amid/{__version__}",
    )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def history_entry(state: str, at: datetime | None) -> Entry:
    """One step of the history line: (its time, `available 1 May 09:12`, in UTC)."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    return (round(when.timestamp(), 3), f"{state} {when.day} {when:%b %H:%M}")


def with_history(payload: dict[str, Any], history: tuple[Entry, ...]) -> dict[str, Any]:
    """The parent: the newest event's message, and the conversation's history line below."""
    if not history or not isinstance(payload.get("blocks"), list):
        return payload
    line = cut(escape(" → ".join(text for _, text in history)), _HISTORY_MAX)
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}
    return {**payload, "blocks": [*payload["blocks"][:48], context]}


def _for_update(payload: dict[str, Any]) -> dict[str, Any]:
    """chat.update takes neither a poster's name nor its icon, nor a thread."""
    return {name: value for name, value in payload.items() if name not in _POST_ONLY}


def parent_of(conversation: Conversation, fallback: dict[str, Any]) -> dict[str, Any]:
    """What the parent shows: the newest event's message with the history line."""
    shown: dict[str, Any] = json.loads(conversation.shown) if conversation.shown else fallback
    return with_history(shown, conversation.history)


class SlackAppHandler(SlackHandler):
    """Shares the webhook mode's messages (`_compose`...); sends them as a conversation."""

    def __init__(
        self,
        config: SlackHandlerConfig,
        http_session: aiohttp.ClientSession,
        metrics: Metrics,
        conversations: ConversationStore | None,
        *,
        keep: float,
        timeout: float = 10.0,
        pool: ratelimit.RateLimiterPool = ratelimit.WEBHOOKS,
    ) -> None:
        assert config.token is not None and config.channel  # noqa: S101 - the config model
        self.name = config.name
        self._config = config
        self._metrics = metrics
        self._channel = config.channel
        if conversations is None:  # built without a store: the conversations live in process
            from amid.store.memory import MemoryStore

            conversations = MemoryStore(keep)
        self._conversations = conversations
        self._keep = keep
        # A second event waits for the first's parent this long per try (inside its timeout);
        # a claim outlives the post it covers, so a slow post is not raced by another.
        self._wait = min(WAIT_FOR_PARENT, timeout / 2)
        self._lease = max(CLAIM_LEASE, timeout + 5.0)
        self._owner = _owner()
        self._client = web_client(config, http_session)
        # Posts are paced per channel, as the webhook mode paces per URL.
        self._limit = pool.acquire(
            f"slack-app {config.api_url} {config.channel}", config.rate_limit
        )
        metrics.prime_conversations(self.name)

    @classmethod
    def build(
        cls, handler: SlackHandlerConfig, config: Config, resources: HandlerResources
    ) -> SlackAppHandler:
        return cls(
            handler,
            resources.http,
            resources.metrics,
            resources.conversations,
            keep=config.enrich.remember or KEEP_WITHOUT_MEMORY,
            timeout=config.timeout_for(handler),
        )

    def __repr__(self) -> str:
        return f"SlackAppHandler(name={self.name!r})"

    # --- dry run ---

    def render(self, message: Sendable) -> dict[str, Any]:
        """The Web API calls `send` makes (the token redacted): a digest's one post; an
        event's parent when it starts its key's conversation, else the reply and the update."""
        payload = super().render(message)
        post = self._call_shown("chat.postMessage", payload)
        if isinstance(message, Digest):
            return {"calls": [post]}
        key, _, entry = self._key(message)
        reply = self._call_shown("chat.postMessage", {**payload, "thread_ts": "<parent ts>"})
        update = self._call_shown(
            "chat.update",
            {
                **_for_update(with_history(payload, ((0.0, "earlier states…"), entry))),
                "channel": "<parent channel>",
                "ts": "<parent ts>",
            },
        )
        return {"thread_by": key, "first event of the key": [post], "later events": [reply, update]}

    def _call_shown(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "method": method,
            "url": self._config.api_url + method,
            "headers": {"Authorization": REDACTED},
            "body": body,
        }

    # --- sending ---

    async def send(self, message: Sendable) -> str | None:
        if isinstance(message, Digest):
            payload, failures = self._compose_digest(message)
            self._count_failures(failures, {"digest_events": message.count})
            answer = await self._api("start", "chat.postMessage", payload)
            after("start", answer)  # raises the failure
            return f"{answer.channel}/{answer.ts}"
        key, event_id, entry = self._key(message)
        if isinstance(message, ExpectationNotice):
            payload, failures = self._compose_notice(message)
            context: dict[str, Any] = {"expectation": message.expectation}
        else:
            notification = single_event(self.name, message)
            payload, failures = self._compose(notification)
            context = notification.event.log_context()
        self._count_failures(failures, context)
        return await self._converse(key, event_id, entry, payload)

    def _key(self, message: Sendable) -> tuple[str, str, Entry]:
        """(the conversation's key, the event's id, its history entry)."""
        if isinstance(message, ExpectationNotice):
            episode = f"{message.due.timestamp():.0f}"
            event_id = message.id or f"{message.expectation}/{episode}/{message.status}"
            key = f"expectation/{message.expectation}/{episode}"
            return key, event_id, history_entry(message.status, message.at)
        notification = single_event(self.name, message)
        event = notification.event
        try:
            key = render(
                self._config.thread_by, template_context(event, dict(notification.image))
            ).strip()
        except TemplateError as error:
            self._count_failures([f"thread_by: {error}"], event.log_context())
            key = ""
        return key or event.image_id, event.id, history_entry(event.state, event.occurred_at)

    def _count_failures(self, failures: list[str], context: dict[str, Any]) -> None:
        report_template_failures(self._metrics, _log, self.name, failures, context)

    async def _converse(
        self, key: str, event_id: str, entry: Entry, payload: dict[str, Any]
    ) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        owner = f"{self._owner}/{event_id}"  # each event claims for itself, even in one process
        while True:
            conversation = await self._store(self._conversations.conversation(self.name, key))
            first = opening(conversation, event_id, owner, time.time())
            if first == "wait":
                if loop.time() >= deadline:
                    raise HandlerError(
                        "the conversation's first message is still being posted by another copy",
                        retryable=True,
                        reason="conversation_busy",
                    )
                await asyncio.sleep(_POLL)
                continue
            if first == "claim":
                lease = claim_conversation(owner, self._lease)
                conversation = await self._change(key, lease)
                if conversation.started or conversation.owner != owner:
                    continue  # another event got there first: read what it did
                return await self._start(key, event_id, entry, payload, conversation, "start")
            assert conversation is not None  # noqa: S101 - opening() said it is started
            return await self._thread(key, event_id, entry, payload, conversation, first)

    async def _start(
        self,
        key: str,
        event_id: str,
        entry: Entry,
        payload: dict[str, Any],
        conversation: Conversation,
        call: Call,
    ) -> str:
        """Post the parent (first, or again: `restart`) and keep its ts."""
        shown = jsoncodec.dumps(payload)
        parent = parent_of(conversation.told(event_id, "", entry, shown), payload)
        try:
            answer = await self._api(call, "chat.postMessage", parent)
            after(call, answer)
        except BaseException:
            if call == "start":  # the key is free again: its next event tries
                with contextlib.suppress(HandlerError):
                    await self._change(key, release_conversation(conversation.owner or ""))
            raise
        started = start_conversation(answer.channel, answer.ts, event_id, entry, shown)
        await self._change(key, started)
        self._metrics.slack_conversations.labels(self.name, f"{call}ed").inc()
        _log.info(
            "slack conversation started" if call == "start" else "slack conversation restarted",
            handler=self.name,
            channel=answer.channel,
            ts=answer.ts,
        )
        return f"{answer.channel}/{answer.ts}"

    async def _thread(
        self,
        key: str,
        event_id: str,
        entry: Entry,
        payload: dict[str, Any],
        conversation: Conversation,
        call: Call,
    ) -> str:
        """Reply in the thread (unless done before), then update the parent."""
        reply_ts = conversation.reply_to(event_id) or ""
        while True:
            if call == "reply":
                answer = await self._api(
                    "reply", "chat.postMessage", {**payload, "thread_ts": conversation.ts}
                )
                next_call = after("reply", answer)
                if answer.ok:
                    reply_ts = answer.ts
                    shown = jsoncodec.dumps(payload)
                    conversation = await self._change(
                        key, reply_in_conversation(event_id, reply_ts, entry, shown)
                    )
                    self._metrics.slack_conversations.labels(self.name, "replied").inc()
            else:  # update
                parent = _for_update(parent_of(conversation, payload))
                answer = await self._api(
                    "update",
                    "chat.update",
                    {**parent, "channel": conversation.channel, "ts": conversation.ts},
                )
                next_call = after("update", answer)
                if answer.ok:
                    self._metrics.slack_conversations.labels(self.name, "updated").inc()
            if next_call is None:
                return f"{conversation.channel}/{reply_ts}"
            if next_call == "restart":
                await self._limit.wait()  # a second post in this try
                return await self._start(key, event_id, entry, payload, conversation, "restart")
            call = next_call

    # --- Slack and the store ---

    async def _api(self, call: Call, method: str, body: dict[str, Any]) -> Answer:
        """One Web API call, its answer; transport failures as retryable HandlerErrors."""
        body = {**body, "channel": body.get("channel") or self._channel}
        try:
            response = await self._client.api_call(method, json=body)
        except SlackApiError as error:
            return _failed(error.response)
        except (aiohttp.ServerTimeoutError, TimeoutError):  # the client's own timeout
            raise HandlerError(
                f"slack {method} timed out", retryable=True, reason="timeout"
            ) from None
        except aiohttp.ClientConnectionError as error:
            raise HandlerError(
                f"slack {method} failed: {type(error).__name__}",
                retryable=True,
                reason="connection",
            ) from None
        except aiohttp.ClientError as error:
            raise HandlerError(
                f"slack {method} failed: {type(error).__name__}",
                retryable=True,
                reason="http_client",
            ) from None
        except Exception as error:  # noqa: BLE001 - not chained: nothing of the request shows
            raise HandlerError(
                f"slack {method} gave an unreadable answer ({type(error).__name__})",
                retryable=True,
                reason="slack_unreadable",
            ) from None
        data = response.data if isinstance(response.data, dict) else {}
        return Answer(
            ok=True,
            status=response.status_code,
            channel=str(data.get("channel") or body["channel"]),
            ts=str(data.get("ts") or ""),
        )

    async def _change(self, key: str, step: ConversationStep) -> Conversation:
        return await self._store(
            self._conversations.change_conversation(self.name, key, step, self._keep)
        )

    async def _store(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except LedgerUnavailable as error:
            raise HandlerError(
                f"the conversation store is unavailable: {error}",
                retryable=True,
                reason="store_unavailable",
            ) from None

    async def aclose(self) -> None:
        self._limit.release()


def _failed(response: Any) -> Answer:
    status = getattr(response, "status_code", None) or getattr(response, "status", 0) or 0
    data = getattr(response, "data", None)
    headers = getattr(response, "headers", None) or {}
    error = data.get("error") if isinstance(data, dict) else None
    return Answer(
        ok=False,
        error=str(error or ""),
        status=int(status),
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )
