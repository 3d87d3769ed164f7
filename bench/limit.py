"""The limits: receive (10 per call) and batch-delete, with amid's poller count; with
`--post URL` (*limit+POST*) each message body is also POSTed to URL before the delete.

    python -m bench.limit --endpoint URL --queue-url URL --pollers 2 [--post URL]

Each poller receives, hands the batch to a task and receives again, as amid's pollers do
(amid does not wait for handling before its next receive either); at most `--in-flight`
messages are awaiting deletion. With `--post`, the task POSTs every message of the batch at
once (one keep-alive aiohttp session, as amid's webhook handler uses) and deletes, in one
DeleteMessageBatch, the messages whose POST got a 2xx: no decoding, no ledger, no routing,
no retries, no logs or metrics. Prints "ready" once polling, stops on SIGTERM and prints
{"deleted": n, "posted": n}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

import aiohttp

from amid.eventloop import loop_factory
from amid.eventloop import run as run_on
from bench.common import sqs_client


class Limit:
    def __init__(
        self,
        sqs: Any,
        url: str,
        in_flight: int,
        http: aiohttp.ClientSession | None = None,
        hook: str = "",
    ) -> None:
        self.sqs = sqs
        self.url = url
        self.http = http  # None: the plain limit, no POSTs
        self.hook = hook
        self.deleted = 0
        self.posted = 0
        self.slots = asyncio.Semaphore(max(in_flight // 10, 1))
        self.tasks: set[asyncio.Task[None]] = set()

    async def poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.slots.acquire()
            response = await self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            if not messages:
                self.slots.release()
                continue
            task = asyncio.create_task(self.delete(messages))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def delete(self, messages: list[dict[str, Any]]) -> None:
        try:
            if self.http is not None:
                posted = await asyncio.gather(*(self.post(m["Body"]) for m in messages))
                messages = [m for m, ok in zip(messages, posted, strict=True) if ok]
                self.posted += len(messages)
                if not messages:
                    return
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            response = await self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
            self.deleted += len(response.get("Successful", []))
        finally:
            self.slots.release()

    async def post(self, body: str) -> bool:
        assert self.http is not None  # only called with --post
        headers = {"Content-Type": "application/json"}
        try:
            async with self.http.post(self.hook, data=body.encode(), headers=headers) as response:
                await response.read()
                return 200 <= response.status < 300
        except aiohttp.ClientError:
            return False


async def run(
    endpoint: str, url: str, pollers: int, in_flight: int, hook: str | None
) -> dict[str, int]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with sqs_client(endpoint) as sqs, aiohttp.ClientSession() as http:
        limit = Limit(sqs, url, in_flight, http if hook else None, hook or "")
        tasks = [asyncio.create_task(limit.poll(stop)) for _ in range(pollers)]
        print("ready", flush=True)
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*limit.tasks, return_exceptions=True)
        return {"deleted": limit.deleted, "posted": limit.posted}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--pollers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--post", help="POST every message body here before deleting it")
    args = parser.parse_args()
    # amid's own event loop (uvloop on Linux; AMID_EVENT_LOOP=asyncio for the stock one),
    # so the floors stay floors for amid on either loop.
    counts = run_on(
        run(args.endpoint, args.queue_url, args.pollers, args.in_flight, args.post),
        loop_factory(),
    )
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
