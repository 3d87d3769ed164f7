"""The watch: a task of the daemon that sleeps until the next due time, then tells people.

It wakes at the earliest moment an expectation falls due, at once when a
matching event or a reload changes the picture, and otherwise rarely (`recheck`
while overdue, at most `longest_sleep` in any case), so an idle daemon costs
nothing. Each wake reads the shared state fresh: another replica may have seen
an event or sent a notice meanwhile.

A notice goes out once per handler per episode, as deliveries do: the ledger is
claimed under a synthetic id (`expectation#<name>#<episode>#<status>`), the
handlers not yet recorded there are sent to through `deliver` (timeout,
retries, Retry-After, rate limits, metrics), each success is recorded in the
ledger and then marked in the expectation's own state, which has no TTL, so a
long episode never fires again once the ledger has forgotten. A failed send is
tried again on a later wake, with a backoff.

A config silence naming the expectation holds its `overdue` notices to the
handlers it covers while active; the watch wakes at the silence's end and sends
them then if the episode is still open (SPEC 3g).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from amid.events import AmiStateChange
from amid.expectations.due import anchor, event_time
from amid.expectations.plan import Close, Expectation, Open, Owed
from amid.handlers.base import ExpectationNotice
from amid.logs import get_logger
from amid.metrics import Metrics
from amid.pipeline.deliver import DeliveryResult, deliver
from amid.silences import held_notices
from amid.store.base import ExpectationState, LedgerUnavailable, Store

if TYPE_CHECKING:
    from amid.pipeline.process import Runtime

RECHECK = 30.0
LONGEST_SLEEP = 300.0
_BACKOFF_MAX = 300.0
_AFTER_SILENCE = 0.01  # wake just past a silence's end: then it no longer holds


def notice_id(name: str, episode: float, status: str) -> str:
    """The ledger's id for one notice of one episode, the same on every replica."""
    moment = _moment(episode).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"expectation#{name}#{moment}#{status}"


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def backoff(failures: int) -> float:
    """1 s, 2 s, 4 s, ... up to 5 min, with jitter so replicas do not retry in step."""
    base = min(_BACKOFF_MAX, 2.0 ** min(failures - 1, 16))
    return base * random.uniform(0.75, 1.0)  # noqa: S311 - jitter, not crypto


