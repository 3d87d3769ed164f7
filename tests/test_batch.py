"""The batching stage: its pure rules with an injected clock, then its shell with a fake handler.

The shell's tests use a recording stand-in handler and the memory ledger: a
unit test of one stage; `tests/test_digest_end_to_end.py` runs the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from amid.config import DigestConfig, RetryConfig
from amid.handlers.base import Digest, HandlerError, Notification, Sendable
from amid.metrics import Metrics
from amid.pipeline.batch import Batcher, GroupKey, Groups, Member, Target, group_values
from amid.store.memory import MemoryStore
from tests.handlers.conftest import seed_event

WAIT = 30.0


def key(*values: str, handler: str = "slack") -> GroupKey:
    return GroupKey(handler, 1, values)


def member(event_id: str) -> Member[str]:
    return Member(event_id, event_id)


def ids(group: Any) -> list[str]:
    return list(group.event_ids)


class TestGroupValues:
    def test_dotted_paths_reach_into_the_event(self) -> None:
        event = {"account": "1", "region": "r", "detail": {"State": "failed"}}
        paths = ("account", "region", "detail.State")
        assert group_values(event, paths) == {
            "account": "1",
            "region": "r",
            "detail.State": "failed",
        }

    def test_a_missing_value_groups_as_null(self) -> None:
        event = {"detail": {"State": "failed"}, "region": "r"}
        assert group_values(event, ("detail.Team", "region.name", "nowhere")) == {
            "detail.Team": None,
            "region.name": None,
            "nowhere": None,
        }


class TestWindow:
    def test_a_group_is_due_when_its_first_event_has_waited(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        assert groups.add(key("a"), member("e1"), wait=WAIT, max_events=50, now=100.0) == []
        assert groups.add(key("a"), member("e2"), wait=WAIT, max_events=50, now=120.0) == []
        assert groups.next_deadline() == 130.0
        assert groups.due(129.9) == []
        [group] = groups.due(130.0)
        assert ids(group) == ["e1", "e2"]
        assert groups.due(1000.0) == []
        assert groups.next_deadline() is None

    def test_an_event_after_the_group_went_opens_a_new_window(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        groups.add(key("a"), member("e1"), wait=WAIT, max_events=50, now=0.0)
        groups.due(WAIT)
        groups.add(key("a"), member("e2"), wait=WAIT, max_events=50, now=40.0)
        assert groups.next_deadline() == 70.0


class TestSizeCap:
    def test_a_group_reaching_max_events_is_due_at_once(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        for number in range(2):
            assert groups.add(key("a"), member(f"e{number}"), wait=WAIT, max_events=3, now=0) == []
        [group] = groups.add(key("a"), member("e2"), wait=WAIT, max_events=3, now=1.0)
        assert ids(group) == ["e0", "e1", "e2"]
        assert groups.held == 0
        groups.add(key("a"), member("e3"), wait=WAIT, max_events=3, now=2.0)
        assert groups.next_deadline() == 2.0 + WAIT


class TestGroupsByKey:
    def test_events_with_other_values_or_handlers_stay_apart(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        groups.add(key("111", "failed"), member("e1"), wait=WAIT, max_events=50, now=0)
        groups.add(key("111", "deregistered"), member("e2"), wait=WAIT, max_events=50, now=1)
        groups.add(key("222", "failed"), member("e3"), wait=WAIT, max_events=50, now=2)
        groups.add(
            key("111", "failed", handler="sns"), member("e1"), wait=WAIT, max_events=50, now=3
        )
        groups.add(key("111", "failed"), member("e4"), wait=WAIT, max_events=50, now=4)
        assert groups.pending("slack") == 4
        assert groups.pending("sns") == 1
        assert groups.held == 4  # e1 waits for two handlers: one message
        assert [ids(g) for g in groups.due(1000.0)] == [["e1", "e4"], ["e2"], ["e3"], ["e1"]]

    def test_a_reloaded_handler_starts_new_groups_and_the_old_keep_their_window(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        old, new = GroupKey("slack", 1, ("a",)), GroupKey("slack", 2, ("a",))
        groups.add(old, member("e1"), wait=WAIT, max_events=50, now=0)
        groups.add(new, member("e2"), wait=5.0, max_events=50, now=1)
        assert [ids(g) for g in groups.due(6.0)] == [["e2"]]
        assert [ids(g) for g in groups.due(WAIT)] == [["e1"]]


class TestBudget:
    def test_when_held_events_fill_the_budget_the_oldest_group_goes_at_once(self) -> None:
        groups: Groups[str] = Groups(budget=3)
        assert groups.add(key("a"), member("e1"), wait=WAIT, max_events=50, now=0) == []
        assert groups.add(key("b"), member("e2"), wait=WAIT, max_events=50, now=1) == []
        [group] = groups.add(key("a"), member("e3"), wait=WAIT, max_events=50, now=2)
        assert ids(group) == ["e1", "e3"]
        assert groups.held == 1

    def test_a_burst_far_larger_than_the_budget_drains_without_any_window_ending(self) -> None:
        groups: Groups[str] = Groups(budget=5)
        sent: list[list[str]] = []
        for number in range(60):
            ready = groups.add(key("a"), member(f"e{number}"), wait=3600, max_events=100, now=0)
            sent += [ids(group) for group in ready]
            assert groups.held < 5
        sent += [ids(group) for group in groups.take_all()]
        assert sorted(e for group in sent for e in group) == sorted(f"e{n}" for n in range(60))
        assert len(sent) == 12


class TestFlush:
    def test_take_all_empties_every_group_oldest_first(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        groups.add(key("b"), member("e1"), wait=WAIT, max_events=50, now=0)
        groups.add(key("a"), member("e2"), wait=WAIT, max_events=50, now=1)
        assert [ids(g) for g in groups.take_all()] == [["e1"], ["e2"]]
        assert groups.held == 0 and groups.next_deadline() is None

    def test_take_handlers_takes_only_theirs(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        groups.add(key("a"), member("e1"), wait=WAIT, max_events=50, now=0)
        groups.add(key("a", handler="gone"), member("e1"), wait=WAIT, max_events=50, now=0)
        assert [g.key.handler for g in groups.take_handlers({"gone"})] == ["gone"]
        assert groups.pending("slack") == 1 and groups.held == 1

    def test_a_discarded_member_leaves_its_group_and_an_empty_group_goes(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        first, second = member("e1"), member("e2")
        groups.add(key("a"), first, wait=WAIT, max_events=50, now=0)
        groups.add(key("a"), second, wait=WAIT, max_events=50, now=0)
        assert groups.discard(key("a"), first) is True
        assert groups.discard(key("a"), first) is False
        assert groups.discard(key("a"), second) is True
        assert groups.next_deadline() is None and groups.held == 0

    def test_oldest_takes_the_group_opened_first(self) -> None:
        groups: Groups[str] = Groups(budget=64)
        groups.add(key("b"), member("e1"), wait=WAIT, max_events=50, now=0)
        groups.add(key("a"), member("e2"), wait=WAIT, max_events=50, now=1)
        group = groups.oldest()
        assert group is not None and ids(group) == ["e1"]


# --------------------------------------------------------------------------- the shell


@dataclass
class Recorder:
    """A stand-in handler: records what it is handed; fails the first `failures` tries."""

    name: str = "digest-slack"
    failures: int = 0
    sent: list[Sendable] = field(default_factory=list)

    def render(self, message: Sendable) -> Any:
        return message

    async def pace(self) -> None:
        return None

    async def send(self, message: Sendable) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise HandlerError("boom", retryable=True, reason="http_500")
        self.sent.append(message)

    async def aclose(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OWNER = "me"
RETRY = RetryConfig(attempts=3, initial_backoff=0.001, max_backoff=0.002)


def notification(number: int, state: str = "deregistered") -> Notification:
    event = seed_event(state, ImageId=f"ami-{number:017x}")
    raw = {**event.raw, "id": f"event-{number}"}
    return Notification(
        type(event)(
            id=raw["id"],
            image_id=event.image_id,
            state=event.state,
            error_message=event.error_message,
            account=event.account,
            region=event.region,
            time=event.time,
            raw=raw,
        ),
        {},
    )


@pytest.fixture
async def ledger() -> MemoryStore:
    return MemoryStore(ttl=3600)


@pytest.fixture
async def batcher(ledger: MemoryStore) -> AsyncIterator[Batcher]:
    stage = Batcher(ledger=ledger, metrics=Metrics(), owner=OWNER, budget=64)
    yield stage
    await stage.aclose()


def target(handler: Recorder, **digest: Any) -> Target:
    return Target(handler, DigestConfig(**{"wait": 60, **digest}), timeout=5.0, retry=RETRY)


async def submit_all(
    batcher: Batcher, ledger: MemoryStore, to: Target, notes: list[Notification]
) -> list[asyncio.Task[Any]]:
    for note in notes:
        assert await ledger.claim(note.event.id, OWNER, 60) is not None
    tasks = [asyncio.create_task(batcher.submit(to, note)) for note in notes]
    await asyncio.sleep(0)  # every submit has joined its group
    return tasks


class TestBatcher:
    async def test_a_full_group_is_one_digest_recorded_for_every_event(
        self, batcher: Batcher, ledger: MemoryStore
    ) -> None:
        handler = Recorder()
        notes = [notification(n) for n in range(3)]
        tasks = await submit_all(batcher, ledger, target(handler, max_events=3), notes)
        results = await asyncio.gather(*tasks)
        assert all(r.delivered for r in results)
        [digest] = handler.sent
        assert isinstance(digest, Digest) and digest.count == 3
        assert dict(digest.group) == {
            "account": "012345678901",
            "region": "us-east-1",
            "detail.State": "deregistered",
        }
        for note in notes:
            claim = await ledger.claim(note.event.id, OWNER, 60)
            assert claim is not None and claim.delivered == {"digest-slack"}

    async def test_a_group_of_one_is_sent_as_the_single_event_message(
        self, ledger: MemoryStore
    ) -> None:
        clock = Clock()
        stage = Batcher(ledger=ledger, metrics=Metrics(), owner=OWNER, budget=64, clock=clock)
        handler = Recorder()
        try:
            [task] = await submit_all(stage, ledger, target(handler, wait=0.05), [notification(1)])
            clock.now += 0.05  # the window has passed by the clock the stage reads
            result = await asyncio.wait_for(task, 10)
        finally:
            await stage.aclose()
        assert result.delivered
        assert [type(m) for m in handler.sent] == [Notification]

    async def test_a_failed_digest_is_retried_whole_then_fails_every_event(
        self, batcher: Batcher, ledger: MemoryStore
    ) -> None:
        handler = Recorder(failures=3)
        notes = [notification(n) for n in range(2)]
        tasks = await submit_all(batcher, ledger, target(handler, max_events=2), notes)
        results = await asyncio.gather(*tasks)
        assert [(r.delivered, r.attempts, r.reason) for r in results] == [
            (False, 3, "http_500")
        ] * 2
        claim = await ledger.claim(notes[0].event.id, OWNER, 60)
        assert claim is not None and claim.delivered == frozenset()

    async def test_drain_sends_every_gathered_group_at_once(
        self, batcher: Batcher, ledger: MemoryStore
    ) -> None:
        handler = Recorder()
        notes = [notification(1), notification(2, "failed"), notification(3)]
        tasks = await submit_all(batcher, ledger, target(handler, wait=3600), notes)
        batcher.drain()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert all(r.delivered for r in results)
        assert sorted(getattr(m, "count", 1) for m in handler.sent) == [1, 2]

    async def test_relieve_sends_the_oldest_group(
        self, batcher: Batcher, ledger: MemoryStore
    ) -> None:
        handler = Recorder()
        first = await submit_all(batcher, ledger, target(handler, wait=3600), [notification(1)])
        later = await submit_all(
            batcher, ledger, target(handler, wait=3600), [notification(2, "failed")]
        )
        batcher.relieve()
        assert (await asyncio.wait_for(first[0], 10)).delivered
        assert not later[0].done()
        batcher.drain()
        await asyncio.wait_for(later[0], 10)

    async def test_a_removed_handler_hands_its_events_back_unsent(
        self, batcher: Batcher, ledger: MemoryStore
    ) -> None:
        handler = Recorder()
        tasks = await submit_all(batcher, ledger, target(handler), [notification(1)])
        batcher.hand_back({"digest-slack"})
        [result] = await asyncio.gather(*tasks)
        assert (result.delivered, result.reason) == (False, "handler_removed")
        assert handler.sent == []

    async def test_a_lost_lease_fails_only_that_event(
        self, batcher: Batcher, ledger: MemoryStore
    ) -> None:
        handler = Recorder()
        notes = [notification(n) for n in range(3)]
        tasks = await submit_all(batcher, ledger, target(handler, wait=3600), notes)
        await ledger.release(notes[1].event.id, OWNER)  # as if another consumer took it
        batcher.drain()
        results = await asyncio.gather(*tasks)
        assert [r.delivered for r in results] == [True, False, True]
        assert results[1].reason == "ledger_unavailable"

    async def test_a_cancelled_waiting_event_leaves_its_group(
        self, batcher: Batcher, ledger: MemoryStore
    ) -> None:
        handler = Recorder()
        notes = [notification(1), notification(2)]
        tasks = await submit_all(batcher, ledger, target(handler, wait=3600), notes)
        tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]
        assert batcher.held == 1
        batcher.drain()
        await tasks[1]
        assert [type(m) for m in handler.sent] == [Notification]
