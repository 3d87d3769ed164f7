"""What the `teams` and `google_chat` handler tests share, as amid/handlers/chat.py is what
the two handlers share: two images, a handler item, a burst through the rate limit."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from amid.handlers.chat import ChatWebhookHandler
from tests.handlers.conftest import Receiver, notify

IMAGE = {
    "name": "web-2025-05-01",
    "description": "Web tier, Amazon Linux 2023",
    "tags": {"team": "platform", "build": "1234"},
}
LARGEST_IMAGE = {  # AWS's most tags, each as long as it allows: for the messages' size limits
    "name": "n" * 500,
    "description": "d" * 5000,
    "tags": {f"{n:02d}" + "k" * 126: "v" * 256 for n in range(50)},
}


def chat_item(
    kind: str, name: str, host: str, path: str, receiver: Receiver | None, options: dict[str, Any]
) -> dict[str, Any]:
    """A `kind` handler item posting to `receiver` (else to `host`) at `path`, 100 a second;
    `options` are added or override."""
    base = receiver.url if receiver is not None else host
    return {"name": name, "type": kind, "webhook_url": base + path, "rate_limit": 100, **options}


async def burst_gaps(handler: ChatWebhookHandler, receiver: Receiver, count: int) -> list[float]:
    """`count` events sent at once, each after its turn of the rate limit: the seconds between
    their arrivals at `receiver`."""

    async def paced() -> None:
        await handler.pace()
        await handler.send(notify())

    await asyncio.gather(*(paced() for _ in range(count)))
    arrivals = [request.at for request in receiver.requests]
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]
