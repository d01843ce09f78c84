"""Breaker state shared through the real Redis: across instances, drivers and processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from seawall import CircuitBreaker
from seawall._breaker import Breaker
from seawall.testing import ManualClock
from tests.breaker import _workers

pytestmark = pytest.mark.redis


def settle(layer: CircuitBreaker) -> None:
    """Wait for the ASGI path's background writes to land in Redis."""
    deadline = time.monotonic() + 5
    for breaker in layer._breakers.values():
        store = breaker.shared
        while store is not None and store.pending() and time.monotonic() < deadline:
            time.sleep(0.002)


def test_two_instances_share_state_windows_and_permits(
    redis_url: str, key_prefix: str, clock: ManualClock
) -> None:
    """One instance's failures open the other; one probe permit between both."""
    a, b = (
        Breaker(
            "shared", fail_max=2, wait_in_open=5, storage=redis_url, key_prefix=key_prefix,
            clock=clock,
        )
        for _ in range(2)
    )  # fmt: skip
    a.record(a.acquire(), True)
    b.record(b.acquire(), True)
    assert isinstance(a.acquire(), float)
    assert a.current_state == "open"
    clock.advance(5)
    probe = b.acquire()
    assert not isinstance(probe, float)
    assert probe.probe
    assert isinstance(a.acquire(), float)  # the only permit is out
    b.record(probe, False)
    assert not isinstance(a.acquire(), float)
    assert a.current_state == "closed"


def test_an_open_shared_breaker_reads_half_open_once_its_wait_elapsed(
    redis_url: str, key_prefix: str, clock: ManualClock
) -> None:
    """current_state and stats say what the local engine says: the next call will probe.

    For the instance that opened it (it knows the wait) and for one that was
    refused (it knows the retry-after), before either takes the probe.
    """
    local, a, b = (
        Breaker(
            "watched", fail_max=1, wait_in_open=5, clock=clock,
            **({} if shared is None else {"storage": redis_url, "key_prefix": key_prefix}),
        )
        for shared in (None, True, True)
    )  # fmt: skip
    local.record(local.acquire(), True)
    a.record(a.acquire(), True)
    clock.advance(2)
    assert isinstance(b.acquire(), float)  # refused, 3 s left
    assert local.current_state == a.current_state == b.current_state == "open"
    clock.advance(3)
    assert local.current_state == a.current_state == b.current_state == "half-open"
    assert a.stats()["state"] == "half-open"
    probe = b.acquire()
    assert not isinstance(probe, float)
    b.record(probe, True)  # the probe failed: open again, for another 5 s
    assert b.current_state == "open"
    clock.advance(5)
    assert b.current_state == "half-open"


def test_failure_rate_over_a_shared_time_window(
    redis_url: str, key_prefix: str, clock: ManualClock
) -> None:
    """The time window lives in Redis: failures older than its size are forgotten."""
    b = Breaker(
        "tw",
        failure_rate_threshold=0.5,
        minimum_number_of_calls=4,
        sliding_window_type="time",
        sliding_window_size=10,
        storage=redis_url,
        key_prefix=key_prefix,
        clock=clock,
    )
    for failed in (True, True, True):
        b.record(b.acquire(), failed)
    clock.advance(10)
    for failed in (False, False, False, True):
        b.record(b.acquire(), failed)
    assert b.current_state == "closed"
    b.record(b.acquire(), True)
    b.record(b.acquire(), True)  # 3 failures / 6 calls
    assert b.current_state == "open"


def test_async_path_uses_redis_asyncio(redis_url: str, key_prefix: str, clock: ManualClock) -> None:
    """call_async takes and returns permits through redis.asyncio."""
    b = Breaker("async", fail_max=1, storage=redis_url, key_prefix=key_prefix, clock=clock)

    async def boom() -> None:
        raise RuntimeError

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await b.call_async(boom)
        with pytest.raises(Exception, match="temporarily unavailable"):
            await b.call_async(asyncio.sleep, 0)

    asyncio.run(main())
    assert b.shared is not None
    assert b.shared.stats()["calls"] >= 3
    assert b.shared.stats()["errors"] == 0


def test_layer_on_both_drivers(
    make_client: Callable[..., httpx.Client],
    redis_url: str,
    key_prefix: str,
    clock: ManualClock,
) -> None:
    """The layer opens through Redis; a second wall on the same keys refuses too."""
    settings: dict[str, Any] = {
        "fail_max": 2, "storage": redis_url, "key_prefix": key_prefix, "clock": clock,
    }  # fmt: skip
    first, second = CircuitBreaker(**settings), CircuitBreaker(**settings)
    one, two = make_client([first]), make_client([second])
    assert one.get("/status/500").status_code == 500
    settle(first)
    assert two.get("/status/500").status_code == 500
    settle(second)
    response = one.get("/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"


def test_redis_down_falls_back_to_local_state_and_says_so_once(
    logs: list[dict[str, Any]], clock: ManualClock
) -> None:
    """Nothing listens on port 1: the breaker still opens, one storage_down line."""
    b = Breaker(
        "down", fail_max=2, storage="redis://127.0.0.1:1/0", storage_timeout=0.2, clock=clock
    )
    for _ in range(2):
        b.record(b.acquire(), True)
    assert isinstance(b.acquire(), float)
    assert b.current_state == "open"
    down = [e for e in logs if e["event"] == "seawall.breaker.storage_down"]
    assert len(down) == 1
    assert "127.0.0.1:1" not in str(down[0])


def _context() -> Any:
    # forkserver: one clean process imports seawall once, the workers fork from
    # it (spawning three interpreters per test costs seconds on a busy CI box).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.breaker._workers"])
    return ctx


def _run(target: Callable[..., None], args_for: Callable[[int], tuple[Any, ...]]) -> list[Any]:
    ctx = _context()
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), out)) for i in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return results


