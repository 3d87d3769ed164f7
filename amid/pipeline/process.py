"""process(message) -> outcome: decode, dedupe, enrich, route, silence, batch, deliver, in order.

The stage is total: whatever the message holds and whatever the handlers or
the ledger do, `process` returns an `Outcome` that says whether to delete the
message or leave it for redelivery. Only cancellation (shutdown) propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from amid.config import Config, HandlerConfig
from amid.events import AmiStateChange, IgnoredEvent
from amid.expectations import Expectations
from amid.handlers.base import Handler, Notification
from amid.logs import get_logger
from amid.metrics import Metrics
from amid.pipeline.batch import Batcher, Target
from amid.pipeline.decode import DecodeError, decode
from amid.pipeline.deliver import DeliveryResult, deliver
from amid.pipeline.enrich import NOT_ASKED, ImageLookup
from amid.pipeline.record import event_record
from amid.pipeline.routing import Router
from amid.silences import Hold, Silences, hold
from amid.silences.refresh import RunTimeSilences
from amid.store.base import Claim, EventRecord, Ledger, LedgerUnavailable


class Enricher(Protocol):
    async def lookup(self, image_id: str, region: str, account: str = "") -> ImageLookup: ...


class Watcher(Protocol):
    """Beside the road: hears of each claimed, first-time event (amid/expectations/watch.py)."""

    async def saw(self, event: AmiStateChange, runtime: Runtime, received_at: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a SIGHUP replaces as a whole: the config, its router and its handlers."""

    config: Config
    router: Router
    handlers: Mapping[str, Handler]
    expectations: Expectations = field(default_factory=Expectations)
    silences: Silences = field(default_factory=Silences)

    @property
    def handler_configs(self) -> Mapping[str, HandlerConfig]:
        return self.router.handler_configs


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message. `delete` or leave it invisible for `delay` seconds."""

    label: str  # handled | duplicate | ignored | retry | deferred | invalid
    delete: bool
    delay: float = 0.0
    event: AmiStateChange | None = None
    reason: str | None = None  # the invalid reason, or why a retry is needed
    results: tuple[DeliveryResult, ...] = field(default=())


class _KeyedLocks:
    """One lock per event id, alive only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class _Batch:
    """The handlers one delivery runs at once, and which of their successes are recorded."""

    def __init__(self, names: list[str]) -> None:
        self._running = set(names)
        self._recorded: set[str] = set()

    def finished(self, name: str) -> bool:
        """Mark `name` done; True while other handlers of the batch still run."""
        self._running.discard(name)
        return bool(self._running)

    def recorded(self, name: str) -> None:
        self._recorded.add(name)

    def is_recorded(self, name: str) -> bool:
        return name in self._recorded


