"""amid.tools.localsqs: moto's SQS DeleteMessage runs under the queue's lock, and nothing else changes.

The race it closes is shown against real servers in
tests/reliability/test_moto_race.py; here, that the patch is in place, that it
wraps what moto 5.2.5 has, and that a moto without those names stops it loudly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from moto.sqs.models import Message, Queue

from amid.tools import localsqs
from tests.moto_server import MotoServer, StockMotoServer


class _WatchedLock(threading.Condition):
    """The queue's Condition, counting how deep the current holder is inside it."""

    depth = 0

    def __enter__(self) -> bool:
        entered = super().__enter__()
        self.depth += 1
        return entered

    def __exit__(self, *exc_info: Any) -> None:
        self.depth -= 1
        super().__exit__(*exc_info)


class _WatchedQueue(Queue):  # type: ignore[misc]
    """A moto Queue that notes, at each new `_messages` list, whether the lock was held."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_messages" and isinstance(self.__dict__.get("_messages_lock"), _WatchedLock):
            self.__dict__.setdefault("assignments", []).append(self._messages_lock.depth > 0)
        super().__setattr__(name, value)


@pytest.fixture
def unpatched() -> Iterator[Any]:
    """moto's own Queue.delete_message for the test's length, whatever the process did before."""
    current = Queue.delete_message
    original = getattr(current, "__wrapped__", current)
    Queue.delete_message = original
    try:
        yield original
    finally:
        Queue.delete_message = current


def _queue_with_one_received_message() -> tuple[_WatchedQueue, str]:
    queue = _WatchedQueue("watched", "us-east-1", "123456789012")
    queue._messages_lock = _WatchedLock()
    queue.add_message(Message("m-1", "body"))
    message = queue._messages[0]
    message.mark_received(visibility_timeout=30)
    return queue, str(message.receipt_handle)


def test_the_patched_delete_message_replaces_the_list_under_the_queue_lock(
    unpatched: Any,
) -> None:
    localsqs.patch_moto()
    queue, receipt = _queue_with_one_received_message()

    queue.delete_message(receipt)

    assert queue._messages == []
    assert queue.__dict__["assignments"] == [True], "the new list was assigned under the lock"
    assert queue._messages_lock.depth == 0, "and the lock was released"


def test_stock_delete_message_replaces_the_list_without_the_lock(unpatched: Any) -> None:
    """What the patch is for: if a moto upgrade fixes this, the patch can go."""
    queue, receipt = _queue_with_one_received_message()

    queue.delete_message(receipt)

    assert queue.__dict__["assignments"] == [False]


def test_patching_twice_wraps_once(unpatched: Any) -> None:
    localsqs.patch_moto()
    patched = Queue.delete_message
    localsqs.patch_moto()

    assert Queue.delete_message is patched
    assert patched.__wrapped__ is unpatched
    assert localsqs.is_patched()


def test_a_moto_without_delete_message_stops_the_patch_loudly(
    unpatched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(Queue, "delete_message")

    with pytest.raises(localsqs.MotoPatchError, match=r"has no Queue\.delete_message"):
        localsqs.patch_moto()


def test_a_moto_without_the_queue_lock_stops_the_patch_loudly(
    unpatched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = Queue.__init__

    def init_without_lock(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        del self._messages_lock

    monkeypatch.setattr(Queue, "__init__", init_without_lock)

    with pytest.raises(localsqs.MotoPatchError, match=r"has no Queue\._messages_lock"):
        localsqs.patch_moto()
    assert Queue.delete_message is unpatched, "nothing was half-patched"


def test_the_version_the_patch_was_checked_on_is_the_pinned_one() -> None:
    """Upgrading moto means reading its new models.py again: this fails until someone has."""
    from importlib.metadata import version

    assert version("moto") == localsqs.MOTO_CHECKED, (
        "moto changed: read its moto/sqs/models.py Queue.delete_message again, then move "
        "MOTO_CHECKED in amid/tools/localsqs.py (or drop the patch if moto now takes the lock)"
    )


def test_the_tests_moto_server_runs_the_patched_module(
    moto_session_server: MotoServer,
) -> None:
    assert moto_session_server.module == "amid.tools.localsqs"
    assert StockMotoServer.module == "moto.server"
    said = moto_session_server.log.read_text(errors="replace")
    assert "amid.tools.localsqs: moto" in said and "DeleteMessage under the queue's lock" in said
