"""Start-up's freed memory, handed back to the system once amid is serving."""

from __future__ import annotations

import ctypes


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
