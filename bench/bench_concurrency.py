"""
Per-request cost of ConcurrencyLimit, ASGI and WSGI, in one run: the bare
app, ConcurrencyLimit on memory (global; global + per key), and on Redis
(a private redis-server started for the run on a spare port, so the
command counts are ours alone).

    python bench/bench_concurrency.py [--n 2000] [--rounds 7]

Requests are sequential and in-process (no HTTP), so the figures are the
layer's own cost. On Redis a request costs one round trip on its path (the
acquire script); the release is sent after the response, off the request's
path: it rides on the next acquire's script call (or a flusher thread
sends it when the worker is idle). Redis's ``INFO commandstats`` counts the
script calls per request.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import compare, paired, report, time_asgi, time_wsgi


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def start_redis() -> tuple[subprocess.Popen[bytes], int, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="seawall-bench-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port, workdir
        except OSError:
            time.sleep(0.02)
    proc.kill()
    return None


def ping_sync(url: str, n: int) -> float:
    """µs per PING round trip with redis-py's sync client (the floor of a Redis request)."""
    import redis

    client = redis.Redis.from_url(url)
    client.ping()
    t0 = time.perf_counter()
    for _ in range(n):
        client.ping()
    took = (time.perf_counter() - t0) / n * 1e6
    client.close()
    return took


def ping_async(url: str, n: int) -> float:
    """µs per PING round trip with ``redis.asyncio``."""
    import asyncio

    import redis.asyncio as aredis

    async def loop() -> float:
        client = aredis.Redis.from_url(url)
        await client.ping()
        t0 = time.perf_counter()
        for _ in range(n):
            await client.ping()
        took = (time.perf_counter() - t0) / n * 1e6
        await client.aclose()
        return took

    return asyncio.run(loop())


def command_calls(port: int) -> dict[str, int]:
    import redis

    client = redis.Redis(port=port)
    try:
        return {
            k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()
        }
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="requests per sample")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from seawall import ConcurrencyLimit, Seawall

    n = args.n
    redis_server = start_redis()
    try:
        for interface, app, timer in (
            ("ASGI", bare_asgi, time_asgi),
            ("WSGI", bare_wsgi, time_wsgi),
        ):
            walls: dict[str, Any] = {
                "bare app": app,
                "Seawall, no layers": Seawall(app, layers=[]),
                "ConcurrencyLimit(100) memory": Seawall(app, layers=[ConcurrencyLimit(100)]),
                "ConcurrencyLimit(100, per_key=10) memory": Seawall(
                    app, layers=[ConcurrencyLimit(100, per_key=10)]
                ),
            }
            url = None
            if redis_server is not None:
                url = f"redis://127.0.0.1:{redis_server[1]}/0"
                walls["ConcurrencyLimit(100) redis"] = Seawall(
                    app,
                    layers=[
                        ConcurrencyLimit(
                            100, storage=url, storage_timeout=0.5, key_prefix=f"bench-{interface}"
                        )
                    ],
                )
            cases = {name: (lambda w=w, t=timer: t(w, n)) for name, w in walls.items()}
            if url is not None:
                ping = ping_async if interface == "ASGI" else ping_sync
                cases["(reference) one Redis PING round trip"] = lambda u=url, p=ping: p(u, n)
            medians = compare(cases, rounds=args.rounds)
            report(
                f"{interface}: µs per request (median of {args.rounds} x {n})", medians, "bare app"
            )
            if url is not None:
                beyond = (
                    paired(medians, "ConcurrencyLimit(100) redis", "bare app")
                    - medians["(reference) one Redis PING round trip"]
                )
                print(f"  ConcurrencyLimit on Redis beyond one PING round trip: {beyond:+.1f} µs")
            if redis_server is not None:
                wall = walls["ConcurrencyLimit(100) redis"]
                layer = wall.stack.layers[0]
                layer.flush(5.0)
                before = command_calls(redis_server[1])
                timer(wall, n)
                layer.flush(5.0)
                time.sleep(0.2)  # the last release tasks / batches
                after = command_calls(redis_server[1])
                delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                acquire = delta.get("evalsha", 0) + delta.get("eval", 0)
                print(
                    f"  redis commands per request ({n} requests): "
                    + ", ".join(
                        f"{k}={v / n:.2f}" for k, v in sorted(delta.items()) if v and k != "info"
                    )
                )
                print(
                    f"  (one script call per request carries the acquire and the previous "
                    f"request's release: {acquire / n:.2f} calls/req)"
                )
                stats = layer.stats()
                print(
                    f"  storage errors: {stats['storage_errors']}, "
                    f"release errors: {stats['release_errors']}"
                )
        if redis_server is None:
            print("\n(redis-server not found: the Redis cases were skipped)")
    finally:
        if redis_server is not None:
            redis_server[0].terminate()
            redis_server[0].wait(5)
            shutil.rmtree(redis_server[2], ignore_errors=True)


if __name__ == "__main__":
    main()
