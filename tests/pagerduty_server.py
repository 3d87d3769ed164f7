"""PagerDuty's Events API v2 on 127.0.0.1, for tests: it checks each request as PagerDuty
documents it and answers from a script.

What PagerDuty documents (developer.pagerduty.com, "Send an Alert Event" and the
Events API v2 overview), and what `problems` checks:

- a JSON object of at most 512 KB with `routing_key` (the 32-character integration
  key) and `event_action` (`trigger`, `acknowledge` or `resolve`); besides those
  only `dedup_key`, `payload`, `images`, `links`, `client` and `client_url`;
- `dedup_key` at most 255 characters; needed by `acknowledge` and `resolve`;
- for `trigger`, `payload` with `summary` (at most 1,024 characters), `source`
  and `severity` (`critical`, `error`, `warning`, `info`) required, and
  optionally `timestamp` (ISO 8601), `component`, `group`, `class`,
  `custom_details` (an object); nothing else;
- `links`: objects with `href` and an optional `text`.

A request with problems is answered 400 with PagerDuty's error body, whatever the
script says. A valid one takes the next scripted answer (202 when the script is
empty): 202 `{"status": "success", "message": "Event processed", "dedup_key": ...}`,
429 (with `Retry-After` when scripted), 400, 5xx.

The server runs on its own thread, so it answers while a test's event loop waits
and while `amid run` subprocesses post to it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.harness import _LoopThread

ROUTING_KEY_LENGTH = 32
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
TOP_LEVEL = frozenset(
    {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "images",
        "links",
        "client",
        "client_url",
    }
)
PAYLOAD = frozenset(
    {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
)
MAX_BYTES = 512 * 1024
PATH = "/v2/enqueue"


def problems(raw: bytes, content_type: str = "application/json") -> list[str]:
    """What PagerDuty would refuse in this request body; empty when it is a valid event."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        return [f"Content-Type {content_type!r} is not application/json"]
    if len(raw) > MAX_BYTES:
        return ["larger than 512 KB"]
    try:
        body = json.loads(raw)
    except ValueError:
        return ["not JSON"]
    if not isinstance(body, dict):
        return ["not a JSON object"]
    found = [f"unknown field {key!r}" for key in body if key not in TOP_LEVEL]
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != ROUTING_KEY_LENGTH:
        found.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if action not in ACTIONS:
        found.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        found.append("'dedup_key' must be a string of 1 to 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        found.append(f"'dedup_key' is required for {action}")
    if action == "trigger":
        found += _payload_problems(body.get("payload"))
    for name in ("client", "client_url"):
        if name in body and not isinstance(body[name], str):
            found.append(f"{name!r} must be a string")
    links = body.get("links", [])
    if not isinstance(links, list) or not all(
        isinstance(link, dict)
        and isinstance(link.get("href"), str)
        and isinstance(link.get("text", ""), str)
        and set(link) <= {"href", "text"}
        for link in links
    ):
        found.append("'links' must be a list of {href, text} objects")
    return found


def _payload_problems(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required for trigger and must be an object"]
    found = [f"unknown payload field {key!r}" for key in payload if key not in PAYLOAD]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        found.append("'payload.summary' is required")
    elif len(summary) > 1024:
        found.append("'payload.summary' is longer than 1024 characters")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        found.append("'payload.source' is required")
    if payload.get("severity") not in SEVERITIES:
        found.append("'payload.severity' must be one of critical, error, warning, info")
    if "timestamp" in payload:
        try:
            datetime.fromisoformat(str(payload["timestamp"]))
        except ValueError:
            found.append("'payload.timestamp' is not an ISO 8601 timestamp")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            found.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        found.append("'payload.custom_details' must be an object")
    return found


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # None: what PagerDuty answers for this status


@dataclass(frozen=True, slots=True)
class Received:
    at: float  # time.monotonic() on arrival
    raw: bytes
    problems: tuple[str, ...]
    status: int

    @property
    def body(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.raw)
        return loaded

    @property
    def accepted(self) -> bool:
        return self.status == 202

    @property
    def action(self) -> str:
        return str(self.body.get("event_action"))

    @property
    def dedup_key(self) -> str | None:
        key = self.body.get("dedup_key")
        return None if key is None else str(key)


class EventsApi:
    """`with EventsApi() as api:` ... `api.url` is the `events_url`; `api.script(429, 202)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._thread: _LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def __enter__(self) -> EventsApi:
        self._thread = _LoopThread("pagerduty")
        self.port = self._thread.call(self._serve())
        return self

    def __exit__(self, *exc_info: object) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            if self._runner is not None:
                thread.call(self._runner.cleanup(), timeout=15)
            thread.stop()

    def script(self, *replies: Reply | int) -> None:
        """The answers to the next valid requests, in order; then 202 again."""
        with self._lock:
            self._script.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def accepted(self, action: str | None = None, dedup_key: str | None = None) -> list[Received]:
        return [
            r
            for r in self.received()
            if r.accepted
            and (action is None or r.action == action)
            and (dedup_key is None or r.dedup_key == dedup_key)
        ]

    def invalid(self) -> list[Received]:
        return [r for r in self.received() if r.problems]

    async def _serve(self) -> int:
        app = web.Application(client_max_size=2 * MAX_BYTES)
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port: int = self._runner.addresses[0][1]
        return port

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        found = tuple(problems(raw, request.headers.get("Content-Type", "")))
        with self._lock:
            reply = Reply(400) if found else (self._script.popleft() if self._script else Reply())
            self._received.append(Received(time.monotonic(), raw, found, reply.status))
        body = reply.body if reply.body is not None else _answer(reply.status, raw, found)
        return web.Response(
            status=reply.status, text=body, headers=reply.headers, content_type="application/json"
        )


def _answer(status: int, raw: bytes, found: tuple[str, ...]) -> str:
    if status == 202:
        return json.dumps(
            {
                "status": "success",
                "message": "Event processed",
                "dedup_key": json.loads(raw).get("dedup_key"),
            }
        )
    if status == 400:
        errors = list(found) or ["Event object is invalid"]
        return json.dumps(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        )
    if status == 429:
        return json.dumps({"status": "throttle event", "message": "Too many requests"})
    return json.dumps({"status": "unrecognized object", "message": "Internal error"})
