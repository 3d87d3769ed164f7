"""A poller hands the messages it received to their handlers before it builds its next receive
(amid/daemon.py `_hand_over`): the next request's CPU stays out of each event's latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from amid.handlers import http
from amid.pipeline.source import Message, SqsSource
from tests.helpers import event_body, make_config, make_queue, running_daemon, wait_for
from tests.local_http import serve


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
async def test_the_handler_posts_before_the_poller_sends_its_next_receive(
    sqs: Any, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    queue, _ = await make_queue(sqs)
    await sqs.send_message(QueueUrl=queue, MessageBody=event_body("available"))
    steps: list[str] = []
    receive, deliver = SqsSource.receive, http.deliver

    async def recording_receive(self: SqsSource, max_messages: int) -> list[Message]:
        steps.append("receive")
        messages = await receive(self, max_messages)
        steps.append(f"received {len(messages)}")
        return messages

    async def recording_deliver(session: Any, **request: Any) -> None:
        steps.append("post")
        await deliver(session, **request)

    monkeypatch.setattr(SqsSource, "receive", recording_receive)
    monkeypatch.setattr(http, "deliver", recording_deliver)
    posts: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        posts.append(await request.read())
        return web.Response(status=204)

    runner, url = await serve(handle)
    dedupe = (
        f"backend: sqlite, path: {tmp_path / 'dedupe.sqlite3'}"
        if backend == "sqlite"
        else "backend: memory"
    )
    handler = f"  - name: w\n    type: webhook\n    url: {url}/hook\n"
    config = make_config(queue, moto_url, handler, dedupe=dedupe, queue_extra="  pollers: 1")
    try:
        async with running_daemon(config):
            await wait_for(lambda: len(posts) == 1)
    finally:
        await runner.cleanup()
    got = steps.index("received 1")
    assert steps[got + 1] == "post", steps