def test_three_processes_share_the_half_open_permits(redis_url: str, key_prefix: str) -> None:
    """100 concurrent permit requests from 3 processes: exactly 3 probes in all."""
    now = 2_000_000.0
    opener = _workers.make(redis_url, key_prefix, now)
    opener.open()  # opened at *now*; the workers' clock is past wait_in_open
    ctx = _context()
    barrier = ctx.Barrier(3)
    threads = (34, 33, 33)
    results = _run(
        _workers.probe,
        lambda i: (redis_url, key_prefix, now + 10, threads[i], barrier),
    )
    assert sum(r[0] for r in results) == _workers.SETTINGS["permitted_calls_in_half_open"]
    assert sum(r[1] for r in results) == 100 - _workers.SETTINGS["permitted_calls_in_half_open"]
    assert all(r[2] == 0 for r in results)  # no fallback to local state


def test_one_process_failures_open_the_breaker_for_all(redis_url: str, key_prefix: str) -> None:
    """Worker 0 fails fail_max times; workers 1 and 2 are then refused."""
    ctx = _context()
    barrier = ctx.Barrier(3)
    opened = ctx.Event()
    results = sorted(
        _run(
            _workers.fail_or_watch,
            lambda i: (redis_url, key_prefix, 3_000_000.0, i, opened, barrier),
        )
    )
    assert [r[1] for r in results] == ["open", "open", "open"]
    assert results[1][2] == results[2][2] == pytest.approx(10.0)  # Retry-After: all of it


def test_three_worker_processes_admit_exactly_the_probes_over_http(
    redis_url: str, key_prefix: str
) -> None:
    """100 concurrent requests on 3 workers (1 ASGI, 2 WSGI) sharing Redis: 3 reach an app."""
    now = 4_000_000.0
    opener = _workers.layer(redis_url, key_prefix, now)
    opener.open()  # in Redis, opened at *now*; the workers' clock is past wait_in_open
    ctx = _context()
    barrier = ctx.Barrier(3)
    entered, answered = ctx.Value("i", 0), ctx.Value("i", 0)
    release = ctx.Event()
    out = ctx.Queue()
    plan = (("asgi", 34), ("wsgi", 33), ("wsgi", 33))
    shared_args = (barrier, entered, answered, release, out)
    procs = [
        ctx.Process(
            target=_workers.http_half_open,
            args=(redis_url, key_prefix, now + 10, interface, n, *shared_args),
        )
        for interface, n in plan
    ]
    for p in procs:
        p.start()
    permitted = _workers.LAYER["permitted_calls_in_half_open"]
    deadline = time.monotonic() + 60
    # The probes are held inside the apps until every other request was answered.
    while answered.value < 100 - permitted and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    codes = [code for _, worker_codes, _ in results for code in worker_codes]
    assert entered.value == permitted
    assert codes.count(200) == permitted
    assert codes.count(503) == 100 - permitted
    assert all(errors == 0 for _, _, errors in results)  # Redis answered every call
    watcher = _workers.layer(redis_url, key_prefix, now + 10).breaker()
    permit = watcher.acquire()
    assert not isinstance(permit, float)
    assert not permit.probe
    assert watcher.current_state == "closed"  # the 3 probes succeeded, from any worker


def test_one_worker_failures_open_the_layer_for_all_over_http(
    redis_url: str, key_prefix: str
) -> None:
    """An ASGI worker's ten 500s open the breaker; WSGI and ASGI workers then answer 503."""
    ctx = _context()
    opened = ctx.Event()
    entered = ctx.Value("i", 0)
    out = ctx.Queue()
    plan = ("asgi", "wsgi", "asgi")
    procs = [
        ctx.Process(
            target=_workers.http_fail_or_watch,
            args=(redis_url, key_prefix, 5_000_000.0, interface, role, opened, entered, out),
        )
        for role, interface in enumerate(plan)
    ]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert results[0][2] == [500] * 10
    assert entered.value == 10  # the watchers' requests never reached their apps
    for _, _, answer, state in results[1:]:
        assert answer == [503, "10"]  # Retry-After: the whole wait_in_open
        assert state == "open"
    assert results[0][3] == "open"