class Watcher:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        owner: str,
        lease: float,
        clock: Callable[[], float] = time.time,
        recheck: float = RECHECK,
        longest_sleep: float = LONGEST_SLEEP,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._owner = owner
        self._lease = lease
        self._clock = clock
        self._recheck = recheck
        self._longest_sleep = longest_sleep
        self._wake = asyncio.Event()
        self._failures: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self._shown: set[str] = set()
        # Last checked with no episode open and nothing owed: a sighting only moves the due
        # time later, which the sleeping watch finds when it wakes. Others wake it at once.
        self._settled: set[str] = set()
        self._log = get_logger()

    # --- the road's side: events -------------------------------------------

    async def saw(self, event: AmiStateChange, runtime: Runtime, received_at: float) -> None:
        """A claimed, first-time event: move the clock of every expectation it matches.

        Raises LedgerUnavailable when the store cannot take it: the message must stay.
        """
        matched = runtime.expectations.matching(event)
        if not matched:
            return
        occurred = event.occurred_at
        at = event_time(occurred.timestamp() if occurred else None, received_at)
        for expectation in matched:
            await self._store.saw_expected(expectation.name, at, round(received_at, 3))
            self._show_last_seen(expectation.name, at)
        if any(expectation.name not in self._settled for expectation in matched):
            self._wake.set()

    def changed(self) -> None:
        """The config was reloaded: look again now."""
        self._wake.set()

    @property
    def woken(self) -> bool:
        """Whether the watch will look again at once (rather than at its next due time)."""
        return self._wake.is_set()

    # --- the watch ---------------------------------------------------------

    async def run(self, use_runtime: Callable[[], AbstractAsyncContextManager[Runtime]]) -> None:
        """Until cancelled: check every expectation, sleep until the next thing to do."""
        while True:
            self._wake.clear()
            async with use_runtime() as runtime:
                wake_at = await self.check_all(runtime)
            delay = None if math.isinf(wake_at) else max(0.0, wake_at - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def check_all(self, runtime: Runtime) -> float:
        """One round over every expectation; when the next one is needed (inf: only on a wake)."""
        expectations = runtime.expectations.all
        self._forget_removed({e.name for e in expectations})
        if not expectations:
            return math.inf
        wakes = await asyncio.gather(*(self._check_safely(e, runtime) for e in expectations))
        return min([*wakes, self._clock() + self._longest_sleep])

    async def _check_safely(self, expectation: Expectation, runtime: Runtime) -> float:
        try:
            return await self._check(expectation, runtime)
        except LedgerUnavailable as error:
            self._metrics.ledger_errors.labels("expectation").inc()
            failures = self._failed(expectation.name)
            self._log.error(
                "dedupe store unavailable; expectation checked again later",
                expectation=expectation.name,
                error=str(error),
                failures=failures,
            )
            return self._clock() + backoff(failures)
        except Exception:  # noqa: BLE001 - a bug in one expectation must not stop the watch
            failures = self._failed(expectation.name)
            self._log.exception("expectation check failed", expectation=expectation.name)
            return self._clock() + backoff(failures)

    async def _check(self, expectation: Expectation, runtime: Runtime) -> float:
        name = expectation.name
        now = self._clock()
        state = await self._store.start_expectation(name, round(now, 3))
        step = expectation.transition(state, now)
        if isinstance(step, Open):
            state = await self._store.open_episode(name, step.episode)
            if state.episode == step.episode:
                self._log.warning(
                    "expectation overdue",
                    expectation=name,
                    due=_moment(step.episode).isoformat(),
                    expected=expectation.expected,
                )
        elif isinstance(step, Close):
            state = await self._store.close_episode(name, step.episode)
            self._log.info(
                "expectation met again; overdue episode ended",
                expectation=name,
                episode=_moment(step.episode).isoformat(),
            )
        delivered = True
        held_until = math.inf
        for owed in expectation.owed(state):
            handlers = [h for h in owed.handlers if h in runtime.handlers]
            if owed.status == "overdue":
                held = held_notices(runtime.silences, name, handlers, now)
                if held:
                    self._log.info(
                        "overdue notice held by a silence until it ends",
                        expectation=name,
                        handlers=sorted(held),
                        until=_moment(min(held.values())).isoformat(),
                    )
                    handlers = [h for h in handlers if h not in held]
                    held_until = min(held_until, *held.values()) + _AFTER_SILENCE
            if handlers:
                delivered = await self._notify(expectation, state, owed, handlers, runtime) and (
                    delivered
                )
        self._show(expectation, state)  # after the sends: a scrape that sees it saw them done
        now = self._clock()
        if not delivered:
            self._settled.discard(name)
            return now + backoff(self._failed(name))
        self._failures.pop(name, None)
        if state.episode is None and next(expectation.owed(state), None) is None:
            self._settled.add(name)
        else:
            self._settled.discard(name)
        return min(expectation.next_check(state, now, self._recheck), held_until)

    def _failed(self, name: str) -> int:
        self._failures[name] = self._failures.get(name, 0) + 1
        return self._failures[name]

    # --- sending -----------------------------------------------------------

    async def _notify(
        self,
        expectation: Expectation,
        state: ExpectationState,
        owed: Owed,
        handlers: list[str],
        runtime: Runtime,
    ) -> bool:
        """Send one status of one episode to the handlers owed it; True when all succeeded."""
        name, status, episode = expectation.name, owed.status, owed.episode
        ident = notice_id(name, episode, status)
        log = self._log.bind(expectation=name, status=status, notice=ident)
        claim = await self._store.claim(ident, self._owner, self._lease)
        if claim is None:
            log.info("another replica is sending this notice; looking again later")
            return False
        try:
            async with self._holding(ident):
                for handler in handlers:
                    if handler in claim.delivered:  # sent, not yet marked: a crash in between
                        await self._store.mark_told(name, episode, status, handler)
                notice = self._notice(expectation, state, owed)
                pending = [h for h in handlers if h not in claim.delivered]
                results = await asyncio.gather(
                    *(self._send(runtime, h, notice, expectation, episode, log) for h in pending)
                )
        finally:
            with contextlib.suppress(LedgerUnavailable):
                await asyncio.shield(self._store.release(ident, self._owner))
        return all(result.delivered for result in results)

    async def _send(
        self,
        runtime: Runtime,
        handler: str,
        notice: ExpectationNotice,
        expectation: Expectation,
        episode: float,
        log: Any,
    ) -> DeliveryResult:
        config = runtime.handler_configs[handler]
        result = await deliver(
            runtime.handlers[handler],
            notice,
            timeout=runtime.config.timeout_for(config),
            retry=runtime.config.retry_for(config),
            metrics=self._metrics,
            log=log,
        )
        if not result.delivered:
            return result
        await self._store.record_delivery(notice.id, handler, self._owner)
        await self._store.mark_told(expectation.name, episode, notice.status, handler)
        self._metrics.expectation_notifications.labels(
            expectation.name, handler, notice.status
        ).inc()
        log.info("expectation notice delivered", handler=handler, attempts=result.attempts)
        return result

    def _notice(
        self, expectation: Expectation, state: ExpectationState, owed: Owed
    ) -> ExpectationNotice:
        last_seen = _moment(state.last_seen) if state.last_seen is not None else None
        return ExpectationNotice(
            expectation=expectation.name,
            status=owed.status,
            last_seen=last_seen,
            due=_moment(owed.episode),
            expected=expectation.expected,
            id=notice_id(expectation.name, owed.episode, owed.status),
            since=_moment(anchor(state)),
            checked=_moment(self._clock()),
        )

    @contextlib.asynccontextmanager
    async def _holding(self, ident: str) -> AsyncIterator[None]:
        """Keep the ledger lease on a notice alive while its sends (and their retries) run."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self._lease / 3)
                with contextlib.suppress(LedgerUnavailable):
                    await self._store.extend(ident, self._owner, self._lease)

        renewing = asyncio.create_task(renew(), name="amid-expectation-lease")
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    # --- metrics -----------------------------------------------------------

    def _show(self, expectation: Expectation, state: ExpectationState) -> None:
        name = expectation.name
        if name not in self._shown:
            self._shown.add(name)
            self._metrics.prime_expectation(name, expectation.notify)
        self._metrics.expectation_overdue.labels(name).set(1 if state.episode is not None else 0)
        if state.last_seen is not None:
            self._show_last_seen(name, state.last_seen)

    def _show_last_seen(self, name: str, at: float) -> None:
        if at > self._last_seen.get(name, -math.inf):
            self._last_seen[name] = at
            self._metrics.expectation_last_seen.labels(name).set(at)

    def _forget_removed(self, names: Iterable[str]) -> None:
        """A removed expectation's series go, so no alert fires for it any more."""
        current = set(names)
        for name in self._shown - current:
            self._metrics.forget_expectation(name)
            self._last_seen.pop(name, None)
            self._failures.pop(name, None)
        self._shown &= current
        self._settled &= current
