"""A Slack-compatible Web API server on 127.0.0.1 for the app-mode tests.

It speaks what amid calls (chat.postMessage, chat.update, auth.test, conversations.info)
the way Slack does: HTTP 200 with `{"ok": false, "error": ...}` for errors, HTTP 429 with
`Retry-After` when rate limited, real-looking `ts` values ("1733312345.000100"). It keeps
the channel's messages, so a test reads what a person would see, records every call, and
can be scripted per call (`then`), or have a parent deleted (`delete`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.local_http import serve
from tests.slack_blocks import assert_valid_slack_payload

TOKEN = "xoxb-0000000000-0000000000000-s3cr3tB0tT0k3nXXXXXXXXXX"
CHANNEL = "C0123456789"


@dataclass(frozen=True)
class Call:
    method: str
    body: dict[str, Any]
    authorization: str


@dataclass
class Message:
    ts: str
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    edits: int = 0


@dataclass(frozen=True)
class Scripted:
    """One scripted answer: an error code (HTTP 200, ok false), or an HTTP status."""

    error: str = ""
    status: int = 200
    retry_after: float | None = None


@dataclass
class SlackApi:
    token: str = TOKEN
    members_of: set[str] = field(default_factory=lambda: {CHANNEL})
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)  # ts -> message
    deleted: set[str] = field(default_factory=set)
    invalid: list[str] = field(default_factory=list)  # payloads Block Kit refused, and why
    url: str = ""
    _script: dict[str, deque[Scripted]] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    _runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    async def start(self) -> SlackApi:
        self._runner, self.url = await serve(self._handle)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        assert self.invalid == [], f"payloads Slack would refuse: {self.invalid}"

    def then(self, method: str, *answers: Scripted) -> None:
        """The next calls of `method` get these answers, in order, before the normal one."""
        self._script.setdefault(method, deque()).extend(answers)

    def delete(self, ts: str) -> None:
        """A person deleted this message: updating it or replying to it now fails."""
        self.deleted.add(ts)

    # --- what a person sees ---

    def parents(self) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts is None]

    def replies(self, parent_ts: str) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts == parent_ts]

    def posts(self) -> list[Call]:
        return [call for call in self.calls if call.method == "chat.postMessage"]

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # --- the server ---

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._counter):06d}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.path.removeprefix("/api/")
        raw = await request.read()
        try:
            body: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            body = dict(await request.post())  # form-encoded
        body = {**request.query, **body}  # a GET's parameters
        authorization = request.headers.get("Authorization", "")
        self.calls.append(Call(method, body, authorization))
        script = self._script.get(method)
        if script:
            scripted = script.popleft()
            headers = {}
            if scripted.retry_after is not None:
                headers["Retry-After"] = f"{scripted.retry_after:g}"
            if scripted.status != 200:
                answer = {"ok": False, "error": scripted.error or "ratelimited"}
                return web.json_response(answer, status=scripted.status, headers=headers)
            return web.json_response({"ok": False, "error": scripted.error}, headers=headers)
        if authorization != f"Bearer {self.token}":
            return _error("invalid_auth" if authorization else "not_authed")
        answer = getattr(self, "_" + method.replace(".", "_"), None)
        if answer is None:
            return _error("unknown_method")
        result: web.StreamResponse = answer(body)
        return result

    def _valid(self, body: dict[str, Any]) -> bool:
        """Checked with slack-sdk's Block Kit models, as every Slack payload in the tests."""
        try:
            assert_valid_slack_payload(body)
        except Exception as error:  # an assertion, or a model refusing a block
            self.invalid.append(f"{type(error).__name__}: {error}")
            return False
        return True

    def _chat_postMessage(self, body: dict[str, Any]) -> web.StreamResponse:
        channel = str(body.get("channel", ""))
        if channel not in self.members_of:
            return _error("not_in_channel" if channel.startswith("C") else "channel_not_found")
        if not self._valid(body):
            return _error("invalid_blocks")
        thread_ts = body.get("thread_ts")
        if thread_ts is not None and (thread_ts in self.deleted or thread_ts not in self.messages):
            return _error("thread_not_found")
        ts = self._ts()
        self.messages[ts] = Message(ts, channel, body["text"], body.get("blocks", []), thread_ts)
        return web.json_response(
            {"ok": True, "channel": channel, "ts": ts, "message": {"text": body["text"], "ts": ts}}
        )

    def _chat_update(self, body: dict[str, Any]) -> web.StreamResponse:
        ts = str(body.get("ts", ""))
        if ts in self.deleted or ts not in self.messages:
            return _error("message_not_found")
        if not self._valid(body):
            return _error("invalid_blocks")
        message = self.messages[ts]
        if message.channel != body.get("channel"):
            return _error("channel_not_found")
        message.text, message.blocks = body["text"], body.get("blocks", [])
        message.edits += 1
        return web.json_response({"ok": True, "channel": message.channel, "ts": ts})

    def _auth_test(self, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(
            {
                "ok": True,
                "url": "https://example.slack.com/",
                "team": "Example",
                "user": "amid",
                "team_id": "T0000000000",
                "user_id": "U0000000000",
                "bot_id": "B0000000000",
            }
        )

    def _conversations_info(self, body: dict[str, Any]) -> web.StreamResponse:
        channel = str(body.get("channel", ""))
        if not channel.startswith("C"):
            return _error("channel_not_found")
        info = {"id": channel, "name": "ops", "is_member": channel in self.members_of}
        return web.json_response({"ok": True, "channel": info})


def _error(code: str) -> web.StreamResponse:
    return web.json_response({"ok": False, "error": code})
