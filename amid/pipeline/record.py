"""The delivery record of one event (SPEC 3h), said once from what the pipeline knows: pure.

`process` hands the record to the ledger's own write (`complete`, `release`), so it is
kept in the same transaction as the deliveries it tells of.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from amid.events import AmiStateChange
from amid.pipeline.deliver import DeliveryResult
from amid.store.base import EventRecord, HandlerRecord


def handler_record(result: DeliveryResult, digest: bool) -> HandlerRecord:
    if result.silence is not None:
        return HandlerRecord("silenced", result.attempts, silence=result.silence)
    if result.delivered:
        return HandlerRecord(
            "digest" if digest else "delivered", result.attempts, None, result.reference
        )
    # HandlerError's text never holds a secret (its contract); the reason is the fallback.
    return HandlerRecord("failed", result.attempts, result.error or result.reason)


def event_record(
    event: AmiStateChange,
    *,
    received: float,
    outcome: str,
    matched: Iterable[str] = (),
    results: Iterable[DeliveryResult] = (),
    digests: Collection[str] = (),
    waiting: Iterable[str] = (),
    image: Mapping[str, Any] | None = None,
) -> EventRecord:
    """`digests` are the handlers that send digests; `waiting` those left for the image."""
    handlers = {r.handler: handler_record(r, r.handler in digests) for r in results}
    for name in waiting:
        handlers.setdefault(name, HandlerRecord("waiting", 0, "the image could not be described"))
    if (
        outcome == "handled"
        and handlers
        and all(h.outcome == "silenced" for h in handlers.values())
    ):
        outcome = "silenced"
    tags = image.get("tags") if image else None
    image_name = image.get("name") if image else None
    return EventRecord(
        event_id=event.id,
        image_id=event.image_id,
        state=event.state,
        account=event.account,
        region=event.region,
        time=event.time,
        received=received,
        outcome=outcome,
        matched=tuple(sorted(matched)),
        handlers=handlers,
        image_name=str(image_name) if image_name is not None else None,
        image_tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else None,
        duplicates=1 if outcome == "duplicate" else 0,
        updated=received,
    )
