"""What each worker process runs: a wrapped app driven in-process by 50 concurrent clients.

Imported by spawned processes, so it must not import pytest fixtures.
ASGI workers run 50 asyncio tasks over ``httpx.ASGITransport`` (the async
Redis path); WSGI workers run 50 threads over ``httpx.WSGITransport`` (the
sync path).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

# Peak concurrency seen inside the app, kept in Redis so every process counts together.
PEAK = """
local n = redis.call('INCR', KEYS[1])
local peak = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > peak then redis.call('SET', KEYS[2], n) end
return n
"""

_barrier: Any = None


def init(barrier: Any) -> None:
    """Pool initializer: the barrier that starts every worker's load at once."""
    import logging

    import structlog

    global _barrier
    _barrier = barrier
    # Thousands of expected rejections: keep this process's output to warnings.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _layers(job: dict[str, Any]) -> list[Any]:
    if job["kind"] == "ban":
        from seawall import RateLimit

        # Every client of every process is the same key: one shared ban.
        return [
            RateLimit(
                f"{job['limit']}/minute",
                storage=job["storage"],
                key_prefix=job["prefix"],
                key=lambda request: "one-attacker",
                storage_timeout=3.0,
                on_storage_error="deny",
                ban={"after": f"{job['after']}/minute", "duration": 600},
            )
        ]
    if job["kind"] == "ratelimit":
        from seawall import RateLimit

        return [
            RateLimit(
                f"{job['limit']}/minute",
                strategy=job["strategy"],
                storage=job["storage"],
                key_prefix=job["prefix"],
                storage_timeout=3.0,
                on_storage_error="deny",
            )
        ]
    from seawall import ConcurrencyLimit

    return [
        ConcurrencyLimit(
            job["limit"],
            storage=job["storage"],
            key_prefix=job["prefix"],
            storage_timeout=3.0,
            on_storage_error="deny",
        )
    ]


def _asgi_app(job: dict[str, Any]) -> Any:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(job["storage"]) if job["kind"] == "concurrency" else None
    cur, peak = job["prefix"] + ":cur", job["prefix"] + ":peak"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if client is not None:
            await client.eval(PEAK, 2, cur, peak)
            await asyncio.sleep(job["hold"])
            await client.decr(cur)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _wsgi_app(job: dict[str, Any]) -> Any:
    import redis

    client = redis.Redis.from_url(job["storage"]) if job["kind"] == "concurrency" else None
    cur, peak = job["prefix"] + ":cur", job["prefix"] + ":peak"

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if client is not None:
            client.eval(PEAK, 2, cur, peak)
            time.sleep(job["hold"])
            client.decr(cur)
        start_response("200 OK", [])
        return [b"ok"]

    return app


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Serve ``clients x requests`` requests; return the status counts and layer stats."""
    import httpx

    from seawall import Seawall

    layers = _layers(job)
    codes: Counter[int] = Counter()
    if job["interface"] == "asgi":
        wall = Seawall(_asgi_app(job), layers=layers, interface="asgi")

        async def main() -> None:
            transport = httpx.ASGITransport(app=wall)
            async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:

                async def one_client() -> None:
                    for _ in range(job["requests"]):
                        codes[(await client.get("/")).status_code] += 1

                shared = getattr(layers[0], "_shared", None)
                if shared is not None:
                    # Open the pool's connections before the clock starts: on a
                    # loaded CI box 50 simultaneous connects can outlast a timeout.
                    aclient = shared.aclient()
                    await asyncio.gather(*(aclient.ping() for _ in range(job["clients"])))
                _barrier.wait(30)
                await asyncio.gather(*(one_client() for _ in range(job["clients"])))
            close = getattr(layers[0], "aclose", None)
            if close is not None:
                await close()

        asyncio.run(main())
    else:
        wall = Seawall(_wsgi_app(job), layers=layers, interface="wsgi")
        client = httpx.Client(transport=httpx.WSGITransport(app=wall), base_url="http://w")
        lock = threading.Lock()

        def one_client() -> None:
            for _ in range(job["requests"]):
                status = client.get("/").status_code
                with lock:
                    codes[status] += 1

        threads = [threading.Thread(target=one_client) for _ in range(job["clients"])]
        shared = getattr(layers[0], "_shared", None)
        if shared is not None:
            sync = shared.client()
            warm = [threading.Thread(target=sync.ping) for _ in range(job["clients"])]
            for t in warm:
                t.start()
            for t in warm:
                t.join()
        _barrier.wait(30)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        flush = getattr(layers[0], "flush", None)
        if flush is not None:
            flush(5.0)
    stats = layers[0].stats() if hasattr(layers[0], "stats") else {}
    return {"codes": dict(codes), "stats": stats}
