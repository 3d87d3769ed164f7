"""The daemon's lifecycle: start, run, reload, drain. It owns every resource.

Signals never reach this module: the CLI turns them into the `stop` and
`reload` events passed in, so tests drive shutdown and reload directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from amid.aws import AwsClients
from amid.config import Config, ConfigError, load_config
from amid.eventloop import loop_name
from amid.expectations import Expectations
from amid.expectations.watch import Watcher
from amid.footprint import frozen_start_up, trim_heap
from amid.handlers import HandlerResources, build_handler
from amid.logs import configure_logging, get_logger
from amid.metrics import Metrics
from amid.pipeline.batch import Batcher
from amid.pipeline.enrich import ImageEnricher
from amid.pipeline.process import Enricher, Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.pipeline.source import Heartbeat, Message, SqsSource, SqsUnavailable
from amid.sdnotify import SystemdNotifier, watchdog_interval
from amid.silences import Silences
from amid.silences.refresh import RunTimeSilences
from amid.store import Ledger, LedgerUnavailable, Store, open_store
from amid.web.health import Health, HealthServer
from amid.web.status import StatusPage

# `AMID_HISTORY=off` builds the pipeline without the delivery record (SPEC 3h), so the bench
# can measure what the record costs (docs/benchmarks.md); for the bench, not for production.
HISTORY_ENV = "AMID_HISTORY"


def history_on(environ: Mapping[str, str] = os.environ) -> bool:
    """The delivery record is kept unless AMID_HISTORY is `off`."""
    return environ.get(HISTORY_ENV, "").strip().lower() != "off"


class StartupError(Exception):
    """The daemon cannot start with this config (an unusable dedupe path, ...): exit 2."""


# How long a poller waits for a free in-flight slot before the digests are asked to give one.
STARVED_AFTER = 1.0


class _Capacity:
    """At most `size` messages in flight; pollers take slots before they receive.

    While a poller finds no free slot, `on_starved` is called every STARVED_AFTER
    seconds: messages held for digests (or waiting behind one) must not fill the
    budget until a digest's window ends.
    """

    def __init__(self, size: int, on_starved: Callable[[], None] | None = None) -> None:
        self._free = size
        self._freed = asyncio.Event()
        self._on_starved = on_starved

    async def take(self, most: int) -> int:
        while self._free <= 0:
            self._freed.clear()
            try:
                async with asyncio.timeout(STARVED_AFTER):
                    await self._freed.wait()
            except TimeoutError:
                if self._on_starved is not None:
                    self._on_starved()
        taken = min(most, self._free)
        self._free -= taken
        return taken

    def give(self, count: int) -> None:
        """Synchronous, so a finishing (or cancelled) message task returns its slot at once."""
        self._free += count
        self._freed.set()


class _Runtimes:
    """The current runtime, and the retired ones kept until their in-flight work ends."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
        self._users: dict[int, int] = {}
        self._retired: dict[int, Runtime] = {}

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Runtime]:
        runtime = self.current
        key = id(runtime)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            yield runtime
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                if key in self._retired:
                    await _close_handlers(self._retired.pop(key))

    async def swap(self, runtime: Runtime) -> None:
        old, self.current = self.current, runtime
        if id(old) in self._users:
            self._retired[id(old)] = old
        else:
            await _close_handlers(old)

    async def aclose(self) -> None:
        for runtime in [self.current, *self._retired.values()]:
            await _close_handlers(runtime)
        self._retired.clear()


@dataclass(frozen=True, slots=True)
class _Serving:
    """What the pollers and message tasks share while the daemon serves."""

    source: SqsSource
    pipeline: Pipeline
    runtimes: _Runtimes
    heartbeat: Heartbeat
    capacity: _Capacity


