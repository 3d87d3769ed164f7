"""The HTTP endpoint: /metrics (Prometheus text), /healthz (alive), /readyz (receiving);
with `metrics.ui` also the status page and its API (status.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from amid.metrics import Metrics
from amid.web.status import StatusPage


class Health:
    """Liveness and readiness as SPEC section 5 defines them."""

    def __init__(self, wait_time: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._fresh_for = 2 * wait_time + 10
        self._clock = clock
        self.last_receive_ok: float | None = None
        self.draining = False
        self.pollers_alive: Callable[[], bool] = lambda: True
        self.ledger_ok: Callable[[], bool] = lambda: True

    def received(self) -> None:
        self.last_receive_ok = self._clock()

    @property
    def live(self) -> bool:
        return self.pollers_alive()

    @property
    def ready(self) -> bool:
        return (
            not self.draining
            and self.ledger_ok()
            and self.last_receive_ok is not None
            and self._clock() - self.last_receive_ok <= self._fresh_for
        )


class HealthServer:
    def __init__(
        self,
        health: Health,
        metrics: Metrics,
        host: str,
        port: int,
        status: StatusPage | None = None,
    ) -> None:
        self._health = health
        self._status = status  # None (metrics.ui off): `/` and the API are not served
        self._metrics = metrics
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def __aenter__(self) -> HealthServer:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._status is not None:
            self._status.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here; port 0 picks a free one
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = self._health.live
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "pollers stopped\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._health.ready:
            return web.Response(text="ready\n")
        if self._health.draining:
            why = "draining"
        elif not self._health.ledger_ok():
            why = "the dedupe store is unavailable"
        else:
            why = "no successful receive recently"
        return web.Response(status=503, text=f"not ready: {why}\n")
