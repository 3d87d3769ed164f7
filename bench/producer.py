"""The producer, in its own process, so the emulator is fed without sharing a loop with anyone.

    python -m bench.producer burst   --endpoint URL --queue-url URL --count N --duplicates 0.2
    python -m bench.producer trickle --endpoint URL --queue-url URL --rate 20 --seconds 30

`burst` sends SendMessageBatch calls as fast as the queue's depth allows: it keeps at most
`--max-depth` messages (visible + in flight) in the queue, because an emulator may scan its
whole queue on every call (moto does) and would otherwise measure itself. `trickle` sends
one message at a time at a fixed rate, each stamped with its send time (`bench_sent`).

The producer speaks SQS's JSON protocol with plain aiohttp requests, not botocore: local
emulators do not check signatures, and botocore's per-call cost would make the producer,
not the consumers, the bottleneck on two cores.
Prints one JSON line: {"sent": n, "started": epoch, "finished": epoch, "cpu": seconds}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import aiohttp

from bench.common import AWS_ENV, REGION, burst_bodies, make_event

BATCH = 10
SENDERS = 4  # concurrent SendMessageBatch calls
_SCOPE = f"{AWS_ENV['AWS_ACCESS_KEY_ID']}/20240101/{REGION}/sqs/aws4_request"
_AUTH = f"AWS4-HMAC-SHA256 Credential={_SCOPE}, SignedHeaders=host;x-amz-date, Signature=0"


class Sqs:
    """Just the calls the producer makes, over SQS's JSON protocol."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str, url: str) -> None:
        self._http = http
        self._endpoint = endpoint
        self._url = url

    async def call(self, action: str, **params: Any) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AmazonSQS.{action}",
            "X-Amz-Date": "20240101T000000Z",
            "Authorization": _AUTH,
        }
        payload = json.dumps({"QueueUrl": self._url, **params})
        async with self._http.post(self._endpoint, data=payload, headers=headers) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"{action}: HTTP {response.status}: {text[:300]}")
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    async def send_batch(self, bodies: list[str]) -> None:
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
        response = await self.call("SendMessageBatch", Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {response['Failed'][:1]}")

    async def depth(self) -> int:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = (await self.call("GetQueueAttributes", AttributeNames=names))["Attributes"]
        return sum(int(attributes[name]) for name in names)


async def burst(endpoint: str, url: str, bodies: list[str], max_depth: int) -> int:
    batches = [bodies[i : i + BATCH] for i in range(0, len(bodies), BATCH)]
    async with aiohttp.ClientSession() as http:
        sqs = Sqs(http, endpoint, url)
        sent = 0
        budget = 0
        checked = 0.0
        while batches:
            now = time.monotonic()
            if budget < BATCH or now - checked > 0.05:
                budget = max_depth - await sqs.depth()
                checked = now
            if budget < BATCH:
                await asyncio.sleep(0.005)
                continue
            take = min(SENDERS, budget // BATCH, len(batches))
            chunk, batches = batches[:take], batches[take:]
            await asyncio.gather(*(sqs.send_batch(batch) for batch in chunk))
            size = sum(len(batch) for batch in chunk)
            sent += size
            budget -= size
        return sent


async def trickle(endpoint: str, url: str, rate: float, seconds: float) -> int:
    rng = random.Random(time.time_ns())  # fresh ids per run: a warm-up must not dedupe it
    total = round(rate * seconds)
    async with aiohttp.ClientSession() as http:
        sqs = Sqs(http, endpoint, url)
        start = time.monotonic()
        for index in range(total):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sqs.call("SendMessage", MessageBody=json.dumps(make_event(rng)))
        return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["burst", "trickle"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--max-depth", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.mode == "burst":
        bodies = burst_bodies(args.count, args.duplicates)
        job = burst(args.endpoint, args.queue_url, bodies, args.max_depth)
    else:
        job = trickle(args.endpoint, args.queue_url, args.rate, args.seconds)
    started, cpu = time.time(), time.process_time()
    sent = asyncio.run(job)
    summary = {
        "sent": sent,
        "started": started,
        "finished": time.time(),
        "cpu": time.process_time() - cpu,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
