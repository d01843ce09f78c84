"""The asyncio storage deadline measures Redis, not the event loop (a private redis-server).

A call's deadline is a timer on the loop. When another request's handler
holds the loop past it, Redis's reply is in the socket but unread: the call
must succeed (one more pass of the loop, seawall._wire.Deadline), not count
as a storage failure that sends every request to ``on_storage_error``. A
Redis that does not answer must still cost about one timeout. Opening a
connection has its own bound, and a worker's first request imports nothing.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import httpx
import pytest

from seawall import ConcurrencyLimit, RateLimit, Seawall
from seawall._ratelimit.quota import parse_quotas
from seawall.storage import RedisBackend
from tests.redis_topologies.servers import RedisProcess

QUOTAS = parse_quotas("1000000/minute", "default", "limit")


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# Keeps Redis busy for 5 ms: a command sent meanwhile is answered after it.
_SLOW = (
    "local s=redis.call('TIME') local e=s[1]+s[2]/1e6+0.005 "
    "while true do local t=redis.call('TIME') if t[1]+t[2]/1e6>e then break end end"
)


class LateReply:
    """The next command's reply comes 5 ms late, while the loop is held for 50 ms.

    So the reply is in the socket, unread, when the call's 20 ms deadline
    passes: exactly what another request's CPU-heavy handler does.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"*3\r\n$4\r\nEVAL\r\n${len(_SLOW)}\r\n{_SLOW}\r\n$1\r\n0\r\n".encode())
        time.sleep(0.001)  # Redis has started the script
        asyncio.get_running_loop().call_soon(burn, 0.05)  # runs once the caller awaits

    def close(self) -> None:
        self.sock.settimeout(2)
        assert self.sock.recv(64).startswith(b"$-1")  # the script's nil: it ran
        self.sock.close()


def cpu_heavy_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        burn(0.03)  # 30 ms of CPU: longer than the 20 ms storage timeout
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def statuses_under_load(layer: Any) -> list[int]:
    """20 rounds of two concurrent requests to a CPU-heavy handler."""
    wall = Seawall(cpu_heavy_app(), layers=[layer])

    async def main() -> list[int]:
        codes: list[int] = []
        transport = httpx.ASGITransport(app=wall)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(20):
                pair = await asyncio.gather(client.get("/"), client.get("/"))
                codes += [r.status_code for r in pair]
        return codes

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["ratelimit", "concurrency"])
def test_a_cpu_heavy_handler_does_not_take_a_healthy_redis_down(
    private_redis: RedisProcess, kind: str
) -> None:
    layer: Any
    if kind == "ratelimit":
        layer = RateLimit("1000000/minute", storage=private_redis.url, on_storage_error="deny")
    else:
        layer = ConcurrencyLimit(1000, storage=private_redis.url, on_storage_error="deny")
    codes = statuses_under_load(layer)
    assert codes == [200] * 40, f"{codes.count(503)} of 40 got a 503"
    stats = layer.stats()
    assert stats["storage_errors"] == 0
    if kind == "ratelimit":
        assert stats["storage_state"] == "up"
    else:
        assert stats["storage_down"] is False
        layer.close()


def test_a_reply_that_came_while_the_loop_was_busy_is_read(private_redis: RedisProcess) -> None:
    backend = RedisBackend(private_redis.url, timeout=0.02)

    async def main() -> list[Any]:
        await backend.ahit(0, ["lag:k"], QUOTAS, 1)  # connected
        results = []
        for _ in range(5):
            late = LateReply(private_redis.port)
            results.append(await backend.ahit(0, ["lag:k"], QUOTAS, 1))
            late.close()
        return results

    results = asyncio.run(main())
    assert [allowed for allowed, _ in results] == [True] * 5
    backend.close()


def test_a_slot_acquired_while_the_loop_was_busy_counts(private_redis: RedisProcess) -> None:
    layer = ConcurrencyLimit(10, storage=private_redis.url, key_prefix="lag")
    slots = layer._shared
    assert slots is not None

    async def main() -> list[int]:
        got = [await slots.aacquire(slots.keys_for(None), "warm")]
        for i in range(5):
            late = LateReply(private_redis.port)
            got.append(await slots.aacquire(slots.keys_for(None), f"s{i}"))
            late.close()
        await slots.aclose()
        return got

    assert asyncio.run(main()) == [1] * 6
    assert slots.errors == 0
    layer.close()


def test_a_paused_redis_still_costs_one_timeout(private_redis: RedisProcess) -> None:
    """The grace is one pass of the loop: a Redis that does not answer is not waited for."""
    from seawall._wire import setup_timeout

    backend = RedisBackend(private_redis.url, timeout=0.02)

    async def main() -> tuple[float, float]:
        await backend.ahit(0, ["lag:p"], QUOTAS, 1)  # a kept connection
        private_redis.pause()
        try:
            t0 = time.perf_counter()
            with pytest.raises(Exception, match="storage call failed: TimeoutError"):
                await backend.ahit(0, ["lag:p"], QUOTAS, 1)
            on_kept = time.perf_counter() - t0
            # The kept connection went with the timeout: this call opens one,
            # under the setup bound (the server accepts, HELLO gets no answer).
            t0 = time.perf_counter()
            with pytest.raises(Exception, match="storage call failed"):
                await backend.ahit(0, ["lag:p"], QUOTAS, 1)
            opening = time.perf_counter() - t0
        finally:
            private_redis.resume()
        return on_kept, opening

    on_kept, opening = asyncio.run(main())
    assert 0.02 <= on_kept < 0.02 + 0.05, f"{on_kept * 1000:.0f} ms"
    assert opening < setup_timeout(0.02) + 0.1, f"{opening * 1000:.0f} ms"
    backend.close()


def test_deadline_semantics() -> None:
    """TimeoutError for its own expiry; another cancellation stays a cancellation."""
    from seawall._wire import Deadline

    async def expires() -> None:
        async with Deadline(0.01):
            await asyncio.sleep(1)

    async def cancelled_from_outside() -> bool:
        async def inner() -> None:
            async with Deadline(1):
                await asyncio.sleep(1)

        task = asyncio.create_task(inner())
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    async def in_time() -> int:
        async with Deadline(1):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)  # no stray cancellation left behind
        return 1

    t0 = time.perf_counter()
    with pytest.raises(TimeoutError):
        asyncio.run(expires())
    assert time.perf_counter() - t0 < 0.5
    assert asyncio.run(cancelled_from_outside())
    assert asyncio.run(in_time()) == 1


@pytest.mark.parametrize(
    "layer", ["RateLimit('5/minute', storage=U)", "ConcurrencyLimit(5, storage=U)"]
)
def test_redis_py_is_imported_at_construction_not_by_the_first_request(
    private_redis: RedisProcess, layer: str
) -> None:
    """Importing redis-py's clients blocked a worker's loop for 100-200 ms at its first request."""
    script = textwrap.dedent(
        f"""
        import sys
        from seawall import ConcurrencyLimit, RateLimit
        U = {private_redis.url!r}
        assert "redis.asyncio" not in sys.modules
        layer = {layer}
        before = set(sys.modules)
        import asyncio
        from seawall._ratelimit.quota import parse_quotas
        async def first():
            if isinstance(layer, RateLimit):
                q = parse_quotas("5/minute", "d", "limit")
                await layer._backend.ahit(0, ["k"], q, 1)
            else:
                await layer._shared.aacquire(layer._shared.keys_for(None), "x")
        asyncio.run(first())
        new = sorted(m for m in set(sys.modules) - before if m != "asyncio")
        print(new)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