def test_shared_stats_show_the_redis_window(
    redis_url: str, key_prefix: str, clock: ManualClock
) -> None:
    """Two instances fill one window; each one's stats show the shared figures."""
    a, b = (
        Breaker(
            "st", minimum_number_of_calls=10, storage=redis_url, key_prefix=key_prefix,
            clock=clock,
        )
        for _ in range(2)
    )  # fmt: skip
    a.record(a.acquire(), True)
    b.record(b.acquire(), False)
    b.record(b.acquire(), False)
    window = b.stats()["window"]
    assert (window["calls"], window["failures"]) == (3, 1)
    assert window["failure_rate"] == round(1 / 3, 4)
    assert a.stats()["window"]["calls"] == 1  # a saw the window when it held one call
    a.open()
    assert a.stats()["window"]["calls"] == 0


@pytest.mark.parametrize("window", ["count", "time"])
def test_the_shared_engine_decides_like_the_local_one(
    redis_url: str, key_prefix: str, window: str
) -> None:
    """The same 400 outcomes into a local and a Redis breaker: same states, same window.

    Well past the window size, so evicting old outcomes (and their Redis
    bookkeeping) is exercised, with failures, slow calls and clock moves.
    """
    import random

    rng = random.Random(4)
    clock = ManualClock(1_000_000.0)
    settings: dict[str, Any] = {
        "sliding_window_type": window, "sliding_window_size": 10,
        "minimum_number_of_calls": 6, "failure_rate_threshold": 0.6,
        "slow_call_rate_threshold": 0.7, "slow_call_duration": 1.0,
        "permitted_calls_in_half_open": 2, "wait_in_open": 5, "clock": clock,
    }  # fmt: skip
    local = Breaker("twin", **settings)
    shared = Breaker("twin", storage=redis_url, key_prefix=key_prefix, **settings)
    states = set()
    for _ in range(400):
        clock.advance(rng.choice([0.0, 0.0, 0.3, 1.0, 6.0]))
        failed = rng.random() < 0.45
        duration = rng.choice([0.1, 0.1, 2.0])
        permits = local.acquire(), shared.acquire()
        assert isinstance(permits[0], float) == isinstance(permits[1], float)
        if not isinstance(permits[0], float):
            local.record(permits[0], failed, duration)
            shared.record(permits[1], failed, duration)
        assert shared.current_state == local.current_state
        states.add(local.current_state)
        if local.current_state == "closed" and not isinstance(permits[0], float):
            ours, theirs = local.stats()["window"], shared.stats()["window"]
            assert (theirs["calls"], theirs["failures"], theirs["slow_calls"]) == (
                ours["calls"], ours["failures"], ours["slow_calls"],
            )  # fmt: skip
    assert states == {"closed", "open", "half-open"}
    assert shared.shared is not None
    assert shared.shared.errors == 0
    assert shared.transitions == local.transitions


def test_kept_connections_survive_a_kill_and_a_script_flush(
    redis_url: str, key_prefix: str, clock: ManualClock
) -> None:
    """The scripts go out on kept connections, sync and async: a connection the
    server closed (CLIENT KILL) and scripts it forgot (SCRIPT FLUSH) cost no
    storage error, and the shared state stays right."""
    import redis

    b = Breaker("kept", fail_max=2, storage=redis_url, key_prefix=key_prefix, clock=clock)
    admin = redis.Redis.from_url(redis_url)
    b.record(b.acquire(), True)
    store = b.shared
    assert store is not None
    assert store._sync_fast is not None
    assert len(store._sync_fast.free) == 1
    # The frames name the scripts redis-py registered (else every call would
    # take the NOSCRIPT detour through the Script).
    from seawall._breaker.shared import _HEADS

    for head, script in zip(_HEADS, store._scripts_sync(), strict=True):
        assert script.sha.encode() in head
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    admin.script_flush()

    async def boom() -> None:
        raise RuntimeError

    async def main() -> int:
        with pytest.raises(RuntimeError):
            await b.call_async(boom)  # the second failure: opens for everyone
        _, fast = store._scripts_async()
        assert fast is not None
        return len(fast.free)

    assert asyncio.run(main()) == 1
    assert isinstance(b.acquire(), float)  # open, seen through the sync path
    assert store.stats()["errors"] == 0


def test_a_stalled_server_costs_one_timeout_on_the_event_loop(key_prefix: str) -> None:
    """SIGSTOP keeps the socket open and answers nothing: the asyncio call ends
    after the store's timeout and the breaker goes on with its local state."""
    import os
    import signal

    from tests.redis_topologies.servers import RedisProcess, free_port

    server = RedisProcess(free_port())
    server.start()
    try:
        b = Breaker("stalled", fail_max=5, storage=server.url, key_prefix=key_prefix)
        assert b.shared is not None
        b.shared.timeout = 0.1
        assert server.process is not None
        pid = server.process.pid

        async def ok() -> str:
            return "ok"

        async def main() -> float:
            assert await b.call_async(ok) == "ok"  # connected
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                assert await asyncio.wait_for(b.call_async(ok), 2.0) == "ok"
                return time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)

        took = asyncio.run(main())
        assert 0.09 <= took < 0.5
        assert b.shared.stats()["errors"] == 1
    finally:
        server.stop()