class Pipeline:
    def __init__(
        self,
        *,
        ledger: Ledger,
        metrics: Metrics,
        owner: str,
        lease: float,
        enricher: Enricher | None = None,
        watcher: Watcher | None = None,
        silences: RunTimeSilences | None = None,
        clock: Callable[[], float] = time.time,
        budget: int = 64,
        history: bool = False,
    ) -> None:
        """`budget` is how many messages may be in flight (`queue.max_in_flight`). With
        `history` each event's delivery record rides on the ledger's writes (SPEC 3h)."""
        self._ledger = ledger
        self._history = history
        self._watcher = watcher
        self._silences = silences
        self._metrics = metrics
        self._owner = owner
        self._lease = lease
        self._enricher = enricher
        self._clock = clock
        self._locks = _KeyedLocks()
        self._log = get_logger()
        self.ledger_ok = True  # False from a failed ledger call until the next one succeeds
        self.batcher = Batcher(ledger=ledger, metrics=metrics, owner=owner, budget=budget)

    def redelivery_delay(self, config: Config, receive_count: int) -> float:
        """initial, doubled per receive, capped at max."""
        redelivery = config.queue.redelivery
        return float(min(redelivery.initial * 2 ** max(receive_count - 1, 0), redelivery.max))

    async def process(
        self,
        body: str,
        runtime: Runtime,
        *,
        receive_count: int = 1,
        on_claimed: Callable[[str], None] | None = None,
    ) -> Outcome:
        config = runtime.config
        retry_delay = self.redelivery_delay(config, receive_count)
        try:
            decoded = decode(body)
        except DecodeError as error:
            self._metrics.messages_invalid.labels(error.reason).inc()
            self._log.warning("invalid message", reason=error.reason, error=str(error))
            delete = config.queue.on_invalid == "delete"
            return Outcome("invalid", delete=delete, delay=retry_delay, reason=error.reason)
        if isinstance(decoded, IgnoredEvent):
            self._metrics.events.labels("other", "ignored").inc()
            self._log.info(
                "ignored event",
                event_id=decoded.id,
                detail_type=decoded.detail_type,
                source=decoded.source,
            )
            return Outcome("ignored", delete=True)

        event = decoded
        outcome = await self._handle(event, runtime, retry_delay, on_claimed)
        self._metrics.events.labels(event.state_label, outcome.label).inc()
        if outcome.label == "retry" and outcome.reason is not None:
            self._metrics.event_retries.labels(outcome.reason).inc()
        return outcome

    async def _handle(
        self,
        event: AmiStateChange,
        runtime: Runtime,
        retry_delay: float,
        on_claimed: Callable[[str], None] | None,
    ) -> Outcome:
        log = self._log.bind(**event.log_context())
        # A second copy in this process waits here (its visibility kept by the heartbeat).
        async with self._locks.hold(event.id):
            try:
                claim = await self._ledger.claim(event.id, self._owner, self._lease)
            except LedgerUnavailable as error:
                return self._ledger_down(log, "claim", error, event, retry_delay)
            self.ledger_ok = True
            if claim is None:
                # Another consumer holds it: look again once its lease has had time to end,
                # so a long-running copy elsewhere does not burn this one's receive count.
                log.info("event held by another consumer; deferred", delay=self._lease)
                return Outcome("deferred", delete=False, delay=self._lease, event=event)
            if on_claimed is not None:
                on_claimed(event.id)
            try:
                return await self._deliver_claimed(event, runtime, claim, retry_delay, log)
            except BaseException:
                # Cancelled (shutdown): give the event back at once, for any replica.
                with contextlib.suppress(LedgerUnavailable):
                    await asyncio.shield(self._ledger.release(event.id, self._owner))
                raise

    async def _deliver_claimed(
        self,
        event: AmiStateChange,
        runtime: Runtime,
        claim: Claim,
        retry_delay: float,
        log: Any,
    ) -> Outcome:
        received = self._clock()
        if claim.done:  # the claim counted the copy on the event's record
            log.info("duplicate event; no handler called")
            return Outcome("duplicate", delete=True, event=event)
        try:
            await self._tell_watcher(event, runtime)
        except LedgerUnavailable as error:
            with contextlib.suppress(LedgerUnavailable):
                await self._ledger.release(event.id, self._owner)
            return self._ledger_down(log, "expectation", error, event, retry_delay)
        lookup = await self._look_up_image(event, runtime.router, claim)
        matched = runtime.router.route(event, lookup.image if lookup.known else None)
        pending = [name for name in matched if name not in claim.delivered]
        held = self._hold(event, runtime, lookup, pending, log)
        pending = [name for name in pending if name not in held.held and name not in held.waiting]
        # Routes (or silences) on `image` when it could not be had: never decided on missing data.
        waiting = [
            name
            for name in (() if lookup.known else runtime.router.needs_image(event))
            if name not in claim.delivered
        ] + list(held.waiting)
        if waiting:
            log.warning(
                "image unavailable; handlers routed on it wait for redelivery",
                handlers=waiting,
                lookup=lookup.outcome,
            )
        image = lookup.image if lookup.known else None

        def story(outcome: str, results: Any = ()) -> EventRecord | None:
            if not self._history:
                return None
            digests = [n for n in matched if runtime.handler_configs[n].digest is not None]
            return event_record(
                event,
                received=received,
                outcome=outcome,
                matched=matched,
                results=results,
                digests=digests,
                waiting=waiting,
                image=image,
            )

        if not pending and not held.held and waiting:
            return await self._left_for_image(event, retry_delay, log, story("retry"))
        if not pending and not held.held:
            with contextlib.suppress(LedgerUnavailable):
                outcome = "duplicate" if matched else "handled"
                await self._ledger.complete(event.id, self._owner, record=story(outcome))
            if not matched:
                log.info("no handler matches the event")
                return Outcome("handled", delete=True, event=event)
            # Every handler had succeeded before, but the event was never marked done.
            log.info("duplicate event; no handler called", handlers=list(matched))
            return Outcome("duplicate", delete=True, event=event)

        notification = Notification(event, lookup.image)
        batch = _Batch(pending)
        sends = [self._deliver_one(runtime, name, notification, batch, log) for name in pending]
        # One handler, the common case, is awaited as it is: gather would make it a task.
        sent = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
        # A held handler is recorded like a delivery: a redelivery sends it nothing either.
        results = [DeliveryResult(h, True, 0, silence=s) for h, s in held.held.items()] + sent
        if all(result.delivered for result in results) and not waiting:
            try:
                # The last success is recorded together with the done mark: one ledger write.
                unrecorded = [r.handler for r in results if not batch.is_recorded(r.handler)]
                await self._ledger.complete(
                    event.id, self._owner, delivered=unrecorded, record=story("handled", results)
                )
            except LedgerUnavailable as error:
                return self._ledger_down(log, "complete", error, event, retry_delay)
            self._observe_lag(event)
            log.info("event handled", handlers=list(pending))
            return Outcome("handled", delete=True, event=event, results=tuple(results))

        results = [
            result if batch.is_recorded(result.handler) else await self._record(event, result, log)
            for result in results
        ]
        with contextlib.suppress(LedgerUnavailable):
            await self._ledger.release(event.id, self._owner, record=story("retry", results))
        failed = [result.handler for result in results if not result.delivered]
        # A destination's Retry-After holds across redeliveries too: never come back sooner.
        asked = [r.retry_after for r in results if not r.delivered and r.retry_after is not None]
        retry_delay = max([retry_delay, *asked])
        log.warning("event left for redelivery", failed=failed, waiting=waiting, delay=retry_delay)
        return Outcome(
            "retry",
            delete=False,
            delay=retry_delay,
            event=event,
            reason="handler_failed" if failed else "enrich_unavailable",
            results=tuple(results),
        )

    def _hold(
        self,
        event: AmiStateChange,
        runtime: Runtime,
        lookup: ImageLookup,
        pending: list[str],
        log: Any,
    ) -> Hold:
        """The silence stage: the pending handlers an active silence holds (config silences,
        then the run-time ones as last read from the store; never a store read here)."""
        silences = (*runtime.silences.all, *(self._silences.current if self._silences else ()))
        if not silences or not pending:
            return Hold()
        image = lookup.image if lookup.known else None
        found = hold(silences, event, image, pending, self._clock())
        for name in found.held:
            self._metrics.notifications.labels(name, "silenced").inc()
        if found.held:
            log.info("held by a silence; not sent", silenced=found.held)
        return found

    async def _look_up_image(
        self, event: AmiStateChange, router: Router, claim: Claim
    ) -> ImageLookup:
        """The enrich stage: described only when a handler still to run routes on the image
        or (describe_images on) a template may show it. Most events route without it."""
        if self._enricher is None:
            # Image routes but no enricher: a reload added them; enrich needs a restart.
            return NOT_ASKED if not router.image_routes else ImageLookup({}, False, "unavailable")
        routes_on_it = any(name not in claim.delivered for name in router.needs_image(event))
        if not routes_on_it and all(name in claim.delivered for name in router.route(event)):
            return NOT_ASKED
        return await self._enricher.lookup(event.image_id, event.region, event.account)

    async def _left_for_image(
        self, event: AmiStateChange, retry_delay: float, log: Any, record: EventRecord | None
    ) -> Outcome:
        with contextlib.suppress(LedgerUnavailable):
            await self._ledger.release(event.id, self._owner, record=record)
        log.warning("event left for redelivery", delay=retry_delay)
        return Outcome(
            "retry", delete=False, delay=retry_delay, event=event, reason="enrich_unavailable"
        )

    async def _deliver_one(
        self, runtime: Runtime, name: str, notification: Notification, batch: _Batch, log: Any
    ) -> DeliveryResult:
        handler_config = runtime.handler_configs[name]
        if handler_config.digest is not None:
            return await self._batch(runtime, name, notification, batch)
        result = await deliver(
            runtime.handlers[name],
            notification,
            timeout=runtime.config.timeout_for(handler_config),
            retry=runtime.config.retry_for(handler_config),
            metrics=self._metrics,
            log=log,
        )
        if batch.finished(name) and result.delivered:
            # Others still run: record this success now, so a crash before they finish
            # cannot make a redelivery call this handler again.
            result = await self._record(notification.event, result, log)
            if result.delivered:
                batch.recorded(name)
        return result

    async def _batch(
        self, runtime: Runtime, name: str, notification: Notification, batch: _Batch
    ) -> DeliveryResult:
        """A digest handler: the event joins its group; the digest that carries it is sent
        and its success recorded there, while the other handlers go on at once."""
        handler_config = runtime.handler_configs[name]
        assert handler_config.digest is not None  # noqa: S101 - checked by the caller
        target = Target(
            runtime.handlers[name],
            handler_config.digest,
            runtime.config.timeout_for(handler_config),
            runtime.config.retry_for(handler_config),
        )
        result = await self.batcher.submit(target, notification)
        batch.finished(name)
        if result.delivered:
            batch.recorded(name)
        elif result.reason == "ledger_unavailable":
            self.ledger_ok = False
        return result

    async def _record(
        self, event: AmiStateChange, result: DeliveryResult, log: Any
    ) -> DeliveryResult:
        """Record a success not recorded yet; a success the ledger cannot keep counts as failed."""
        if not result.delivered:
            return result
        try:
            await self._ledger.record_delivery(event.id, result.handler, self._owner)
        except LedgerUnavailable as error:
            self.ledger_ok = False
            self._metrics.ledger_errors.labels("record_delivery").inc()
            log.error(
                "delivered, but the ledger could not record it",
                handler=result.handler,
                error=str(error),
            )
            return DeliveryResult(result.handler, False, result.attempts, "ledger_unavailable")
        return result

    async def _tell_watcher(self, event: AmiStateChange, runtime: Runtime) -> None:
        """Expectations this event satisfies start their clocks anew (in the store)."""
        if self._watcher is not None:
            await self._watcher.saw(event, runtime, self._clock())

    def _observe_lag(self, event: AmiStateChange) -> None:
        occurred = event.occurred_at
        if occurred is not None:
            lag = datetime.fromtimestamp(self._clock(), UTC) - occurred
            self._metrics.event_lag.observe(max(lag.total_seconds(), 0.0))

    def _ledger_down(
        self, log: Any, operation: str, error: Exception, event: AmiStateChange, delay: float
    ) -> Outcome:
        self.ledger_ok = False
        self._metrics.ledger_errors.labels(operation).inc()
        log.error("dedupe store unavailable; message left for redelivery", error=str(error))
        return Outcome("retry", delete=False, delay=delay, event=event, reason="ledger_unavailable")
