"""Handler test fixtures: a scripted HTTP receiver on 127.0.0.1, real resources, seed events."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from amid.aws import AwsClients
from amid.config import parse_config
from amid.events import AmiStateChange
from amid.handlers import Handler, HandlerResources, Notification, build_handler
from amid.handlers.base import Digest
from amid.metrics import Metrics
from tests.local_http import serve
from tests.moto_server import free_port

HERE = Path(__file__).parent
SEED = HERE / "seed"
GOLDEN = HERE / "golden"
EVENT_ID = "7bf73129-1428-4cd3-a780-95db273d1602"
EVENT_TIME = "2025-05-01T12:34:56Z"


def seed_event(state: str = "available", **changes: Any) -> AmiStateChange:
    """A seed example with a real id and time; `changes` override envelope or detail keys."""
    raw = json.loads((SEED / f"{state}.json").read_text())
    raw["id"], raw["time"] = EVENT_ID, EVENT_TIME
    for key, value in changes.items():
        if key in raw["detail"]:
            raw["detail"][key] = value
        else:
            raw[key] = value
    detail = raw["detail"]
    return AmiStateChange(
        id=raw["id"],
        image_id=detail["ImageId"],
        state=detail["State"],
        error_message=detail.get("ErrorMessage") or "",
        account=raw["account"],
        region=raw["region"],
        time=raw["time"],
        raw=raw,
    )


def notify(state: str = "available", image: Mapping[str, Any] | None = None) -> Notification:
    return Notification(event=seed_event(state), image=image or {})


def assert_golden(name: str, payload: Any) -> None:
    """Compare with golden/<name>; AMID_UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("AMID_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    assert json.loads(path.read_text()) == payload


def template_failures(resources: HandlerResources, handler: str) -> float:
    value = resources.metrics.registry.get_sample_value(
        "amid_template_failures_total", {"handler": handler}
    )
    return value or 0.0


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class Receiver:
    """Stands in for Slack or a webhook endpoint: records requests, answers from a script."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: deque[Reply] = deque()
        self.default = Reply()
        self.released = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def then(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        self.script.append(Reply(status, body, headers or {}))

    def then_hang(self) -> None:
        self.script.append(Reply(hang=True))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Received(
                time.monotonic(),
                request.method,
                request.path_qs,
                dict(request.headers),
                await request.read(),
            )
        )
        reply = self.script.popleft() if self.script else self.default
        if reply.hang:
            # Until the client gives up and closes the connection (or the test ends).
            while request.transport is not None and not request.transport.is_closing():
                if self.released.is_set():
                    break
                await asyncio.sleep(0.01)
            else:
                self.disconnected.set()
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    async def start(self) -> None:
        self._runner, self.url = await serve(self._handle)

    async def stop(self) -> None:
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def resources() -> AsyncIterator[HandlerResources]:
    async with aiohttp.ClientSession() as http, AwsClients() as aws:
        yield HandlerResources(http=http, aws=aws, metrics=Metrics())


MakeHandler = Callable[[dict[str, Any]], Awaitable[Any]]


@pytest.fixture
async def make_handler(resources: HandlerResources) -> AsyncIterator[MakeHandler]:
    """Build a handler from one `handlers:` item through the real config loader."""
    built: list[Handler] = []

    async def make(item: dict[str, Any]) -> Any:
        text = yaml.safe_dump(
            {"queue": {"url": "http://127.0.0.1:1/123456789012/q"}, "handlers": [item]}
        )
        config = parse_config(text, env={})
        handler = build_handler(config.handlers[0], config, resources)
        built.append(handler)
        return handler

    yield make
    for handler in built:
        await handler.aclose()


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


# --- digests ---


def seed_digest(
    count: int,
    state: str = "deregistered",
    image: Mapping[str, Any] | None = None,
    states: list[str] | None = None,
    **changes: Any,
) -> Digest:
    """A digest of `count` seed events with distinct ids and image ids (states cycle)."""
    notifications = []
    for number in range(count):
        this = states[number % len(states)] if states else state
        event = seed_event(this, ImageId=f"ami-{number:017x}", **changes)
        raw = {**event.raw, "id": f"{EVENT_ID[:-4]}{number:04d}"}
        raw["resources"] = [f"arn:aws:ec2:{event.region}::image/{event.image_id}"]
        notifications.append(
            Notification(dataclasses.replace(event, id=raw["id"], raw=raw), image or {})
        )
    group = {"account": notifications[0].event.account, "region": notifications[0].event.region}
    if not states:
        group["detail.State"] = state
    return Digest(tuple(notifications), group)
