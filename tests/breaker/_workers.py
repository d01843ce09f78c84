"""Worker processes for the shared-Redis tests (imported by spawned children)."""

from __future__ import annotations

import threading
from typing import Any

from seawall._breaker import Breaker

SETTINGS: dict[str, Any] = {
    "fail_max": 3,
    "permitted_calls_in_half_open": 3,
    "wait_in_open": 10,
}


def make(url: str, prefix: str, now: float) -> Breaker:
    """The breaker every worker builds: same name, same Redis keys, a fixed clock."""
    return Breaker(
        "mp", storage=url, key_prefix=prefix, storage_timeout=2.0, clock=lambda: now, **SETTINGS
    )


def probe(url: str, prefix: str, now: float, threads: int, barrier: Any, out: Any) -> None:
    """Take permits from *threads* threads at once; report (probes, refusals)."""
    breaker = make(url, prefix, now)
    results: list[Any] = []
    lock = threading.Lock()
    inner = threading.Barrier(threads)

    def one() -> None:
        inner.wait()
        permit = breaker.acquire()
        with lock:
            results.append(permit)

    barrier.wait(30)  # every process starts together
    pool = [threading.Thread(target=one) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    probes = sum(1 for p in results if not isinstance(p, float) and p.probe)
    refused = sum(1 for p in results if isinstance(p, float))
    out.put((probes, refused, breaker.shared is not None and breaker.shared.errors))


def fail_or_watch(
    url: str, prefix: str, now: float, role: int, opened: Any, barrier: Any, out: Any
) -> None:
    """Role 0 fails until the breaker opens; the others then find it open."""
    breaker = make(url, prefix, now)
    barrier.wait(30)
    if role == 0:
        for _ in range(SETTINGS["fail_max"]):
            permit = breaker.acquire()
            breaker.record(permit, True)
        opened.set()
        out.put((role, breaker.current_state, None))
        return
    opened.wait(30)
    answer = breaker.acquire()
    out.put((role, breaker.current_state, answer if isinstance(answer, float) else None))


# -- whole requests through the layer, one driver per process ----------------------

LAYER: dict[str, Any] = {"permitted_calls_in_half_open": 3, "wait_in_open": 10}


def layer(url: str, prefix: str, now: float, **extra: Any) -> Any:
    """The CircuitBreaker every worker puts around its app (same Redis keys)."""
    from seawall import CircuitBreaker

    settings = {**LAYER, **extra}
    return CircuitBreaker(
        storage=url, key_prefix=prefix, storage_timeout=2.0, clock=lambda: now, **settings
    )


def _asgi_app(entered: Any, release: Any) -> Any:
    import asyncio

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with entered.get_lock():
            entered.value += 1
        # Hold every probe until the parent saw all the other requests answered.
        while not release.is_set():
            await asyncio.sleep(0.005)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _wsgi_app(entered: Any, release: Any) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        with entered.get_lock():
            entered.value += 1
        release.wait(30)
        start_response("200 OK", [])
        return [b"ok"]

    return app


def http_half_open(
    url: str,
    prefix: str,
    now: float,
    interface: str,
    n: int,
    barrier: Any,
    entered: Any,
    answered: Any,
    release: Any,
    out: Any,
) -> None:
    """Send *n* concurrent requests to a wrapped app; report (interface, codes, store errors)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from seawall import Seawall

    wrapped = layer(url, prefix, now)
    codes: list[int] = []

    def note(code: int) -> None:
        codes.append(code)
        with answered.get_lock():
            answered.value += 1

    if interface == "asgi":
        wall = Seawall(_asgi_app(entered, release), layers=[wrapped], interface="asgi")

        async def one(client: httpx.AsyncClient) -> None:
            note((await client.get("/")).status_code)

        async def main() -> None:
            transport = httpx.ASGITransport(app=wall)
            async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
                barrier.wait(30)
                await asyncio.gather(*(one(client) for _ in range(n)))
            store = wrapped.breaker().shared
            await store.drain()  # the probes' outcomes go back in tasks

        asyncio.run(main())
    else:
        wall = Seawall(_wsgi_app(entered, release), layers=[wrapped], interface="wsgi")
        start = threading.Barrier(n)

        def run(_: int) -> None:
            with httpx.Client(transport=httpx.WSGITransport(app=wall), base_url="http://w") as c:
                start.wait(30)
                note(c.get("/").status_code)

        barrier.wait(30)
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(run, range(n)))
    store = wrapped.breaker().shared
    out.put((interface, sorted(codes), store.errors if store is not None else -1))


def http_fail_or_watch(
    url: str,
    prefix: str,
    now: float,
    interface: str,
    role: int,
    opened: Any,
    entered: Any,
    out: Any,
) -> None:
    """Role 0 answers 500s until its breaker opens; the others then ask once."""
    import asyncio

    import httpx

    from seawall import Seawall
    from tests.breaker.apps import asgi_routed, wsgi_routed

    wrapped = layer(url, prefix, now, failure_rate_threshold=0.5, minimum_number_of_calls=10)

    def counted_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        with entered.get_lock():
            entered.value += 1
        return wsgi_routed(environ, start_response)

    async def counted_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with entered.get_lock():
            entered.value += 1
        await asgi_routed(scope, receive, send)

    paths = ["/status/500"] * 10 if role == 0 else []
    if interface == "asgi":
        wall = Seawall(counted_asgi, layers=[wrapped], interface="asgi")

        async def main() -> list[Any]:
            transport = httpx.ASGITransport(app=wall)
            async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
                answers = []
                for path in paths:
                    answers.append((await client.get(path)).status_code)
                    await wrapped.breaker().shared.drain()  # each outcome in Redis first
                if role == 0:
                    opened.set()
                    return answers
                opened.wait(30)
                response = await client.get("/")
                return [response.status_code, response.headers.get("retry-after")]

        result = asyncio.run(main())
    else:
        wall = Seawall(counted_wsgi, layers=[wrapped], interface="wsgi")
        with httpx.Client(transport=httpx.WSGITransport(app=wall), base_url="http://w") as c:
            result = [c.get(path).status_code for path in paths]
            if role == 0:
                opened.set()
            else:
                opened.wait(30)
                response = c.get("/")
                result = [response.status_code, response.headers.get("retry-after")]
    out.put((role, interface, result, wrapped.breaker().current_state))
