"""
A load run against a real server: a slow handler without and with LoadShedding.

    python bench/load_shedding.py [--rate 40] [--seconds 10] [--capacity 2] [--work 0.1]

The app (served by uvicorn on 127.0.0.1, one worker, in a child process) has
a handler that can do *capacity* requests at once, each taking *work*
seconds (an ``asyncio.Semaphore``: a connection pool, a licence, a GPU); the
rest wait their turn. It can serve ``capacity / work`` requests per second.

The client sends an open-loop load of *rate* requests per second to ``/work``
(plus 5 per second to ``/login``, a critical route) for *seconds* seconds:
arrivals do not wait for answers, as with real users. Bounded: at most
``rate * seconds`` requests, each with a 20 s client timeout.

Without shedding the queue grows for the whole run, and so does latency.
With ``LoadShedding`` (adaptive limit; CPU and memory thresholds off, since
this machine's CPU is shared with the load generator), the excess is
refused at once with 503 and admitted requests stay fast; ``/login`` is
critical and keeps succeeding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def build_app(capacity: int, work: float, shedding: bool) -> Any:
    from seawall import LoadShedding, Seawall

    gate: asyncio.Semaphore | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal gate
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/_stats":
            import json

            from seawall import stats

            body = json.dumps(stats(wall).get("shedding")).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if gate is None:
            gate = asyncio.Semaphore(capacity)
        async with gate:
            await asyncio.sleep(work)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"done"})

    if not shedding:
        wall = Seawall(app, layers=[])
        return wall
    # Start low (initial_limit=2): the limit learns the usual latency from
    # its first windows, so it must not start far past what the service handles.
    layer = LoadShedding(cpu_threshold=None, memory_threshold=None,
                         critical=("/login", "/_stats"), initial_limit=2, min_limit=2,
                         window=0.5)  # fmt: skip
    wall = Seawall(app, layers=[layer])
    return wall


def serve(port: int, capacity: int, work: float, shedding: bool) -> None:
    import uvicorn

    uvicorn.run(build_app(capacity, work, shedding), host="127.0.0.1", port=port,
                log_level="warning", lifespan="on", access_log=False)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


async def load(port: int, rate: float, seconds: float) -> dict[str, list[tuple[float, int, float]]]:
    """Open-loop: fire requests on schedule; record (sent at, status, latency)."""
    import httpx

    results: dict[str, list[tuple[float, int, float]]] = {"/work": [], "/login": []}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                 timeout=20.0) as client:  # fmt: skip

        async def one(path: str, sent: float) -> None:
            start = time.perf_counter()
            try:
                status = (await client.get(path)).status_code
            except httpx.HTTPError:
                status = 0
            results[path].append((sent, status, time.perf_counter() - start))

        tasks = []
        t0 = time.perf_counter()
        n = int(rate * seconds)
        logins = int(5 * seconds)
        schedule = sorted(
            [(i / rate, "/work") for i in range(n)] + [(i / 5, "/login") for i in range(logins)]
        )
        for at, path in schedule:
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(path, at)))
        await asyncio.gather(*tasks)
        try:
            stats = (await client.get("/_stats")).json()
        except (httpx.HTTPError, ValueError):
            stats = None
    results["stats"] = stats  # type: ignore[assignment]
    return results


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def summarize(label: str, results: dict[str, Any], seconds: float) -> None:
    work = results["/work"]
    ok = [lat for _, status, lat in work if status == 200]
    shed = sum(1 for _, status, _ in work if status == 503)
    failed = sum(1 for _, status, _ in work if status not in (200, 503))
    first = [lat for sent, status, lat in work if status == 200 and sent < seconds / 4]
    last = [lat for sent, status, lat in work if status == 200 and sent >= 3 * seconds / 4]
    logins = results["/login"]
    login_ok = sum(1 for _, status, _ in logins if status == 200)
    print(f"\n{label}")
    print(f"  /work sent {len(work)}: ok {len(ok)}, shed 503 {shed}, failed/timed out {failed}")
    print(f"  admitted latency: p50 {pct(ok, 50) * 1000:.0f} ms, p99 {pct(ok, 99) * 1000:.0f} ms, "
          f"max {max(ok, default=0) * 1000:.0f} ms")  # fmt: skip
    print(f"  p50 of requests sent in the first quarter {pct(first, 50) * 1000:.0f} ms, "
          f"in the last quarter {pct(last, 50) * 1000:.0f} ms")  # fmt: skip
    login_lat = [lat for _, status, lat in logins if status == 200]
    stats: Any = results.get("stats")
    if stats:
        print(f"  learned limit {stats['limit']} (usual latency {stats['latency_ms']['long']} ms)")
    print(f"  /login (critical): {login_ok}/{len(logins)} ok, "
          f"p99 {pct(login_lat, 99) * 1000:.0f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--capacity", type=int, default=2)
    parser.add_argument("--work", type=float, default=0.1)
    parser.add_argument("--serve", choices=["off", "on"])
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.capacity, args.work, args.serve == "on")
        return
    print(f"capacity {args.capacity} x {args.work * 1000:.0f} ms = "
          f"{args.capacity / args.work:.0f} req/s; offered {args.rate:.0f} req/s to /work "
          f"+ 5 req/s to /login for {args.seconds:g} s")  # fmt: skip
    for mode, label in (("off", "without shedding"), ("on", "with LoadShedding")):
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode, "--port", str(port),
             "--capacity", str(args.capacity), "--work", str(args.work)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
        )  # fmt: skip
        try:
            wait_up(port)
            results = asyncio.run(load(port, args.rate, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=10)
        summarize(label, results, args.seconds)


if __name__ == "__main__":
    main()
