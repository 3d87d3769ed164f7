"""RateLimiter and RateLimiterPool: spacing, order, cancellation, sharing."""

from __future__ import annotations

import asyncio
import itertools

from amid.handlers.ratelimit import RateLimiter, RateLimiterPool

TOLERANCE = 0.02


async def passes(limiter: RateLimiter, count: int) -> list[float]:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def one() -> None:
        await limiter.wait()
        times.append(loop.time())

    await asyncio.gather(*(one() for _ in range(count)))
    return times


async def test_callers_pass_one_interval_apart() -> None:
    times = await passes(RateLimiter(rate=20), 6)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - TOLERANCE


async def test_first_caller_after_a_quiet_period_passes_at_once() -> None:
    limiter = RateLimiter(rate=10)
    await limiter.wait()
    await asyncio.sleep(0.15)
    async with asyncio.timeout(0.02):
        await limiter.wait()


async def test_callers_pass_in_arrival_order() -> None:
    limiter = RateLimiter(rate=50)
    order: list[int] = []

    async def one(index: int) -> None:
        await limiter.wait()
        order.append(index)

    await asyncio.gather(*(one(index) for index in range(8)))
    assert order == list(range(8))


async def test_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    limiter = RateLimiter(rate=5)
    await limiter.wait()  # the next turn is 0.2 s away
    loop = asyncio.get_running_loop()
    cancelled = asyncio.create_task(limiter.wait())
    await asyncio.sleep(0)
    started = loop.time()
    survivor = asyncio.create_task(limiter.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await survivor
    assert loop.time() - started < 0.2 + 0.1  # one interval, not two


async def test_pool_shares_one_limiter_per_destination_at_the_slowest_rate() -> None:
    pool = RateLimiterPool()
    fast = pool.acquire("https://hooks.example/a", rate=10)
    slow = pool.acquire("https://hooks.example/a", rate=2)
    other = pool.acquire("https://hooks.example/b", rate=10)
    assert fast.limiter is slow.limiter
    assert fast.limiter is not other.limiter
    assert fast.limiter.interval == 0.5
    slow.release()
    assert fast.limiter.interval == 0.1


async def test_pool_forgets_a_destination_when_its_last_holder_releases() -> None:
    pool = RateLimiterPool()
    first = pool.acquire("https://hooks.example/a", rate=1)
    second = pool.acquire("https://hooks.example/a", rate=1)
    first.release()
    first.release()  # idempotent
    assert len(pool) == 1
    second.release()
    assert len(pool) == 0


def test_pool_keeps_no_destination_url() -> None:
    pool = RateLimiterPool()
    pool.acquire("https://hooks.slack.com/services/T/B/secret", rate=1)
    assert all("secret" not in key for key in pool._entries)
