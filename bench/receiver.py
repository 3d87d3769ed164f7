"""The webhook stand-in: an aiohttp server in its own process that timestamps every POST.

    python -m bench.receiver --port PORT

POST /hook    records (received, the event's `bench_sent`, its id); answers 200
POST /slack/api/{method}   a Slack Web API stand-in for app mode: counted as a POST, its
              event known by the image id in the message; `chat.postMessage` answers
              {"ok": true, "channel": ..., "ts": <unique>}, anything else {"ok": true, ...}
GET  /stats   {"posts": n, "unique": n}
GET  /latencies   seconds from `bench_sent` to receipt, one per POST since the last reset
POST /reset   forgets everything
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import signal
import time

from aiohttp import web

# The burst gives every event its own image, so the image id in a Slack message names it.
_IMAGE_ID = re.compile(rb"ami-[0-9a-f]{8,17}")
_TS = itertools.count(1)  # unique message timestamps, across resets too


class Recorder:
    def __init__(self) -> None:
        self.posts = 0
        self.ids: set[str] = set()
        self.latencies: list[float] = []

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = time.time()
        self.posts += 1
        try:
            event = json.loads(body)
            self.ids.add(str(event.get("id")))
            sent = event.get("bench_sent")
            if isinstance(sent, int | float):
                self.latencies.append(received - sent)
        except ValueError:
            pass
        return web.Response(text="ok")

    async def slack(self, request: web.Request) -> web.Response:
        """What Slack's Web API answers amid's app mode, cheaply: no Block Kit checks. The
        message carries no `bench_sent`, so a Slack call counts but gives no latency."""
        body = await request.read()
        received = time.time()
        self.posts += 1
        image = _IMAGE_ID.search(body)
        if image is not None:
            self.ids.add(image.group().decode())
        try:
            call = json.loads(body)
            channel, ts = str(call.get("channel", "")), str(call.get("ts", ""))
        except (ValueError, AttributeError):
            channel = ts = ""
        if request.match_info["method"] == "chat.postMessage":
            ts = f"{int(received)}.{next(_TS):06d}"
        return web.json_response({"ok": True, "channel": channel, "ts": ts})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response({"posts": self.posts, "unique": len(self.ids)})

    async def latency(self, _: web.Request) -> web.Response:
        return web.json_response(self.latencies)

    async def reset(self, _: web.Request) -> web.Response:
        self.__init__()  # type: ignore[misc]
        return web.json_response({})


async def serve(port: int) -> None:
    recorder = Recorder()
    app = web.Application(client_max_size=1 << 20)
    app.add_routes(
        [
            web.post("/hook", recorder.hook),
            web.post("/slack/api/{method}", recorder.slack),
            web.get("/stats", recorder.stats),
            web.get("/latencies", recorder.latency),
            web.post("/reset", recorder.reset),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
