"""ConcurrencyLimit on a private redis-server that stalls (a busy script), sync and async.

A call that times out during a stall has already written its script: Redis
runs it when it wakes and the slot is taken, though the caller counted the
call as failed. Those slots must be given back, or a small limit stays full
until ``slot_ttl`` and every request is refused (503) long after Redis is
back. Each test runs its own redis-server: it blocks it for a second.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from seawall import ConcurrencyLimit
from tests.concurrency.test_redis import aadmit, admit, finish, view
from tests.redis_topologies.servers import RedisProcess, cli

pytestmark = pytest.mark.slow

# A Lua script that keeps Redis busy for one second (under lua-time-limit,
# so Redis answers nothing, not even BUSY, meanwhile).
BUSY = (
    "local s=redis.call('TIME') local e=s[1]+s[2]/1e6+1 "
    "while true do local t=redis.call('TIME') if t[1]+t[2]/1e6>e then break end end"
)


def stall(port: int) -> threading.Thread:
    """Block the server for a second, from another client; returns once it is blocked."""
    thread = threading.Thread(target=cli, args=(port, "eval", BUSY, "0"))
    thread.start()
    time.sleep(0.1)  # the script has started
    return thread


def slots(port: int) -> int:
    client = redis.Redis(port=port, socket_timeout=1.0)
    try:
        return int(client.zcard("{stall:cc}:all"))
    finally:
        client.close()


def layer_for(port: int) -> ConcurrencyLimit:
    return ConcurrencyLimit(
        2,
        storage=f"redis://127.0.0.1:{port}/0",
        key_prefix="stall",
        storage_timeout=0.02,
        storage_probe=0.1,
    )


def freed_within(port: int, seconds: float) -> float | None:
    """Seconds until no slot is held, or None if some still are after *seconds*."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if slots(port) == 0:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


CLIENTS = 4  # requests in flight when the stall begins, each on its own connection


def test_calls_that_timed_out_in_a_stall_give_their_slots_back(private_redis: RedisProcess) -> None:
    layer = layer_for(private_redis.port)
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            r = view()
            admit(layer, r)  # "allow": admitted without a slot during the stall
            time.sleep(0.002)
            finish(layer, r)
            time.sleep(0.003)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    busy = stall(private_redis.port)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    shared = layer._shared
    assert shared is not None
    assert shared.errors >= 2  # calls whose scripts wait in Redis
    busy.join()
    # Back: the phantom slots go within the 2 s recovery promise, not slot_ttl (30 s).
    assert freed_within(private_redis.port, 2.0) is not None, (
        f"{slots(private_redis.port)} slots held"
    )
    held = [view(), view()]
    assert [admit(layer, r) for r in held] == [True, True]
    assert not admit(layer, view())  # the limit still counts
    for r in held:
        finish(layer, r)
    layer.close()
    assert slots(private_redis.port) == 0


def test_async_calls_that_timed_out_in_a_stall_give_their_slots_back(
    private_redis: RedisProcess,
) -> None:
    layer = layer_for(private_redis.port)

    async def main() -> tuple[int, float | None, list[bool]]:
        stop = False

        async def client() -> None:
            while not stop:
                r = view()
                await aadmit(layer, r)
                await asyncio.sleep(0.002)
                finish(layer, r)
                await asyncio.sleep(0.003)

        tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await asyncio.sleep(0.3)
        busy = await asyncio.to_thread(stall, private_redis.port)
        await asyncio.sleep(0.5)
        stop = True
        await asyncio.gather(*tasks)
        shared = layer._shared
        assert shared is not None
        errors = shared.errors
        await asyncio.to_thread(busy.join)
        freed = await asyncio.to_thread(freed_within, private_redis.port, 2.0)
        held = [view(), view(), view()]
        got = [await aadmit(layer, r) for r in held]
        for r in held:
            finish(layer, r)
        await layer.aclose()
        return errors, freed, got

    errors, freed, got = asyncio.run(main())
    assert errors >= 2
    assert freed is not None, f"{slots(private_redis.port)} slots still held"
    assert got == [True, True, False]
    layer.close()
    assert slots(private_redis.port) == 0


def test_a_cancelled_acquire_gives_its_slot_back(private_redis: RedisProcess) -> None:
    """A request cancelled (client gone) while its acquire waits on a stalled Redis."""
    layer = ConcurrencyLimit(
        2,
        storage=f"redis://127.0.0.1:{private_redis.port}/0",
        key_prefix="stall",
        storage_timeout=5.0,  # only the cancellation ends the call
    )

    async def main() -> None:
        warm = view()
        assert await aadmit(layer, warm)
        finish(layer, warm)
        busy = await asyncio.to_thread(stall, private_redis.port)
        tasks = [asyncio.create_task(aadmit(layer, view())) for _ in range(2)]
        await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(busy.join)
        await layer.aclose()

    asyncio.run(main())
    assert freed_within(private_redis.port, 2.0) is not None, (
        f"{slots(private_redis.port)} slots held"
    )
    layer.close()
