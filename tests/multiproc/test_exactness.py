"""Exactness across 4 real worker processes (2 ASGI, 2 WSGI) x 50 concurrent clients, one Redis.

- RateLimit with a limit L per window admits exactly L with moving-window,
  at most L with the other strategies.
- ConcurrencyLimit's in-flight maximum is never exceeded, measured inside
  the app with a counter in Redis shared by every process.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import delete_keys
from tests.multiproc import worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WORKERS = ("asgi", "wsgi", "asgi", "wsgi")
CLIENTS = 50


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """Four spawned worker processes, kept for the module (spawning costs ~1 s each)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(WORKERS))
    with ctx.Pool(len(WORKERS), initializer=worker.init, initargs=(barrier,)) as p:
        yield p


def _run(pool: Any, **job: Any) -> tuple[Counter[int], list[dict[str, Any]]]:
    jobs = [{**job, "interface": kind, "clients": CLIENTS} for kind in WORKERS]
    results = pool.map(worker.run, jobs, chunksize=1)
    codes: Counter[int] = Counter()
    for r in results:
        codes.update({int(k): v for k, v in r["codes"].items()})
    return codes, [r["stats"] for r in results]


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    p = f"seawall-mp-{uuid.uuid4().hex[:10]}"
    yield p
    delete_keys(redis_url, p)


LIMIT = 100


@pytest.mark.parametrize(
    "strategy", ["moving-window", "fixed-window", "sliding-window-counter", "gcra"]
)
def test_ratelimit_is_exact_across_processes(
    pool: Any, redis_url: str, prefix: str, strategy: str
) -> None:
    """800 requests from 200 clients in 4 processes against L=100/minute."""
    t0 = time.monotonic()
    codes, _ = _run(
        pool,
        kind="ratelimit",
        strategy=strategy,
        limit=LIMIT,
        storage=redis_url,
        prefix=prefix,
        requests=4,
    )
    assert sum(codes.values()) == len(WORKERS) * CLIENTS * 4
    assert set(codes) <= {200, 429}, codes
    if strategy in ("moving-window", "fixed-window"):
        # A fixed window starts at its first request (the key's TTL), so
        # none rolls over in a run this short: exactly L as well.
        assert codes[200] == LIMIT
    elif strategy == "gcra":
        # GCRA is a rate with a burst of L: one more request per 60/L s of the run.
        elapsed = time.monotonic() - t0
        assert LIMIT <= codes[200] <= LIMIT + math.ceil(elapsed / (60 / LIMIT))
    else:
        assert 0 < codes[200] <= LIMIT


def test_a_ban_started_in_one_process_refuses_in_all(
    pool: Any, redis_url: str, prefix: str
) -> None:
    """One key from 200 clients in 4 processes: L admitted, then strikes, then one shared ban."""
    codes, stats = _run(
        pool, kind="ban", limit=LIMIT, after=5, storage=redis_url, prefix=prefix, requests=4
    )
    assert sum(codes.values()) == len(WORKERS) * CLIENTS * 4
    assert set(codes) == {200, 429}, codes
    assert codes[200] == LIMIT  # the ban check never admits or consumes anything
    assert sum(s["bans"] for s in stats) >= 1
    # Every process refused requests under the ban, whichever started it.
    assert all(s["banned"] > 0 for s in stats), [s["banned"] for s in stats]
    assert [s["storage_errors"] for s in stats] == [0] * len(WORKERS)
    left = redis.Redis.from_url(redis_url).pttl(f"{prefix}:rlban:{{one-attacker}}")
    assert 590_000 < left <= 600_000


MAX_IN_FLIGHT = 8


def test_concurrency_limit_is_never_exceeded(pool: Any, redis_url: str, prefix: str) -> None:
    """200 concurrent clients in 4 processes, 8 slots: the app never sees 9 at once."""
    codes, stats = _run(
        pool,
        kind="concurrency",
        limit=MAX_IN_FLIGHT,
        storage=redis_url,
        prefix=prefix,
        requests=3,
        hold=0.01,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        peak = int(client.get(prefix + ":peak") or 0)
        left = client.zcard(f"{{{prefix}:cc}}:all")
    finally:
        client.close()
    assert sum(codes.values()) == len(WORKERS) * CLIENTS * 3
    assert set(codes) <= {200, 503}, codes
    assert codes[503] > 0
    assert codes[200] >= MAX_IN_FLIGHT
    assert 2 <= peak <= MAX_IN_FLIGHT, peak
    assert [s["storage_errors"] for s in stats] == [0] * len(WORKERS), [
        s["last_error"] for s in stats
    ]
    assert left == 0  # every slot was released
