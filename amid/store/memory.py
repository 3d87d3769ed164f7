"""In-process store: fast, bounded, forgotten on restart."""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from amid.store.base import (
    SILENCE_KEPT,
    Claim,
    Conversation,
    ConversationStep,
    EventRecord,
    ExpectationState,
    ExpectationStep,
    ExpectationSteps,
    HistoryQuery,
    LeaseLost,
    SilenceRecord,
    select,
)


@dataclass(slots=True)
class _Record:
    expires_at: float
    owner: str | None = None
    lease_until: float = 0.0
    done: bool = False
    delivered: set[str] = field(default_factory=set)


class MemoryHistory:
    """The delivery record of the most recent `history_max` events, for `ttl` seconds: what
    the status page shows when nothing outlives the process."""

    _ttl: float
    _clock: Callable[[], float]
    history_max = 1000

    def __init__(self) -> None:
        self._history: OrderedDict[str, tuple[float, EventRecord]] = OrderedDict()

    def _write_record(self, record: EventRecord) -> None:
        now = self._clock()
        kept = self._history.pop(record.event_id, None)
        merged = kept[1].merged(record) if kept is not None and kept[0] > now else record
        self._history[record.event_id] = (now + self._ttl, merged)
        while len(self._history) > self.history_max:
            self._history.popitem(last=False)

    def _note_duplicate(self, event_id: str) -> None:
        kept = self._history.get(event_id)
        if kept is not None:
            until, record = kept
            self._history[event_id] = (until, replace(record, duplicates=record.duplicates + 1))

    async def events(self, query: HistoryQuery) -> list[EventRecord]:
        now = self._clock()
        return select((record for until, record in self._history.values() if until > now), query)


class MemoryStore(MemoryHistory, ExpectationSteps):
    """Keeps at most `max_events` events (oldest dropped first) for `ttl` seconds."""

    def __init__(
        self, ttl: float, max_events: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self._ttl = ttl
        self._max_events = max_events
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._images: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()
        self._expectations: dict[str, ExpectationState] = {}
        self._silences: dict[str, SilenceRecord] = {}
        self._conversations: OrderedDict[tuple[str, str], tuple[float, Conversation]] = (
            OrderedDict()
        )

    def _live(self, event_id: str, now: float) -> _Record | None:
        record = self._records.get(event_id)
        if record is not None and record.expires_at <= now:
            del self._records[event_id]
            return None
        return record

    async def claim(self, event_id: str, owner: str, lease: float) -> Claim | None:
        now = self._clock()
        record = self._live(event_id, now)
        if record is None:
            record = _Record(expires_at=now + self._ttl)
            self._records[event_id] = record
            while len(self._records) > self._max_events:
                self._records.popitem(last=False)
        if record.done:
            self._note_duplicate(event_id)
            return Claim(frozenset(record.delivered), done=True)
        if record.owner not in (None, owner) and record.lease_until > now:
            return None
        record.owner, record.lease_until = owner, now + lease
        return Claim(frozenset(record.delivered))

    def _held(self, event_id: str, owner: str) -> _Record:
        now = self._clock()
        record = self._live(event_id, now)
        # Held = still ours: a lapsed lease nobody took over is still ours to record on.
        if record is None or record.owner != owner:
            raise LeaseLost(f"lease on {event_id} is no longer held by {owner}")
        return record

    async def extend(self, event_id: str, owner: str, lease: float) -> bool:
        try:
            record = self._held(event_id, owner)
        except LeaseLost:
            return False
        record.lease_until = self._clock() + lease
        return True

    async def record_delivery(self, event_id: str, handler: str, owner: str) -> None:
        self._held(event_id, owner).delivered.add(handler)

    async def complete(
        self,
        event_id: str,
        owner: str,
        delivered: Collection[str] = (),
        record: EventRecord | None = None,
    ) -> None:
        kept = self._held(event_id, owner)
        kept.delivered.update(delivered)
        kept.done, kept.owner = True, None
        if record is not None:
            self._write_record(record)

    async def release(self, event_id: str, owner: str, record: EventRecord | None = None) -> None:
        kept = self._records.get(event_id)
        if kept is not None and kept.owner == owner:
            kept.owner, kept.lease_until = None, 0.0
        if record is not None:
            self._write_record(record)

    async def aclose(self) -> None:
        return None

    # --- images ---

    async def remember(
        self, region: str, image_id: str, image: Mapping[str, Any], keep: float
    ) -> None:
        key = (region, image_id)
        self._images.pop(key, None)
        self._images[key] = (self._clock() + keep, copy.deepcopy(dict(image)))
        while len(self._images) > self._max_events:
            self._images.popitem(last=False)

    async def remember_many(
        self, region: str, images: Mapping[str, Mapping[str, Any]], keep: float
    ) -> None:
        for image_id, image in images.items():
            await self.remember(region, image_id, image, keep)

    async def recall(self, region: str, image_id: str) -> dict[str, Any] | None:
        kept = self._images.get((region, image_id))
        if kept is None:
            return None
        if kept[0] <= self._clock():
            del self._images[(region, image_id)]
            return None
        return copy.deepcopy(kept[1])

    # --- digests ---

    async def record_digest(self, handler: str, event_ids: Sequence[str], owner: str) -> None:
        records = [self._held(event_id, owner) for event_id in event_ids]  # all, or none
        for record in records:
            record.delivered.add(handler)

    # --- expectations ---

    async def expectation(self, name: str) -> ExpectationState | None:
        return self._expectations.get(name)

    async def _change_expectation(
        self, name: str, started: float | None, step: ExpectationStep
    ) -> ExpectationState:
        state = self._expectations.get(name) or ExpectationState(
            name, started=round(self._clock(), 3) if started is None else started
        )
        self._expectations[name] = state = step(state)
        return state

    # --- silences: kept for this process only (`amid silence` refuses this backend) ---

    async def add_silence(self, silence: SilenceRecord) -> None:
        if silence.id in self._silences:
            raise ValueError(f"a silence with id {silence.id} exists")
        self._silences[silence.id] = silence

    async def silences(self) -> list[SilenceRecord]:
        now = self._clock()
        kept = [s for s in self._silences.values() if s.ends + SILENCE_KEPT > now]
        return sorted(kept, key=lambda s: (s.ends, s.id))

    async def expire_silence(self, silence_id: str, at: float) -> SilenceRecord | None:
        silence = self._silences.get(silence_id)
        if silence is None or silence.ends + SILENCE_KEPT <= self._clock():
            return None
        if silence.ends > at:
            self._silences[silence_id] = silence = replace(silence, ends=at)
        return silence

    # --- conversations ---

    async def conversation(self, handler: str, key: str) -> Conversation | None:
        kept = self._conversations.get((handler, key))
        return kept[1] if kept is not None and kept[0] > self._clock() else None

    async def change_conversation(
        self, handler: str, key: str, step: ConversationStep, keep: float
    ) -> Conversation:
        now = self._clock()
        conversation = step(await self.conversation(handler, key), now)
        self._conversations.pop((handler, key), None)
        self._conversations[(handler, key)] = (now + keep, conversation)
        while len(self._conversations) > self._max_events:
            self._conversations.popitem(last=False)
        return conversation
