"""One way to stand up an aiohttp server on 127.0.0.1 for a test's stand-in destination."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handle = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(
    handle: Handle, port: int = 0, **runner_options: float
) -> tuple[web.AppRunner, str]:
    """Serve `handle` for every method and path; returns the runner (to clean up) and the URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, **runner_options)  # type: ignore[arg-type]
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    host, bound = runner.addresses[0][:2]
    return runner, f"http://{host}:{bound}"
