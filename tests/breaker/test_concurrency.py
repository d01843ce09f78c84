"""Half-open under 100 concurrent requests: exactly the permitted probes reach the app."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from seawall import CircuitBreaker, Seawall
from seawall.testing import ManualClock

N = 100
PROBES = 3


def _open_then_wait(clock: ManualClock) -> CircuitBreaker:
    layer = CircuitBreaker(permitted_calls_in_half_open=PROBES, wait_in_open=10, clock=clock)
    layer.open()
    clock.advance(10)  # the next requests find it ready to probe
    return layer


def test_asgi_half_open_admits_exactly_the_permitted_probes(clock: ManualClock) -> None:
    """100 concurrent requests on one event loop: 3 reach the app, 97 get 503 at once."""
    layer = _open_then_wait(clock)
    entered = 0
    release: asyncio.Event

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        await release.wait()  # hold the probes until every other request was answered
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wall = Seawall(app, layers=[layer], interface="asgi")

    async def main() -> list[int]:
        nonlocal release
        release = asyncio.Event()
        transport = httpx.ASGITransport(app=wall)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            requests = [asyncio.ensure_future(client.get("/")) for _ in range(N)]
            breaker = layer.breaker()
            for _ in range(2000):
                if breaker.rejected >= N - PROBES:
                    break
                await asyncio.sleep(0.001)
            release.set()
            responses = await asyncio.gather(*requests)
        return [r.status_code for r in responses]

    codes = asyncio.run(main())
    assert entered == PROBES
    assert codes.count(200) == PROBES
    assert codes.count(503) == N - PROBES
    assert layer.breaker().current_state == "closed"


def test_wsgi_half_open_admits_exactly_the_permitted_probes(clock: ManualClock) -> None:
    """100 concurrent threads: 3 reach the app, 97 get 503 at once."""
    layer = _open_then_wait(clock)
    entered = 0
    lock = threading.Lock()
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        nonlocal entered
        with lock:
            entered += 1
        release.wait(10)
        start_response("200 OK", [])
        return [b"ok"]

    wall = Seawall(app, layers=[layer], interface="wsgi")
    start = threading.Barrier(N)

    def one(_: int) -> int:
        with httpx.Client(transport=httpx.WSGITransport(app=wall), base_url="http://t") as c:
            start.wait(10)
            return c.get("/").status_code

    with ThreadPoolExecutor(N) as pool:
        futures = [pool.submit(one, i) for i in range(N)]
        breaker = layer.breaker()
        deadline = time.monotonic() + 10
        while breaker.rejected < N - PROBES and time.monotonic() < deadline:
            time.sleep(0.005)
        release.set()
        codes = [f.result() for f in futures]
    assert entered == PROBES
    assert codes.count(200) == PROBES
    assert codes.count(503) == N - PROBES
    assert layer.breaker().current_state == "closed"


def test_no_lock_is_held_across_the_guarded_call(clock: ManualClock) -> None:
    """Threads are inside one breaker's call() at the same time (pybreaker serialises them).

    Each call waits at a barrier for the others: held under a lock, the
    first would wait alone until the barrier broke. Also half-open: the
    permitted probes run together.
    """
    from seawall._breaker import Breaker

    for state in ("closed", "half-open"):
        b = Breaker("nolock", fail_max=5, permitted_calls_in_half_open=4, clock=clock)
        if state == "half-open":
            b.open()
            clock.advance(30)
        inside = threading.Barrier(4, timeout=5)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _, b=b, w=inside.wait: b.call(w), range(4)))
        assert sorted(results) == [0, 1, 2, 3]  # every thread passed the barrier
        assert b.current_state == "closed"
