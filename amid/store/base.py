"""What amid must remember, one small Protocol per kind of state.

- `Ledger`: which handlers have succeeded for which event, and who holds it now.
- `ImageMemory`: what was last learned of each image, so a deregistered one still has a name.

`Store` is all of them at once: every backend (memory, sqlite, dynamodb)
implements every kind, so one `dedupe` section configures where amid keeps
everything, and replicas sharing a dynamodb table share all of it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class LedgerUnavailable(Exception):
    """The store cannot be read or written now; the message must not be acknowledged."""


class LeaseLost(LedgerUnavailable):
    """Another owner took the event after this owner's lease expired."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The ledger's word on an event this owner now holds."""

    delivered: frozenset[str]
    done: bool = False


class Ledger(Protocol):
    """Guarantees 1 to 3 of SPEC section 2, for one process or (shared backend) many.

    Records live for the ledger's TTL; the clock is injected by each backend.
    """

    async def claim(self, event_id: str, owner: str, lease: float) -> Claim | None:
        """Hold `event_id` for `lease` seconds; None when another owner holds a live lease.

        A `done` event is returned without being held: it is a duplicate.
        """
        ...

    async def extend(self, event_id: str, owner: str, lease: float) -> bool:
        """Renew the lease; False when another owner took the event, or it was released."""
        ...

    async def record_delivery(self, event_id: str, handler: str, owner: str) -> None:
        """Record that `handler` succeeded for the event.

        Raises LeaseLost when another owner has claimed the event since (its lease had
        lapsed) or it was released: a stale owner never records over another's work. A
        lapsed lease that nobody took over is still this owner's.
        """
        ...

    async def complete(self, event_id: str, owner: str, delivered: Collection[str] = ()) -> None:
        """Every matching handler succeeded: record `delivered` (the handlers not recorded yet),
        mark the event done and drop the lease, in one step; LeaseLost when not held."""
        ...

    async def release(self, event_id: str, owner: str) -> None:
        """Drop the lease without completing (a handler failed, or shutdown)."""
        ...

    async def record_digest(self, handler: str, event_ids: Sequence[str], owner: str) -> None:
        """Record that `handler` succeeded for every event of a digest, in one atomic write.

        At most 100 events (`DigestConfig.max_events`). Raises LeaseLost, and records
        nothing, when any of them is no longer held by `owner`. A later claim's
        `delivered` includes `handler` for each of them.
        """
        ...

    async def aclose(self) -> None: ...


class ImageMemory(Protocol):
    """Per (region, image id), the image's facts (the `image` object, JSON-able), kept for
    `keep` seconds after they were last stored; each store renews the time. Raises
    LedgerUnavailable when the store cannot be read or written now."""

    async def remember(
        self, region: str, image_id: str, image: Mapping[str, Any], keep: float
    ) -> None: ...

    async def remember_many(
        self, region: str, images: Mapping[str, Mapping[str, Any]], keep: float
    ) -> None:
        """`images` maps image ids to their facts; written in batches (`amid images sync`)."""
        ...

    async def recall(self, region: str, image_id: str) -> dict[str, Any] | None:
        """The facts last remembered, None when none are kept (or they have expired)."""
        ...


class Store(Ledger, ImageMemory, Protocol):
    """Every kind of state amid keeps, in one backend."""
