"""moto's server with one fix: SQS DeleteMessage under the queue's lock.

The local SQS that the tests, the benchmarks and `amid demo` run is moto's
server. moto's `Queue.delete_message` (`moto/sqs/models.py`, checked on moto
5.2.5) builds a new `self._messages` from the list it read and assigns it
without holding the queue's `_messages_lock`, while `Queue.add_message`
appends under that lock. When deletes overlap, one assigns a list read before
another's assignment: a message SendMessage appended in between is lost (gone
from the queue without anyone having received it) and the other delete's
message comes back. Under load that made a replicas test report missing
events that amid never saw (issue 25).

`patch_moto()` runs `Queue.delete_message` under `_messages_lock` (a
`threading.Condition` on an `RLock`, so nothing that already holds it can
deadlock) and changes nothing else. If moto renames either name the patch
raises instead of silently leaving the race in. docs/reliability.md says how
tests/reliability/test_moto_race.py shows the loss on stock moto and none with
the fix; tests/test_localsqs.py that the patch is in place.

`python -m amid.tools.localsqs -H 127.0.0.1 -p PORT` is `python -m
moto.server` with the fix applied; `ThreadedMotoServer` runs in this process,
so calling `patch_moto()` before starting it is enough.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

MOTO_CHECKED = "5.2.5"  # the moto version whose models.py this patch was read against

_MARK = "__amid_delete_under_lock__"


class MotoPatchError(RuntimeError):
    """moto no longer has what the patch wraps: read the new models.py, then fix the patch."""


def patch_moto() -> None:
    """Run moto's SQS `Queue.delete_message` under the queue's `_messages_lock`; idempotent."""
    try:
        from moto.sqs.models import Queue
    except ImportError as error:
        raise MotoPatchError(f"moto.sqs.models.Queue cannot be imported: {error}") from error
    original = getattr(Queue, "delete_message", None)
    if not callable(original):
        raise MotoPatchError(_renamed("Queue.delete_message"))
    if getattr(original, _MARK, False):
        return
    probe = Queue("amid-localsqs-probe", "us-east-1", "123456789012")  # type: ignore[abstract]
    if not hasattr(getattr(probe, "_messages_lock", None), "__enter__"):
        raise MotoPatchError(_renamed("Queue._messages_lock"))
    Queue.delete_message = _under_lock(original)  # type: ignore[method-assign]


def is_patched() -> bool:
    """Whether this process's moto runs DeleteMessage under the queue's lock."""
    from moto.sqs.models import Queue

    return bool(getattr(getattr(Queue, "delete_message", None), _MARK, False))


def _under_lock(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            original(self, receipt_handle)

    setattr(delete_message, _MARK, True)
    return delete_message


def describe() -> str:
    """One line for logs: which moto runs, and with what."""
    return f"moto {version('moto')} with SQS DeleteMessage under the queue's lock"


def _renamed(name: str) -> str:
    return (
        f"moto {version('moto')} has no {name} (the patch was checked on moto {MOTO_CHECKED}); "
        "see amid/tools/localsqs.py"
    )


def main(argv: list[str] | None = None) -> None:
    """moto's standalone server (same arguments as `python -m moto.server`), patched."""
    patch_moto()
    from moto.server import main as moto_main

    sys.stderr.write(f"amid.tools.localsqs: {describe()}\n")
    sys.stderr.flush()
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
