"""Spacing for destinations with a request rate limit (Slack: one message per second per webhook).

`RateLimiter.wait()` lets callers through one at a time, at least `1 / rate`
seconds apart, in arrival order. Waiters sleep on a future woken by a single
timer: no polling, and a waiter that is cancelled (its send timed out) gives its
turn to the next one instead of wasting a slot.

`RateLimiterPool` shares one limiter between every handler that posts to the
same destination (keyed by a digest, so no URL is kept); the limiter runs at the
slowest rate any of its holders asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import deque


class RateLimiter:
    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._next = 0.0  # loop time from which the next caller may go
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def wait(self) -> None:
        """Return when the caller may send; FIFO, spaced `interval` apart."""
        loop = asyncio.get_running_loop()
        if not self._waiters and loop.time() >= self._next:
            self._next = loop.time() + self.interval
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self._arm(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            # Not yet granted: the timer skips cancelled futures, so the slot goes to the next.
            # Granted just before the cancel: the slot is spent, which only errs on the slow side.
            self._discard(waiter)
            raise

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiters:
            self._timer = loop.call_at(max(self._next, loop.time()), self._grant, loop)

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._next = loop.time() + self.interval
                break
        self._arm(loop)

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        if not self._waiters and self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RateLimit:
    """One holder's lease on a shared limiter; `release()` is idempotent."""

    def __init__(self, pool: RateLimiterPool, key: str, token: int, limiter: RateLimiter) -> None:
        self._pool = pool
        self._key = key
        self._token = token
        self.limiter = limiter
        self._released = False

    async def wait(self) -> None:
        await self.limiter.wait()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._key, self._token)


class _Entry:
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.rates: dict[int, float] = {}


class RateLimiterPool:
    """Limiters keyed by destination, shared by all handlers that hold a lease on them."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._tokens = itertools.count()

    @staticmethod
    def key_for(destination: str) -> str:
        return hashlib.sha256(destination.encode("utf-8")).hexdigest()

    def acquire(self, destination: str, rate: float) -> RateLimit:
        key = self.key_for(destination)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(RateLimiter(rate))
        token = next(self._tokens)
        entry.rates[token] = rate
        entry.limiter.interval = 1.0 / min(entry.rates.values())
        return RateLimit(self, key, token, entry.limiter)

    def _release(self, key: str, token: int) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.rates.pop(token, None)
        if entry.rates:
            entry.limiter.interval = 1.0 / min(entry.rates.values())
        else:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


# One pool per process: a handler rebuilt by a reload joins the limiter its predecessor used.
WEBHOOKS = RateLimiterPool()
