"""Start-up's freed memory, handed back to the system once amid is serving; start-up's
objects kept out of the cyclic garbage collector's way."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_start_up() -> Iterator[None]:
    """While amid serves, what start-up made is out of the cyclic collector's sight.

    Imports, botocore's service models and the config are ~10^5 objects that live as long
    as the process. A full collection walks them all: 15-80 ms on the bench's machine,
    during which every event in flight waits (a latency spike). Collected once and frozen
    (`gc.freeze`), they are skipped, and a full collection walks only what serving made.
    They are unfrozen on the way out, so a daemon started in a longer-lived process (the
    tests) leaves the collector as it found it.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def trim_heap() -> bool:
    """glibc's `malloc_trim(0)`: the free pages inside malloc's heaps go back to the system.

    What start-up allocated and dropped (import-time temporaries, parsed data files)
    otherwise stays resident. False, doing nothing, where the C library has no
    malloc_trim (musl, macOS).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
