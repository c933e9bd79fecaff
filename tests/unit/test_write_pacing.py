"""``aws.max_write_tps``: writes are spaced evenly, with no burst above the rate."""

from __future__ import annotations

import asyncio
import itertools
import time

from rotd.secretstore import RateLimit


async def test_writes_are_spaced_one_interval_apart_from_the_first() -> None:
    limit = RateLimit(20)
    stamps: list[float] = []

    async def write() -> None:
        await limit.acquire()
        stamps.append(time.monotonic())

    await asyncio.gather(*(write() for _ in range(10)))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 1 / 20 - 0.005, gaps  # no burst, not even at the start
