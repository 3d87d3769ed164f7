"""The delivery record of one event (SPEC 3h), said once from what the pipeline knows: pure.

`process` hands the record to the ledger's own write (`complete`, `release`), so it is
kept in the same transaction as the deliveries it tells of. Built once per event on the
hot path, so it is built plainly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from amid.events import AmiStateChange
from amid.pipeline.deliver import DeliveryResult
from amid.store.base import EventRecord, HandlerRecord

_NO_IMAGE = "the image could not be described"


def handler_record(result: DeliveryResult, digest: bool) -> HandlerRecord:
    if result.silence is not None:
        return HandlerRecord("silenced", result.attempts, silence=result.silence)
    if result.delivered:
        outcome = "digest" if digest else "delivered"
        return HandlerRecord(outcome, result.attempts, None, result.reference)
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
    for handler in waiting:
        handlers.setdefault(
            handler, HandlerRecord("waiting", 0, "the image could not be described")
        )
    if outcome == "handled" and handlers:
        if all(h.outcome == "silenced" for h in handlers.values()):
            outcome = "silenced"
    name: str | None = None
    tags: dict[str, str] | None = None
    if image:
        given_name, given_tags = image.get("name"), image.get("tags")
        name = str(given_name) if given_name is not None else None
        if isinstance(given_tags, Mapping):
            tags = {str(k): str(v) for k, v in given_tags.items()}
    return EventRecord(
        event.id,
        event.image_id,
        event.state,
        event.account,
        event.region,
        event.time,
        received,
        outcome,
        tuple(sorted(matched)),
        handlers,
        name,
        tags,
        1 if outcome == "duplicate" else 0,
        received,
    )
