"""The limit: receive (10 per call) and batch-delete, nothing else, with amid's poller count.

    python -m bench.limit --endpoint URL --queue-url URL --pollers 2

Each poller receives, hands the batch's delete to a task and receives again, as amid's
pollers do (amid does not wait for handling before its next receive either); at most
`--in-flight` messages are awaiting deletion. Prints "ready" once polling, stops on SIGTERM
and prints {"deleted": n}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from bench.common import sqs_client


class Limit:
    def __init__(self, sqs: Any, url: str, in_flight: int) -> None:
        self.sqs = sqs
        self.url = url
        self.deleted = 0
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
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            response = await self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
            self.deleted += len(response.get("Successful", []))
        finally:
            self.slots.release()


async def run(endpoint: str, url: str, pollers: int, in_flight: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with sqs_client(endpoint) as sqs:
        limit = Limit(sqs, url, in_flight)
        tasks = [asyncio.create_task(limit.poll(stop)) for _ in range(pollers)]
        print("ready", flush=True)
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*limit.tasks, return_exceptions=True)
        return limit.deleted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--pollers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()
    deleted = asyncio.run(run(args.endpoint, args.queue_url, args.pollers, args.in_flight))
    print(json.dumps({"deleted": deleted}), flush=True)


if __name__ == "__main__":
    main()
