"""Redis killed (SIGKILL) or paused (SIGSTOP) in the middle of a load run.

For RateLimit with ``on_storage_error="allow"`` and ``"local"`` (and
ConcurrencyLimit with ``"allow"``), through both drivers:

- zero 5xx caused by seawall;
- added latency per request bounded by the storage timeout (plus slack for
  a loaded CI box);
- back on the shared store within 2 s of Redis returning (restarted on the
  same port, or SIGCONT).

Load: 8 concurrent clients (threads on WSGI, asyncio tasks on ASGI), each
looping requests with a short pause, for about 3.5 s.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

from seawall import Seawall
from tests.redis_topologies.servers import RedisProcess

pytestmark = pytest.mark.slow

TIMEOUT = 0.02  # the default storage timeout
PROBE = 0.25  # how often a down storage is tried again
SLACK = 0.1  # scheduling noise on a shared 2-core CI box (8 clients on one loop/GIL)
WORST_SLACK = 0.4  # one unlucky request: still far below the 0.8 s outage
CLIENTS = 8
FAULT_AT, BACK_AT, END_AFTER_BACK = 0.4, 1.2, 2.5


@dataclass
class Run:
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # start, latency, status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, start: float, latency: float, status: int) -> None:
        with self.lock:
            self.samples.append((start, latency, status))


def _app_asgi() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _app_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [])
    return [b"ok"]


def _layer(kind: str, url: str) -> Any:
    if kind == "ratelimit-counted-banning":
        from seawall import RateLimit

        # Every request tested on arrival and counted after it (count_when),
        # each storage call also checking a ban: the paths this adds, same faults.
        return RateLimit(
            "1000000/minute",
            storage=url,
            on_storage_error="allow",
            storage_timeout=TIMEOUT,
            storage_probe=PROBE,
            count_when="success",
            ban={"after": "5/minute", "duration": 60},
        )
    if kind.startswith("ratelimit"):
        from seawall import RateLimit

        policy = kind.split("-", 1)[1]
        return RateLimit(
            "1000000/minute",
            storage=url,
            on_storage_error=policy,
            storage_timeout=TIMEOUT,
            storage_probe=PROBE,
            workers=2,
        )
    from seawall import ConcurrencyLimit

    return ConcurrencyLimit(
        1000, storage=url, on_storage_error="allow", storage_timeout=TIMEOUT, storage_probe=PROBE
    )


def _storage_calls(port: int) -> int:
    """Commands Redis ran for the layers (our own INFO/PING calls excluded)."""
    client = redis.Redis(port=port, socket_timeout=0.5)
    try:
        stats = client.info("commandstats")
    except redis.RedisError:
        return -1
    finally:
        client.close()
    ours = (
        "cmdstat_info",
        "cmdstat_ping",
        "cmdstat_client",
        "cmdstat_hello",
        "cmdstat_command",
        "cmdstat_config",
    )
    return sum(v["calls"] for k, v in stats.items() if k not in ours)


def _drive(interface: str, wall: Any, run: Run, stop: threading.Event) -> threading.Thread:
    """Start the load in a background thread; it runs until *stop* is set."""
    if interface == "wsgi":
        client = httpx.Client(transport=httpx.WSGITransport(app=wall), base_url="http://t")

        def loop() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                status = client.get("/").status_code
                run.record(t0, time.perf_counter() - t0, status)
                time.sleep(0.005)

        def main() -> None:
            threads = [threading.Thread(target=loop) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            client.close()
            close = getattr(wall_layer(wall), "close", None)
            if close is not None:
                close()

        thread = threading.Thread(target=main)
    else:

        async def amain() -> None:
            transport = httpx.ASGITransport(app=wall)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

                async def loop() -> None:
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        status = (await client.get("/")).status_code
                        run.record(t0, time.perf_counter() - t0, status)
                        await asyncio.sleep(0.005)

                await asyncio.gather(*(loop() for _ in range(CLIENTS)))
            aclose = getattr(wall_layer(wall), "aclose", None)
            if aclose is not None:
                await aclose()

        thread = threading.Thread(target=lambda: asyncio.run(amain()))
    thread.start()
    return thread


def wall_layer(wall: Any) -> Any:
    return wall.stack.layers[0]


@pytest.mark.parametrize("fault", ["kill", "pause"])
@pytest.mark.parametrize(
    "kind",
    ["ratelimit-allow", "ratelimit-local", "concurrency-allow", "ratelimit-counted-banning"],
)
def test_outage_mid_run(private_redis: RedisProcess, interface: str, kind: str, fault: str) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    app = _app_asgi() if interface == "asgi" else _app_wsgi
    wall = Seawall(app, layers=[_layer(kind, url)], interface=interface)
    run, stop = Run(), threading.Event()
    t_start = time.perf_counter()
    load = _drive(interface, wall, run, stop)
    try:
        time.sleep(FAULT_AT)
        t_fault = time.perf_counter()
        if fault == "kill":
            private_redis.kill()
        else:
            private_redis.pause()
        time.sleep(BACK_AT - FAULT_AT)
        if fault == "kill":
            private_redis.start()  # same port, empty data
        else:
            private_redis.resume()
        t_back = time.perf_counter()
        before = _storage_calls(private_redis.port)
        t_shared = None
        while time.perf_counter() - t_back < END_AFTER_BACK:
            time.sleep(0.02)
            if t_shared is None and _storage_calls(private_redis.port) > before:
                t_shared = time.perf_counter()
            if t_shared is not None and time.perf_counter() - t_back > 0.3:
                break
    finally:
        stop.set()
        load.join(10)
    assert not load.is_alive()

    statuses = [s for _, _, s in run.samples]
    assert len(statuses) > 100, "the load did not run"
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert set(statuses) == {200}
    # Requests that started during the outage: each waited at most one timeout.
    outage = [lat for start, lat, _ in run.samples if t_fault <= start <= t_back]
    assert len(outage) > 10
    outage.sort()
    p95, worst = outage[int(len(outage) * 0.95)], outage[-1]
    assert p95 <= TIMEOUT + SLACK, f"p95 during the outage: {p95 * 1000:.0f} ms"
    # A call without a bound would hang until Redis came back (0.8 s later).
    assert worst <= TIMEOUT + WORST_SLACK, f"worst during the outage: {worst * 1000:.0f} ms"
    # Back on the shared store within 2 s of Redis returning.
    assert t_shared is not None, "no storage call reached Redis after it came back"
    assert t_shared - t_back <= 2.0
    assert t_start < t_fault
