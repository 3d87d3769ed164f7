"""What amid must remember, one small Protocol per kind of state.

- `Ledger`: which handlers have succeeded for which event, and who holds it now.
- `ImageMemory`: what was last learned of each image, so a deregistered one still has a name.
- `ExpectationStore`: per expectation, when its clock started, the last matching
  event, and the overdue episode: which handlers have been told.
- `SilenceStore`: the silences added at run time (`amid silence add`), read by every replica.
- `ConversationStore`: per (handler, key), the Slack conversation it keeps (SPEC 3d).
- `History`: what amid did with each event (SPEC 3h), written with the ledger's own
  writes (`complete` and `release` carry the event's `EventRecord`).

`Store` is all of them at once: every backend (memory, sqlite, dynamodb)
implements every kind, so one `dedupe` section configures where amid keeps
everything, and replicas sharing a dynamodb table share all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol


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

        A `done` event is returned without being held: it is a duplicate, and the copy is
        counted on the event's delivery record (`EventRecord.duplicates`) when one is kept.
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

    async def complete(
        self,
        event_id: str,
        owner: str,
        delivered: Collection[str] = (),
        record: EventRecord | None = None,
    ) -> None:
        """Every matching handler succeeded: record `delivered` (the handlers not recorded yet),
        mark the event done and drop the lease, in one step; LeaseLost when not held.
        `record` (the history) is written in the same step."""
        ...

    async def release(self, event_id: str, owner: str, record: EventRecord | None = None) -> None:
        """Drop the lease without completing (a handler failed, or shutdown); `record`, when
        given, is written with it (also when the lease was no longer held)."""
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


@dataclass(frozen=True, slots=True)
class ExpectationState:
    """What amid remembers of one expectation (SPEC 3c). Times are epoch seconds.

    An episode is named by the moment it became due (`episode`); `told` are the
    handlers told `overdue` in it. When it ends it moves to `ended`, where
    `ended_told` are the handlers told `overdue` and `ended_recovered` those told
    `recovered`.
    """

    name: str
    started: float  # when amid first ran with it: the clock's start
    last_seen: float | None = None  # the last matching event; only ever moves forward
    episode: float | None = None  # the open overdue episode
    told: frozenset[str] = frozenset()
    ended: float | None = None  # the last episode that ended
    ended_told: frozenset[str] = frozenset()
    ended_recovered: frozenset[str] = frozenset()

    # The writes, as pure steps every backend applies atomically (so all agree).

    def seen(self, at: float) -> ExpectationState:
        if self.last_seen is not None and self.last_seen >= at:
            return self
        return replace(self, last_seen=at)

    def opened(self, episode: float) -> ExpectationState:
        if self.episode is not None:
            return self
        return replace(self, episode=episode, told=frozenset())

    def closed(self, episode: float) -> ExpectationState:
        if self.episode != episode:
            return self
        return replace(
            self,
            episode=None,
            told=frozenset(),
            ended=episode,
            ended_told=self.told,
            ended_recovered=frozenset(),
        )

    def marked(self, episode: float, status: NoticeStatus, handler: str) -> ExpectationState:
        if status == "overdue" and self.episode == episode:
            return replace(self, told=self.told | {handler})
        if status == "overdue" and self.ended == episode:
            # Told while another replica ended the episode: it is owed a `recovered` too.
            return replace(self, ended_told=self.ended_told | {handler})
        if status == "recovered" and self.ended == episode:
            return replace(self, ended_recovered=self.ended_recovered | {handler})
        return self


NoticeStatus = Literal["overdue", "recovered"]


class ExpectationStore(Protocol):
    """Expectation state, shared by replicas with a shared backend; items never expire.

    Every write is atomic and safe to repeat or to race with another replica's.
    """

    async def expectation(self, name: str) -> ExpectationState | None:
        """The state, or None when amid has never run with this expectation."""
        ...

    async def start_expectation(self, name: str, now: float) -> ExpectationState:
        """The state, created with its clock started at `now` when new."""
        ...

    async def saw_expected(self, name: str, at: float, now: float) -> None:
        """A matching event at `at`: `last_seen` becomes `at` when later (created when new)."""
        ...

    async def open_episode(self, name: str, episode: float) -> ExpectationState:
        """Open the overdue episode `episode`, unless one is open already."""
        ...

    async def close_episode(self, name: str, episode: float) -> ExpectationState:
        """End `episode` (it moves to `ended`); nothing happens unless it is the open one."""
        ...

    async def mark_told(
        self, name: str, episode: float, status: NoticeStatus, handler: str
    ) -> None:
        """`handler` was told `status` in `episode` (open or ended); else nothing happens."""
        ...


ExpectationStep = Callable[[ExpectationState], ExpectationState]


class ExpectationSteps:
    """`ExpectationStore`'s writes, each a pure step of `ExpectationState`; a backend
    supplies only `_change_expectation`, which applies one step atomically."""

    async def _change_expectation(
        self, name: str, started: float | None, step: ExpectationStep
    ) -> ExpectationState:
        """Read, step and write back atomically; created with its clock at `started` (or
        the store's now) when new."""
        raise NotImplementedError

    async def start_expectation(self, name: str, now: float) -> ExpectationState:
        return await self._change_expectation(name, now, lambda state: state)

    async def saw_expected(self, name: str, at: float, now: float) -> None:
        await self._change_expectation(name, now, lambda state: state.seen(at))

    async def open_episode(self, name: str, episode: float) -> ExpectationState:
        return await self._change_expectation(name, None, lambda state: state.opened(episode))

    async def close_episode(self, name: str, episode: float) -> ExpectationState:
        return await self._change_expectation(name, None, lambda state: state.closed(episode))

    async def mark_told(
        self, name: str, episode: float, status: NoticeStatus, handler: str
    ) -> None:
        await self._change_expectation(
            name, None, lambda state: state.marked(episode, status, handler)
        )


# An ended silence is kept this long for `amid silence list --all` (SPEC 3g).
SILENCE_KEPT = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    """A silence added at run time (SPEC 3g). Times are epoch seconds."""

    id: str
    match: Mapping[str, Any]  # an event pattern (JSON-able)
    handlers: tuple[str, ...]  # empty: every handler
    starts: float
    ends: float
    author: str
    comment: str


class SilenceStore(Protocol):
    """Run-time silences, shared by replicas with a shared backend; one is forgotten
    SILENCE_KEPT after its end. Raises LedgerUnavailable when the store cannot answer."""

    async def add_silence(self, silence: SilenceRecord) -> None:
        """Keep `silence`; ValueError when its id is taken."""
        ...

    async def silences(self) -> list[SilenceRecord]:
        """Every silence kept (ended ones too, for SILENCE_KEPT), ordered by `ends`."""
        ...

    async def expire_silence(self, silence_id: str, at: float) -> SilenceRecord | None:
        """End the silence at `at` (unless it ended earlier); None when no such silence."""
        ...


# --- conversations (SPEC 3d) ---

_KEPT_REPLIES = 50  # the event ids a conversation remembers having replied for
_KEPT_HISTORY = 20  # the history line's entries (the latest)

# One step of the history line: (when it happened, epoch seconds; "available 1 May 09:12").
Entry = tuple[float, str]


@dataclass(frozen=True, slots=True)
class Conversation:
    """One key's living Slack message: where its parent is, what it shows.

    Before the parent is posted the key is only claimed (`owner`, until `claimed_until`),
    so that one poster starts it. `replies` maps the events already replied in the thread
    to their reply's ts: the reply is sent once, whatever happens to the update after it.
    `shown` is the message of the latest event (by its time, so events that arrive out of
    order leave the parent on the newest state), as JSON; `history` is in time order.
    """

    channel: str = ""
    ts: str = ""  # the parent's; empty while claimed or released
    history: tuple[Entry, ...] = ()
    replies: tuple[tuple[str, str], ...] = ()  # (event id, reply ts), newest last
    shown: str = ""
    shown_at: float = 0.0
    owner: str | None = None
    claimed_until: float = 0.0

    @property
    def started(self) -> bool:
        return bool(self.ts)

    def reply_to(self, event_id: str) -> str | None:
        """The ts of the reply already posted for `event_id`, else None."""
        return next((ts for kept, ts in self.replies if kept == event_id), None)

    def told(self, event_id: str, ts: str, entry: Entry, shown: str) -> Conversation:
        """With `event_id`'s message in the conversation (once: a repeat changes nothing)."""
        if self.reply_to(event_id) is not None:
            return self
        newest = entry[0] >= self.shown_at
        return replace(
            self,
            history=tuple(sorted((*self.history, entry), key=lambda e: e[0]))[-_KEPT_HISTORY:],
            replies=(*self.replies, (event_id, ts))[-_KEPT_REPLIES:],
            shown=shown if newest else self.shown,
            shown_at=entry[0] if newest else self.shown_at,
        )

    def document(self) -> dict[str, Any]:
        """As JSON, for the backends that keep it as one string."""
        return {
            "channel": self.channel,
            "ts": self.ts,
            "history": [list(entry) for entry in self.history],
            "replies": [list(pair) for pair in self.replies],
            "shown": self.shown,
            "shown_at": self.shown_at,
            "owner": self.owner,
            "claimed_until": self.claimed_until,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Conversation:
        return cls(
            channel=str(document.get("channel", "")),
            ts=str(document.get("ts", "")),
            history=tuple((float(at), str(text)) for at, text in document.get("history", ())),
            replies=tuple((str(e), str(t)) for e, t in document.get("replies", ())),
            shown=str(document.get("shown", "")),
            shown_at=float(document.get("shown_at", 0.0)),
            owner=document.get("owner"),
            claimed_until=float(document.get("claimed_until", 0.0)),
        )


# A write: the conversation as it is (None when there is none) and the store's now -> as it
# must become. Every backend applies one atomically, so replicas agree.
ConversationStep = Callable[[Conversation | None, float], Conversation]


def claim_conversation(owner: str, lease: float) -> ConversationStep:
    """Hold an unstarted key for `lease` seconds to post its parent; a started one, or one
    another owner holds, is left as it is (the caller reads who has it)."""

    def step(old: Conversation | None, now: float) -> Conversation:
        old = old or Conversation()
        if old.started or (old.owner not in (None, owner) and old.claimed_until > now):
            return old
        return replace(old, owner=owner, claimed_until=now + lease)

    return step


def start_conversation(
    channel: str, ts: str, event_id: str, entry: Entry, shown: str
) -> ConversationStep:
    """The parent is posted (first, or again after the old one was deleted); the claim ends.
    An event whose reply is already kept (its update found the parent deleted) keeps it."""

    def step(old: Conversation | None, now: float) -> Conversation:
        told = (old or Conversation()).told(event_id, ts, entry, shown)
        return replace(told, channel=channel, ts=ts, owner=None, claimed_until=0.0)

    return step


def reply_in_conversation(event_id: str, ts: str, entry: Entry, shown: str) -> ConversationStep:
    """The reply for `event_id` is in the thread (recorded once: a repeat changes nothing)."""

    def step(old: Conversation | None, now: float) -> Conversation:
        return (old or Conversation()).told(event_id, ts, entry, shown)

    return step


def release_conversation(owner: str) -> ConversationStep:
    """The parent could not be posted: free the key, so its next event tries again."""

    def step(old: Conversation | None, now: float) -> Conversation:
        old = old or Conversation()
        if old.started or old.owner != owner:
            return old
        return replace(old, owner=None, claimed_until=0.0)

    return step


class ConversationStore(Protocol):
    """The narrow door of the handlers that remember (Slack's app mode): per (handler, key)
    a `Conversation`, kept `keep` seconds after its last write, shared by replicas with a
    shared backend. Raises LedgerUnavailable when the store cannot be read or written now."""

    async def conversation(self, handler: str, key: str) -> Conversation | None:
        """As last written, None when there is none (or it expired)."""
        ...

    async def change_conversation(
        self, handler: str, key: str, step: ConversationStep, keep: float
    ) -> Conversation:
        """Apply `step` atomically (racing writers are stepped again); the result."""
        ...


HandlerOutcome = Literal["delivered", "failed", "silenced", "digest", "waiting"]


@dataclass(frozen=True, slots=True)
class HandlerRecord:
    """What became of one event for one handler, over every delivery so far."""

    outcome: str  # HandlerOutcome
    attempts: int = 0  # summed over deliveries
    error: str | None = None  # the last error (HandlerError text: never a secret)
    reference: str | None = None  # the destination's (SNS MessageId, Slack channel/ts, ...)
    silence: str | None = None  # the silence that held it


@dataclass(frozen=True, slots=True)
class EventRecord:
    """The delivery record of one event (SPEC 3h). Times are epoch seconds, except `time`,
    the event's own RFC 3339 time. `handlers` holds the handlers this write knows of; a
    later write merges into the kept record (see `merged`)."""

    event_id: str
    image_id: str
    state: str
    account: str
    region: str
    time: str
    received: float
    outcome: str  # handled | duplicate | silenced | retry
    matched: tuple[str, ...] = ()
    handlers: Mapping[str, HandlerRecord] = field(default_factory=dict)
    image_name: str | None = None
    image_tags: Mapping[str, str] | None = None
    duplicates: int = 0  # copies that came again after it was handled
    updated: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """JSON-able, for a backend to keep (see `from_json`)."""
        return {
            "event_id": self.event_id,
            "image_id": self.image_id,
            "state": self.state,
            "account": self.account,
            "region": self.region,
            "time": self.time,
            "received": self.received,
            "outcome": self.outcome,
            "duplicates": self.duplicates,
            "image_name": self.image_name,
            "image_tags": dict(self.image_tags) if self.image_tags is not None else None,
            "matched": list(self.matched),
            "handlers": {
                name: {
                    "outcome": entry.outcome,
                    "attempts": entry.attempts,
                    "error": entry.error,
                    "reference": entry.reference,
                    "silence": entry.silence,
                }
                for name, entry in sorted(self.handlers.items())
            },
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventRecord:
        handlers = {
            str(name): HandlerRecord(
                outcome=str(entry["outcome"]),
                attempts=int(entry.get("attempts") or 0),
                error=entry.get("error"),
                reference=entry.get("reference"),
                silence=entry.get("silence"),
            )
            for name, entry in (data.get("handlers") or {}).items()
        }
        tags = data.get("image_tags")
        return cls(
            event_id=str(data["event_id"]),
            image_id=str(data.get("image_id") or ""),
            state=str(data.get("state") or ""),
            account=str(data.get("account") or ""),
            region=str(data.get("region") or ""),
            time=str(data.get("time") or ""),
            received=float(data.get("received") or 0.0),
            outcome=str(data.get("outcome") or ""),
            matched=tuple(data.get("matched") or ()),
            handlers=handlers,
            image_name=data.get("image_name"),
            image_tags={str(k): str(v) for k, v in tags.items()} if tags is not None else None,
            duplicates=int(data.get("duplicates") or 0),
            updated=float(data.get("updated") or 0.0),
        )

    def merged(self, newer: EventRecord) -> EventRecord:
        """`newer` written over this kept record, as every backend does it: the first
        `received` stays; a duplicate only counts; handlers are merged name by name
        (attempts add up); the image's facts are kept when the newer write lacks them."""
        if newer.outcome == "duplicate":
            return replace(
                self,
                duplicates=self.duplicates + max(newer.duplicates, 1),
                updated=max(self.updated, newer.updated),
            )
        handlers = dict(self.handlers)
        for name, entry in newer.handlers.items():
            old = handlers.get(name)
            handlers[name] = (
                entry if old is None else replace(entry, attempts=old.attempts + entry.attempts)
            )
        return replace(
            newer,
            received=self.received,
            matched=tuple(sorted({*self.matched, *newer.matched})),
            handlers=handlers,
            image_name=newer.image_name if newer.image_name is not None else self.image_name,
            image_tags=newer.image_tags if newer.image_tags is not None else self.image_tags,
            duplicates=self.duplicates + newer.duplicates,
        )


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which records to read: all filters apply together; newest (by `received`) first."""

    image_id: str | None = None
    event_id: str | None = None
    handler: str | None = None  # events that matched this handler
    since: float | None = None  # epoch seconds: received at or after
    limit: int = 50


class History(Protocol):
    """The delivery record, kept for the ledger's TTL (the memory backend: a bounded
    recent window). Written by the ledger's own writes: `complete` and `release` carry
    the record, and `claim` counts a duplicate copy on it. Raises LedgerUnavailable
    when the store cannot be read."""

    async def events(self, query: HistoryQuery) -> list[EventRecord]:
        """The records `query` selects, newest first, at most `query.limit`."""
        ...


def select(records: Iterable[EventRecord], query: HistoryQuery) -> list[EventRecord]:
    """`query` over records in memory, newest first: the memory backend's read, and every
    backend's final filter."""
    chosen = [
        record
        for record in records
        if (query.image_id is None or record.image_id == query.image_id)
        and (query.event_id is None or record.event_id == query.event_id)
        and (query.handler is None or query.handler in record.matched)
        and (query.since is None or record.received >= query.since)
    ]
    chosen.sort(key=lambda record: (record.received, record.event_id), reverse=True)
    return chosen[: query.limit]


class Store(
    Ledger, ImageMemory, ExpectationStore, SilenceStore, ConversationStore, History, Protocol
):
    """Every kind of state amid keeps, in one backend."""
