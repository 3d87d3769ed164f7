"""The event loop `amid run` runs on: uvloop on Linux, the standard library's elsewhere.

uvloop (libuv's loop behind asyncio's API) costs less CPU per socket read and write than
the stock selector loop, and aiohttp and aiobotocore run on it unchanged. It is a Linux-only
dependency (an environment marker in pyproject.toml); `AMID_EVENT_LOOP=asyncio` keeps the
stock loop anyway, for an operator who suspects the loop, and `AMID_EVENT_LOOP=uvloop` makes a
missing uvloop an error instead of a quiet fallback. docs/benchmarks.md has what it saves.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

ENV = "AMID_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EventLoopError(ValueError):
    """AMID_EVENT_LOOP names no loop, or one that cannot be had here."""


def loop_factory(
    environ: Mapping[str, str] = os.environ, platform: str = sys.platform
) -> LoopFactory | None:
    """uvloop's `new_event_loop` where it applies; None for asyncio's own loop.

    Unset (or empty): uvloop on Linux when it is installed, else the stock loop.
    """
    wanted = environ.get(ENV, "").strip().lower()
    if wanted and wanted not in CHOICES:
        raise EventLoopError(f"{ENV}={wanted!r}: expected one of {', '.join(CHOICES)}")
    if wanted == "asyncio" or (not wanted and platform != "linux"):
        return None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise EventLoopError(f"{ENV}=uvloop, but uvloop is not installed") from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """ "uvloop" or "asyncio": the package the running loop comes from (for the start log)."""
    return type(loop).__module__.split(".")[0]


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """`asyncio.run(main)` on the loop `factory` makes (None: the stock loop)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