async def _close_handlers(runtime: Runtime) -> None:
    for handler in runtime.handlers.values():
        with contextlib.suppress(Exception):
            await handler.aclose()


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        stop: asyncio.Event,
        reload: asyncio.Event | None = None,
        config_path: Path | None = None,
        metrics: Metrics | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self._stop = stop
        self._reload = reload or asyncio.Event()
        self._config_path = config_path
        self.metrics = metrics or Metrics()
        self._notifier = notifier or SystemdNotifier()
        self.health = Health(config.queue.wait_time)
        self.metrics.ready.set_function(lambda: 1.0 if self.health.ready else 0.0)
        self.owner = _owner_id()
        self._log = get_logger()
        self._tasks: set[asyncio.Task[None]] = set()
        self._receiving: set[asyncio.Task[Any]] = set()
        self.metrics_port: int | None = None
        self.started = asyncio.Event()
        self._ready_sent = False
        self._batcher: Batcher | None = None
        self._watcher: Watcher | None = None
        self._silences: RunTimeSilences | None = None
        self.status: StatusPage | None = None  # the page (metrics.ui); its `silences` hook

    def request_reload(self) -> None:
        """What SIGHUP does: reload the config file at the next chance."""
        self._reload.set()

    async def run(self) -> None:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            aws = await stack.enter_async_context(AwsClients())
            region = config.queue.resolved_region
            sqs = await aws.client(
                "sqs", region, config.queue.endpoint_url, read_timeout=config.queue.wait_time + 15
            )
            ledger = await self._open_ledger(aws, region)
            stack.push_async_callback(ledger.aclose)
            http = await stack.enter_async_context(aiohttp.ClientSession())
            resources = HandlerResources(http, aws, self.metrics, conversations=ledger)
            runtimes = _Runtimes(self._build_runtime(config, resources))
            stack.push_async_callback(runtimes.aclose)
            source = await stack.enter_async_context(SqsSource(sqs, config.queue, self.metrics))
            self.status = StatusPage(ledger, lambda: self.config) if config.metrics.ui else None
            server = await stack.enter_async_context(
                HealthServer(
                    self.health, self.metrics, config.metrics.host, config.metrics.port, self.status
                )
            )
            self.metrics_port = server.port
            self._watcher = Watcher(
                ledger, self.metrics, owner=self.owner, lease=config.queue.visibility_timeout
            )
            self._silences = await self._read_silences(ledger)
            pipeline = Pipeline(
                ledger=ledger,
                metrics=self.metrics,
                owner=self.owner,
                lease=config.queue.visibility_timeout,
                enricher=self._enricher(config, aws, ledger, stack),
                budget=config.queue.max_in_flight,
                watcher=self._watcher,
                silences=self._silences,
                history=history_on(),
            )
            self._batcher = pipeline.batcher
            await self._serve(config, source, ledger, pipeline, runtimes, resources)

    async def _open_ledger(self, aws: AwsClients, region: str | None) -> Store:
        try:
            return await open_store(self.config.dedupe, aws, region)
        except LedgerUnavailable as error:
            raise StartupError(
                f"dedupe: cannot open the {self.config.dedupe.backend} store: {error}"
            ) from None

    async def _read_silences(self, store: Store) -> RunTimeSilences:
        """The run-time silences, read once before the first event is received."""
        silences = RunTimeSilences(store, self.metrics)
        try:
            await silences.refresh()
        except LedgerUnavailable as error:
            self._log.error("cannot read the run-time silences yet", error=str(error))
        return silences

    def _enricher(
        self, config: Config, aws: AwsClients, store: Store, stack: contextlib.AsyncExitStack
    ) -> Enricher | None:
        if not config.enrich.describe_images:
            return None
        enricher = ImageEnricher.from_config(config, aws, memory=store, metrics=self.metrics)
        stack.push_async_callback(enricher.aclose)
        return enricher

    def _build_runtime(self, config: Config, resources: HandlerResources) -> Runtime:
        handlers = {h.name: build_handler(h, config, resources) for h in config.handlers}
        for name in handlers:
            self.metrics.prime_handler(name)
        for handler in config.handlers:
            if handler.digest is not None:
                self.metrics.prime_digest_handler(handler.name)
        return Runtime(
            config=config,
            router=Router(config.handlers),
            handlers=handlers,
            expectations=Expectations(config.expectations),
            silences=Silences(config.silences),
        )

    async def _serve(
        self,
        config: Config,
        source: SqsSource,
        ledger: Ledger,
        pipeline: Pipeline,
        runtimes: _Runtimes,
        resources: HandlerResources,
    ) -> None:
        queue = config.queue
        capacity = _Capacity(queue.max_in_flight, on_starved=pipeline.batcher.relieve)

        async def extend_lease(event_id: str) -> None:
            with contextlib.suppress(LedgerUnavailable):
                await ledger.extend(event_id, self.owner, queue.visibility_timeout)

        heartbeat = Heartbeat(source, queue.visibility_timeout, extend_lease)
        background = [
            asyncio.create_task(heartbeat.run(), name="amid-heartbeat"),
            asyncio.create_task(self._watch_reload(runtimes, resources), name="amid-reload"),
            asyncio.create_task(self._watch_queue(source), name="amid-queue-depth"),
            asyncio.create_task(self._watchdog(), name="amid-watchdog"),
        ]
        if self._watcher is not None:
            watch = self._watcher.run(runtimes.use)
            background.append(asyncio.create_task(watch, name="amid-expectations"))
        if self._silences is not None:
            refresh = self._silences.run(runtimes.use)
            background.append(asyncio.create_task(refresh, name="amid-silences"))
        serving = _Serving(source, pipeline, runtimes, heartbeat, capacity)
        pollers = [
            asyncio.create_task(self._poll(serving), name=f"amid-poller-{i}")
            for i in range(queue.pollers)
        ]
        self.health.pollers_alive = lambda: all(not p.done() for p in pollers)
        self.health.ledger_ok = lambda: pipeline.ledger_ok
        self._log.info(
            "amid started",
            queue=queue.url,
            pollers=queue.pollers,
            max_in_flight=queue.max_in_flight,
            dedupe=config.dedupe.backend,
            handlers=[h.name for h in config.handlers],
            expectations=[e.name for e in config.expectations],
            silences=[s.name for s in config.silences],
            metrics_port=self.metrics_port,
            event_loop=loop_name(asyncio.get_running_loop()),
        )
        with frozen_start_up():
            trim_heap()
            self.started.set()
            try:
                await self._stop.wait()
            finally:
                await self._drain(pollers, background)

    async def _drain(
        self, pollers: list[asyncio.Task[None]], background: list[asyncio.Task[None]]
    ) -> None:
        """Stop receiving, let in-flight work finish within shutdown_timeout, return the rest."""
        self.health.draining = True
        self._notifier.stopping()
        # A poller waiting for capacity stops now. One inside a long poll is let finish,
        # within the same bound, and gives back what it got: cut off, SQS might hand it
        # messages nobody would see again until their visibility timeout.
        for task in pollers:
            if task not in self._receiving:
                task.cancel()
        if self._batcher is not None:
            self._batcher.drain()  # the digests gathered so far go now, within the same bound
        in_flight = set(self._tasks)
        self._log.info("draining", in_flight=len(in_flight), timeout=self.config.shutdown_timeout)
        waiting = in_flight | set(pollers)
        unfinished: set[asyncio.Task[None]] = set()
        if waiting:
            _, unfinished = await asyncio.wait(waiting, timeout=self.config.shutdown_timeout)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._batcher is not None:
            await self._batcher.aclose()
        returned = len(unfinished & in_flight)
        self._log.info(
            "amid stopped", finished=len(in_flight) - returned, returned_to_queue=returned
        )

    async def _poll(self, serving: _Serving) -> None:
        queue = self.config.queue
        source, capacity = serving.source, serving.capacity
        failures = 0
        me = asyncio.current_task()
        assert me is not None  # noqa: S101 - always run as a task
        while not self._stop.is_set():
            slots = await capacity.take(queue.max_messages)
            self._receiving.add(me)
            try:
                messages = await source.receive(slots)
            except SqsUnavailable as error:
                capacity.give(slots)
                failures += 1
                delay = _receive_backoff(failures)
                self._log.warning(
                    "receive failed; backing off", error=str(error), delay=round(delay, 1)
                )
                await asyncio.sleep(delay)
                continue
            except BaseException:
                capacity.give(slots)
                raise
            finally:
                self._receiving.discard(me)
            if self._stop.is_set():
                await asyncio.gather(*(source.change_visibility(m, 0) for m in messages))
                capacity.give(slots)
                return
            failures = 0
            self.health.received()
            if not self._ready_sent:
                self._ready_sent = True
                self._notifier.ready()
            if len(messages) < slots:
                capacity.give(slots - len(messages))
            for message in messages:
                serving.heartbeat.track(message)
                task = asyncio.create_task(self._handle(message, serving))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await _hand_over()

    async def _handle(self, message: Message, serving: _Serving) -> None:
        """One message through the pipeline, then delete it or leave it for later."""
        source, heartbeat = serving.source, serving.heartbeat
        self.metrics.inflight.inc()

        def claimed(event_id: str) -> None:
            message.event_id = event_id

        try:
            async with serving.runtimes.use() as runtime:
                outcome = await serving.pipeline.process(
                    message.body, runtime, receive_count=message.receive_count, on_claimed=claimed
                )
            heartbeat.untrack(message)
            if outcome.delete:
                await source.delete(message)
            else:
                await source.change_visibility(message, outcome.delay)
        except asyncio.CancelledError:
            # Shutdown ran out of time: the message goes back to the queue at once.
            heartbeat.untrack(message)
            await asyncio.shield(source.change_visibility(message, 0))
            raise
        except Exception:  # noqa: BLE001 - a bug in one message must not stop the daemon
            heartbeat.untrack(message)
            self._log.exception(
                "unexpected error handling a message; left for redelivery",
                message_id=message.message_id,
            )
        finally:
            self.metrics.inflight.dec()
            serving.capacity.give(1)

    async def _watch_reload(self, runtimes: _Runtimes, resources: HandlerResources) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.reload(runtimes, resources)

    async def reload(self, runtimes: _Runtimes, resources: HandlerResources) -> bool:
        """Build the new runtime completely, then swap; a bad file changes nothing."""
        if self._config_path is None:
            return False
        try:
            new = await asyncio.to_thread(load_config, self._config_path)
            runtime = self._build_runtime(new, resources)
        except ConfigError as error:
            self.metrics.config_reloads.labels("failure").inc()
            self.metrics.config_last_reload_successful.set(0)
            self._log.error(
                "config reload refused; the running config stays", problems=error.problems
            )
            return False
        except Exception as error:  # noqa: BLE001 - a reload must never stop the daemon
            self.metrics.config_reloads.labels("failure").inc()
            self.metrics.config_last_reload_successful.set(0)
            self._log.exception("config reload failed; the running config stays", error=str(error))
            return False
        old_restart, new_restart = self.config.restart_sections(), new.restart_sections()
        changed = sorted(key for key in old_restart if old_restart[key] != new_restart[key])
        if changed:
            self._log.warning(
                "config sections changed that need a restart to apply", sections=changed
            )
        configure_logging(new.logging.level, new.logging.format)
        removed = set(runtimes.current.handlers) - set(runtime.handlers)
        await runtimes.swap(runtime)
        if self._batcher is not None and removed:
            # Digests of kept handlers finish as they were gathered; a removed one's go back.
            self._batcher.hand_back(removed)
        if self._watcher is not None:
            self._watcher.changed()
        self.config = _keep_restart_sections(new, self.config)
        self.metrics.config_reloads.labels("success").inc()
        self.metrics.config_last_reload_successful.set(1)
        self._log.info(
            "config reloaded",
            handlers=[h.name for h in new.handlers],
            expectations=[e.name for e in new.expectations],
        )
        return True

    async def _watch_queue(self, source: SqsSource) -> None:
        try:
            attributes = await source.attributes()
        except SqsUnavailable as error:
            self._log.warning("cannot read queue attributes", error=str(error))
            attributes = {}
        if attributes and "RedrivePolicy" not in attributes:
            self._log.warning(
                "the queue has no redrive policy: a message that always fails will cycle forever; "
                "add a dead-letter queue"
            )
        dlq_url = await source.dead_letter_queue_url(attributes) if attributes else None
        interval = self.config.metrics.queue_depth_interval
        if interval <= 0:
            return
        queues = {"main": None, "dead_letter": dlq_url} if dlq_url else {"main": None}
        while True:
            for name, url in queues.items():
                with contextlib.suppress(SqsUnavailable):
                    attrs = await source.attributes(url)
                    gauge = self.metrics.queue_messages
                    gauge.labels(name, "visible").set(
                        int(attrs.get("ApproximateNumberOfMessages", 0))
                    )
                    gauge.labels(name, "in_flight").set(
                        int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
                    )
            await asyncio.sleep(interval)

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            # Pinged from the event loop itself: a stuck loop stops the pings, systemd restarts.
            if self.health.live:
                self._notifier.watchdog()
            await asyncio.sleep(interval)


# Turns of the loop a poller gives the messages it just received before its next receive:
# one for their tasks' first step (decode; the claim joins the ledger's group commit), one for
# that commit, one or two for the handler to write its request.
_HAND_OVER_TURNS = 4


async def _hand_over() -> None:
    """Let the messages just received (by this poller or another) reach their handlers before
    this poller builds its next receive. Building a request is botocore's CPU (serialising,
    signing: about half a millisecond); done first, it would sit in every event's latency.
    Also after an empty receive: a message's arrival can end the other pollers' long polls
    with nothing at the same moment, and their next requests would go first."""
    for _ in range(_HAND_OVER_TURNS):
        await asyncio.sleep(0)


def _keep_restart_sections(new: Config, running: Config) -> Config:
    """The running daemon keeps its queue, dedupe and metrics until restarted."""
    return new.model_copy(update=running.restart_sections())


def _receive_backoff(failures: int) -> float:
    base = min(30.0, 2.0 ** min(failures - 1, 5))
    return base / 2 + random.uniform(0, base / 2)  # noqa: S311 - jitter, not crypto
