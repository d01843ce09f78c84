"""Exactness under concurrency (threads in one process; the multi-process harness is separate)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from seawall import RateLimit, RequestView


def admitted_by_threads(layer: RateLimit, threads: int = 8, each: int = 25) -> int:
    def worker(_: int) -> int:
        count = 0
        for _ in range(each):
            if layer.check(RequestView(method="GET", path="/", peer="5.5.5.5")) is None:
                count += 1
        return count

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(worker, range(threads)))


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "gcra"])
def test_memory_threads_admit_exactly_the_limit(strategy: str) -> None:
    """WSGI threads racing on one key: exactly the limit is admitted."""
    layer = RateLimit("50/minute", strategy=strategy)  # type: ignore[arg-type]
    assert admitted_by_threads(layer) == 50


@pytest.mark.redis
@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "gcra"])
def test_redis_threads_admit_exactly_the_limit(
    redis_url: str, key_prefix: str, strategy: str
) -> None:
    """Threads sharing one Redis: exactly the limit is admitted (one atomic script each)."""
    layer = RateLimit(
        "50/minute",
        strategy=strategy,
        storage=redis_url,  # type: ignore[arg-type]
        key_prefix=key_prefix,
        storage_timeout=2.0,
    )
    assert admitted_by_threads(layer) == 50
    assert layer.stats()["storage_errors"] == 0


@pytest.mark.redis
def test_redis_concurrent_tasks_admit_exactly_the_limit(redis_url: str, key_prefix: str) -> None:
    """Concurrent asyncio tasks on the async client: exactly the limit is admitted."""
    layer = RateLimit(
        "30/minute",
        strategy="moving-window",
        storage=redis_url,
        key_prefix=key_prefix,
        storage_timeout=2.0,
    )

    async def main() -> int:
        results = await asyncio.gather(
            *(layer.acheck(RequestView(method="GET", path="/", peer="6.6.6.6")) for _ in range(100))
        )
        return sum(r is None for r in results)

    assert asyncio.run(main()) == 30
