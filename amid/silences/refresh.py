"""The run-time silences, kept fresh: a task of the daemon reads them from the store every
few seconds (REFRESH_EVERY), so every replica sees an `amid silence add` or `expire` within
15 s, and the road holds events against what it last read, never reading the store per event.
The same task keeps `amid_silences_active` (config and run-time silences active now) current.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from amid.logs import get_logger
from amid.metrics import Metrics
from amid.patterns import PatternError
from amid.silences.hold import Silence, active_count
from amid.store.base import LedgerUnavailable, SilenceStore

if TYPE_CHECKING:
    from amid.pipeline.process import Runtime

REFRESH_EVERY = 5.0


class RunTimeSilences:
    def __init__(
        self,
        store: SilenceStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        every: float = REFRESH_EVERY,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._every = every
        self.current: tuple[Silence, ...] = ()  # not ended when last read
        self._log = get_logger()

    async def refresh(self) -> None:
        """Read the silences again; raises LedgerUnavailable (the last read stays in force)."""
        now = self._clock()
        fresh = []
        for record in await self._store.silences():
            if record.ends <= now:
                continue
            try:
                fresh.append(Silence.from_record(record))
            except PatternError as error:  # written by another amid version, say
                self._log.warning("run-time silence ignored", silence=record.id, error=str(error))
        before, after = {s.ident for s in self.current}, {s.ident for s in fresh}
        if before != after:
            self._log.info(
                "run-time silences changed",
                added=sorted(after - before),
                ended=sorted(before - after),
            )
        self.current = tuple(fresh)

    def show(self, runtime: Runtime) -> None:
        silences = (*runtime.silences.all, *self.current)
        self._metrics.silences_active.set(active_count(silences, self._clock()))

    async def run(self, use_runtime: Callable[[], AbstractAsyncContextManager[Runtime]]) -> None:
        """Until cancelled: read, show, sleep. A store that cannot answer is tried next turn."""
        while True:
            try:
                await self.refresh()
            except LedgerUnavailable as error:
                self._metrics.ledger_errors.labels("silences").inc()
                self._log.error(
                    "dedupe store unavailable; run-time silences as last read", error=str(error)
                )
            except Exception:  # noqa: BLE001 - a bug here must not end the refreshes
                self._log.exception("reading the run-time silences failed; as last read")
            async with use_runtime() as runtime:
                self.show(runtime)
            await asyncio.sleep(self._every)
