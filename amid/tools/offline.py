"""Events handled outside the daemon: `amid test-event` and `amid replay`.

Both run the very same pipeline and handlers as `amid run`, without SQS.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from amid.aws import AwsClients
from amid.config import Config
from amid.events import DETAIL_TYPE, SOURCE, AmiStateChange
from amid.handlers import Handler, HandlerResources, build_handler
from amid.handlers.base import Notification
from amid.metrics import Metrics
from amid.pipeline.decode import decode
from amid.pipeline.deliver import DeliveryResult, deliver
from amid.pipeline.enrich import NOT_ASKED, ImageEnricher
from amid.pipeline.process import Outcome, Pipeline, Runtime
from amid.pipeline.routing import Router
from amid.silences import Silences
from amid.silences.refresh import RunTimeSilences
from amid.store import LedgerUnavailable, Store, open_store
from amid.store.memory import MemoryStore


def synthetic_event(
    state: str = "available",
    image_id: str = "ami-0123456789abcdef0",
    region: str = "us-east-1",
    account: str = "123456789012",
    error_message: str | None = None,
) -> dict[str, Any]:
    """A real-shaped `EC2 AMI State Change` event with a unique id and the current time."""
    if error_message is None:
        error_message = "Test failure from amid test-event" if state == "failed" else ""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": SOURCE,
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:ec2:{region}::image/{image_id}"],
        "detail": {
            "RequestId": str(uuid.uuid4()),
            "ImageId": image_id,
            "State": state,
            "ErrorMessage": error_message,
        },
    }


def bodies_from_text(text: str) -> Iterator[str]:
    """Message bodies from one JSON document, an array, JSON lines, or `aws sqs receive-message`
    output. An unparsable line is passed on as it is, so it is counted as invalid, not lost."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        document = json.loads(stripped)
    except ValueError:
        for line in stripped.splitlines():
            if line.strip():
                yield from _bodies_from_line(line)
        return
    yield from _bodies_from_document(document)


def _bodies_from_line(line: str) -> Iterator[str]:
    try:
        document = json.loads(line)
    except ValueError:
        yield line
        return
    yield from _bodies_from_document(document)


def _bodies_from_document(document: Any) -> Iterator[str]:
    if isinstance(document, list):
        for item in document:
            yield from _bodies_from_document(item)
    elif isinstance(document, dict) and isinstance(document.get("Messages"), list):
        yield from _bodies_from_document(document["Messages"])
    elif isinstance(document, dict) and isinstance(document.get("Body"), str):
        yield document["Body"]
    else:
        yield json.dumps(document)


@dataclass
class OfflineRun:
    config: Config
    runtime: Runtime
    resources: HandlerResources
    enricher: ImageEnricher | None = None
    store: Store | None = None  # the dedupe store, when the caller opened it (replay)


@contextlib.asynccontextmanager
async def offline_runtime(
    config: Config, metrics: Metrics | None = None, *, with_store: bool = False
) -> AsyncIterator[OfflineRun]:
    """The handlers and routes of `config`; `with_store` opens the dedupe store too, so a
    replay keeps to the ledger and Slack's conversations thread as the daemon's do."""
    metrics = metrics or Metrics()
    async with contextlib.AsyncExitStack() as stack:
        aws = await stack.enter_async_context(AwsClients())
        http = await stack.enter_async_context(aiohttp.ClientSession())
        store: Store | None = None
        if with_store:
            store = await open_store(config.dedupe, aws, config.queue.resolved_region)
            stack.push_async_callback(store.aclose)
        # Without a store, each app-mode Slack handler keeps its conversations in process.
        resources = HandlerResources(http, aws, metrics, conversations=store)
        handlers: dict[str, Handler] = {
            h.name: build_handler(h, config, resources) for h in config.handlers
        }
        enricher = ImageEnricher.from_config(config, aws) if config.enrich.describe_images else None
        try:
            runtime = Runtime(
                config, Router(config.handlers), handlers, silences=Silences(config.silences)
            )
            yield OfflineRun(config, runtime, resources, enricher, store)
        finally:
            for handler in handlers.values():
                await handler.aclose()
            if enricher is not None:
                await enricher.aclose()


async def test_event(
    run: OfflineRun, event: dict[str, Any], only: str | None, dry_run: bool
) -> Iterable[tuple[str, DeliveryResult | Any]]:
    """Route one synthetic event; deliver it (or render it, with dry_run) to each handler."""
    decoded = decode(json.dumps(event))
    if not isinstance(decoded, AmiStateChange):
        raise ValueError("not an AMI state-change event")
    lookup = (
        await run.enricher.lookup(decoded.image_id, decoded.region, decoded.account)
        if run.enricher
        else NOT_ASKED
    )
    if only is not None:
        names: tuple[str, ...] = (only,)
    else:
        names = run.runtime.router.route(decoded, lookup.image if lookup.known else None)
    results: list[tuple[str, DeliveryResult | Any]] = []
    for name in names:
        handler = run.runtime.handlers[name]
        notification = Notification(decoded, lookup.image)
        if dry_run:
            results.append((name, handler.render(notification)))
            continue
        handler_config = run.runtime.handler_configs[name]
        result = await deliver(
            handler,
            notification,
            timeout=run.config.timeout_for(handler_config),
            retry=run.config.retry_for(handler_config),
            metrics=run.resources.metrics,
        )
        results.append((name, result))
    return results


async def replay(run: OfflineRun, bodies: Iterable[str], *, use_dedupe: bool) -> list[Outcome]:
    """Handle message bodies (drained from a dead-letter queue, say) through the pipeline."""
    ledger: Store
    if use_dedupe and run.store is not None:
        ledger = run.store  # offline_runtime's: it closes it
    elif use_dedupe:
        ledger = await open_store(
            run.config.dedupe, run.resources.aws, run.config.queue.resolved_region
        )
    else:
        ledger = MemoryStore(run.config.dedupe.ttl)
    enricher = (
        ImageEnricher.from_config(run.config, run.resources.aws, memory=ledger)
        if run.config.enrich.describe_images
        else None
    )
    # Held as the daemon would hold them: the config's silences and the store's.
    silences = RunTimeSilences(ledger, run.resources.metrics)
    with contextlib.suppress(LedgerUnavailable):  # the claims say so, per message
        await silences.refresh()
    pipeline = Pipeline(
        ledger=ledger,
        metrics=run.resources.metrics,
        owner=f"replay:{uuid.uuid4().hex[:8]}",
        lease=run.config.queue.visibility_timeout,
        enricher=enricher,
        silences=silences,
        history=True,
    )
    # Bodies are handled one after another: a digest handler sends each at once.
    pipeline.batcher.drain()
    try:
        return [await pipeline.process(body, run.runtime) for body in bodies]
    finally:
        if enricher is not None:
            await enricher.aclose()
        if ledger is not run.store:
            await ledger.aclose()
