"""The Redis backend's kept connections (seawall._wire) on the real server.

Each test breaks a kept connection the way production does (the server
closes it, a call is abandoned mid-reply, the process forks) and checks the
next call gets a correct, fresh reply and counts exactly once. Each runs
twice: one fixed window (three plain commands, three replies) and two (one
EVALSHA, one reply).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from seawall._ratelimit.quota import FIXED, Quota
from seawall.exceptions import StorageError
from seawall.storage import RedisBackend
from tests.apps import client_for
from tests.ratelimit.conftest import redis_wall
from tests.redis_topologies.servers import RedisProcess

QUOTAS = {
    "commands": [Quota(100, 60, "default")],
    "script": [Quota(100, 60, "default"), Quota(10_000, 3600, "hour")],
}
LIMITS = {"commands": "100/minute", "script": "100/minute;10000/hour"}


@pytest.fixture(params=sorted(QUOTAS))
def path(request: pytest.FixtureRequest) -> str:
    """Which way the backend talks to Redis: plain commands or the script."""
    return str(request.param)


def _remaining(result: tuple[bool, list[tuple[int, float, float]]]) -> int:
    return result[1][0][0]


def test_a_connection_the_server_closed_is_replaced(
    interface: str, redis_url: str, key_prefix: str, path: str
) -> None:
    """CLIENT KILL (an idle timeout, a restart) closes the kept connection: the
    next request goes through on a new one, counted once, with no storage error."""
    wall = redis_wall(interface, LIMITS[path], redis_url, key_prefix)
    admin = redis.Redis.from_url(redis_url)
    with client_for(wall) as client:
        first = client.get("/")
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        second = client.get("/")
    assert killed >= 1
    assert first.status_code == second.status_code == 200
    name = '"default"' if path == "commands" else '"default-60s"'
    assert first.headers["RateLimit"].startswith(f"{name};r=99;")
    assert second.headers["RateLimit"].startswith(f"{name};r=98;")
    stats = wall.stats()["ratelimit"]
    assert stats["storage_errors"] == 0
    assert stats["storage_fallbacks"] == 0


def test_an_abandoned_async_call_leaves_no_reply_behind(
    private_redis: RedisProcess, path: str
) -> None:
    """A call cancelled while its reply is still coming (a request cancelled by
    its client, say) must not leave that reply for the next call to read."""
    backend = RedisBackend(private_redis.url, timeout=2.0)
    assert private_redis.process is not None
    pid = private_redis.process.pid
    quotas = QUOTAS[path]
    keys = [f"abandoned-{i}" for i in range(len(quotas))]

    async def main() -> list[int]:
        seen = [_remaining(await backend.ahit(FIXED, keys, quotas, 1))]
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(backend.ahit(FIXED, keys, quotas, 1), 0.1)
            # The abandoned connection went back to the pool, not to the free list.
            assert backend._asides.get().fast is not None
            assert backend._asides.get().fast.free == []
        finally:
            os.kill(pid, signal.SIGCONT)
        # The server runs the abandoned command when it wakes: 98 left, unread.
        await asyncio.sleep(0.1)
        seen.append(_remaining(await backend.ahit(FIXED, keys, quotas, 1)))
        return seen

    assert asyncio.run(main()) == [99, 97]


def test_a_stalled_server_costs_one_storage_timeout_on_the_event_loop(
    private_redis: RedisProcess, path: str
) -> None:
    """A server that stops answering (SIGSTOP: the socket stays open) ends an
    asyncio call after the storage timeout, whichever path the call takes
    (one asyncio.timeout bounds the whole exchange)."""
    backend = RedisBackend(private_redis.url, timeout=0.1)
    assert private_redis.process is not None
    pid = private_redis.process.pid
    quotas = QUOTAS[path]
    keys = [f"stalled-{i}" for i in range(len(quotas))]

    async def main() -> float:
        await backend.ahit(FIXED, keys, quotas, 1)  # connected, scripts loaded
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StorageError):
                # The outer bound only keeps a broken deadline from hanging the test.
                await asyncio.wait_for(backend.ahit(FIXED, keys, quotas, 1), 2.0)
            return time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)

    took = asyncio.run(main())
    assert 0.09 <= took < 0.5


def test_a_timed_out_sync_call_leaves_no_reply_behind(
    private_redis: RedisProcess, path: str
) -> None:
    """The same on the sync path, where the storage timeout ends the call."""
    backend = RedisBackend(private_redis.url, timeout=0.1)
    assert private_redis.process is not None
    pid = private_redis.process.pid
    quotas = QUOTAS[path]
    keys = [f"timed-out-{i}" for i in range(len(quotas))]
    seen = [_remaining(backend.hit(FIXED, keys, quotas, 1))]
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(StorageError):
            backend.hit(FIXED, keys, quotas, 1)
        assert backend._sync_fast is not None
        assert backend._sync_fast.free == []
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(0.1)
    seen.append(_remaining(backend.hit(FIXED, keys, quotas, 1)))
    assert seen == [99, 97]


def test_a_forked_child_does_not_share_its_parents_connection(
    redis_url: str, key_prefix: str, path: str
) -> None:
    """gunicorn forks after the app is loaded: a child that reused the parent's
    kept socket would read the parent's replies. Each process counts on its own."""
    backend = RedisBackend(redis_url, timeout=1.0)
    quotas = QUOTAS[path]
    keys = [f"{key_prefix}:fork-{i}" for i in range(len(quotas))]
    parent_first = _remaining(backend.hit(FIXED, keys, quotas, 1))
    fast = backend._sync_fast
    assert fast is not None
    assert len(fast.free) == 1
    parent_port = fast.free[0]._sock.getsockname()[1]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            forgot = fast.free == []
            remaining = _remaining(backend.hit(FIXED, keys, quotas, 1))
            port = fast.free[0]._sock.getsockname()[1]
            os.write(write, f"{forgot} {remaining} {port}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        forgot, child_remaining, child_port = pipe.read().split()
    parent_second = _remaining(backend.hit(FIXED, keys, quotas, 1))
    assert os.waitstatus_to_exitcode(status) == 0
    assert forgot == "True"
    assert int(child_port) != parent_port
    assert [parent_first, int(child_remaining), parent_second] == [99, 98, 97]
    assert fast.free[0]._sock.getsockname()[1] == parent_port
