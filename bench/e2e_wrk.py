"""
End to end: uvicorn (1 worker) on 127.0.0.1 serving the same Starlette app
bare, under seawall's recommended stack, and under slowapi's decorator, each
driven by wrk for a bounded run; prints requests/s, p99 and the ratio to bare.

    python bench/e2e_wrk.py [--seconds 10] [--connections 32] [--rounds 3]
                            [--http h11|httptools|both] [--breakdown] [--no-pin]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). The apps are defined
here; uvicorn imports them from this file. ``--http both`` (the default
when httptools is installed, as ``uvicorn[standard]`` and the ``bench``
extra install it) runs every app under uvicorn's pure-Python h11 protocol
on asyncio, then under httptools on uvloop: the first is what ``pip
install uvicorn`` serves with, the second what ``uvicorn[standard]`` (and
``fastapi[standard]``) does, and a server's own per-request work sets the
ratio as much as ours does. ``--breakdown`` adds the stack's parts (the
engine alone, Timing + ErrorCapture, RateLimit alone, the stack with the
rate-limit headers off, the stack with X-Request-ID its only header) to
show where the added CPU goes, and for scale the bare app answering with
the stack's four response headers itself (what those headers cost the
server, with none of seawall's work).

On a machine with two CPUs or more the server runs pinned to one CPU and
wrk to another (``--no-pin`` turns that off): unpinned, the scheduler moves
both between the two cores of these machines, and four 4 s runs of the
engine alone ranged from 8077 to 10394 requests/s; pinned, from 9930 to
10122.

Target (issue 6): the recommended stack keeps at least 0.85x of bare
throughput (for scale: slowapi's decorator keeps about 0.67x).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HIGH = "1000000/minute"


# -- the apps (imported by uvicorn) ---------------------------------------------


def _starlette(endpoint: Any = None, middleware: list[Any] | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Any) -> JSONResponse:
        return JSONResponse({"id": int(request.path_params["item_id"])})

    return Starlette(
        routes=[Route("/items/{item_id:int}", endpoint or item)], middleware=middleware
    )


def _recommended(*, headers: bool = True, server_timing: bool = True) -> list[Any]:
    from seawall import CircuitBreaker, ErrorCapture, RateLimit, Timing, Validation

    return [
        Timing(server_timing=server_timing),
        ErrorCapture(),
        RateLimit(HIGH, headers=headers),
        Validation(),
        CircuitBreaker(),
    ]


def _layers(name: str) -> list[Any] | None:
    """The layers of each seawall variant (``None``: not a seawall variant)."""
    from seawall import ErrorCapture, RateLimit, Timing

    variants: dict[str, Any] = {
        "seawall": _recommended,
        "engine": list,
        "timing_errors": lambda: [Timing(), ErrorCapture()],
        "ratelimit": lambda: [RateLimit(HIGH)],
        "stack_no_rl_headers": lambda: _recommended(headers=False),
        "stack_id_header_only": lambda: _recommended(headers=False, server_timing=False),
    }
    factory = variants.get(name)
    return None if factory is None else factory()


def _build(name: str) -> Any:
    if name == "bare":
        return _starlette()
    layers = _layers(name)
    if layers is not None:
        from starlette.middleware import Middleware

        from seawall.fastapi import SeawallMiddleware

        return _starlette(middleware=[Middleware(SeawallMiddleware, layers=layers)])
    if name == "headers_only":
        from starlette.responses import JSONResponse

        # The bare app answering with the stack's headers itself: what they
        # cost the server (h11 builds and validates each in Python), with
        # none of seawall's work.
        async def item_with_headers(request: Any) -> JSONResponse:
            return JSONResponse({"id": int(request.path_params["item_id"])}, headers=STACK_HEADERS)

        return _starlette(endpoint=item_with_headers)
    if name == "slowapi":
        from slowapi import Limiter
        from slowapi.util import get_remote_address
        from starlette.responses import JSONResponse

        limiter = Limiter(key_func=get_remote_address)

        @limiter.limit(HIGH)
        async def item(request: Any) -> JSONResponse:
            return JSONResponse({"id": int(request.path_params["item_id"])})

        app = _starlette(endpoint=item)
        app.state.limiter = limiter
        return app
    raise AttributeError(name)


#: (scale) The four header lines the stack adds (same names, values of the same length).
STACK_HEADERS = {
    "x-request-id": "c0ffee0000000000000a",
    "server-timing": "total;dur=0.123, seawall;dur=0.045",
    "ratelimit-policy": '"default";q=1000000;w=60',
    "ratelimit": '"default";r=999999;t=60',
}


def __getattr__(name: str) -> Any:
    # uvicorn e2e_wrk:bare / e2e_wrk:seawall / e2e_wrk:slowapi
    if name in LABELS:
        return _build(name)
    raise AttributeError(name)


# -- the driver ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The servers: uvicorn's --http and --loop for each.
SERVERS = {"h11": ("h11", "asyncio"), "httptools": ("httptools", "uvloop")}


#: CPUs for the server and for wrk (``None``: unpinned); set by ``main``.
PINS: tuple[int, int] | None = None


def _pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that pins the child to *cpu* (``None``: leaves it alone)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _choose_pins() -> tuple[int, int] | None:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (cpus[-1], cpus[0]) if len(cpus) >= 2 else None


def _serve(app: str, port: int, server: str) -> subprocess.Popen[bytes]:
    http, loop = SERVERS[server]
    cmd = [
        str(Path(sys.executable).parent / "uvicorn"),
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
        "--http",
        http,
        "--loop",
        loop,
        f"e2e_wrk:{app}",
    ]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_pinned(None if PINS is None else PINS[0]),
    )


def _wait(port: int, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/items/1", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    msg = "server did not start"
    raise RuntimeError(msg)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def _run_wrk(port: int, seconds: int, connections: int, pid: int) -> tuple[float, float, float]:
    """Run wrk; return requests/s, p99 ms and the server's CPU µs per request.

    CPU time per request (from the server process's own counters) is what
    load from other processes on a shared machine disturbs least.
    """
    import psutil

    server = psutil.Process(pid)
    before = server.cpu_times()
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"http://127.0.0.1:{port}/items/1",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
        preexec_fn=_pinned(None if PINS is None else PINS[1]),
    ).stdout
    after = server.cpu_times()
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu = (after.user + after.system - before.user - before.system) / max(total, 1) * 1e6
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out:
        msg = f"non-2xx answers during the run:\n{out}"
        raise RuntimeError(msg)
    return rps, p99, cpu


LABELS = {
    "bare": "bare Starlette",
    "seawall": "+ seawall recommended stack",
    "slowapi": "+ slowapi @limiter.limit",
    "engine": "  (part) seawall, no layers",
    "timing_errors": "  (part) Timing + ErrorCapture",
    "ratelimit": "  (part) RateLimit alone",
    "stack_no_rl_headers": "  (part) stack, RateLimit headers off",
    "stack_id_header_only": "  (part) stack, X-Request-ID its one header",
    "headers_only": "  (scale) bare + the stack's 4 headers",
}


def _has_httptools() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("httptools", "uvloop"))


def measure(
    server: str, apps: tuple[str, ...], rounds: int, seconds: int, connections: int
) -> dict[str, list[tuple[float, float, float]]]:
    """Interleaved wrk runs of every app under *server*; the results per app."""
    results: dict[str, list[tuple[float, float, float]]] = {app: [] for app in apps}
    for _ in range(rounds):
        for app in apps:
            port = _free_port()
            proc = _serve(app, port, server)
            try:
                _wait(port, time.monotonic() + 60)
                # A short warm-up so imports and first-request work are not measured.
                _run_wrk(port, 1, connections, proc.pid)
                results[app].append(_run_wrk(port, seconds, connections, proc.pid))
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return results


def report(server: str, results: dict[str, list[tuple[float, float, float]]], args: Any) -> None:
    """Print one server's table: req/s, p99, the ratio, CPU per request and what it adds."""

    def med(app: str, i: int) -> float:
        return statistics.median(r[i] for r in results[app])

    bare_rps, bare_cpu = med("bare", 0), med("bare", 2)
    http, loop = SERVERS[server]
    print(
        f"\nuvicorn --http {http} --loop {loop}, 1 worker, wrk -t1 -c{args.connections}"
        f" -d{args.seconds}s (median of {args.rounds} run(s))"
    )
    print(
        f"  {'app':<38} {'req/s':>9} {'p99 ms':>8} {'vs bare':>8} "
        f"{'CPU µs/req':>11} {'added':>8} {'capacity':>9}"
    )
    for app in results:
        rps, p99, cpu = med(app, 0), med(app, 1), med(app, 2)
        print(
            f"  {LABELS[app]:<38} {rps:>9.0f} {p99:>8.2f} {rps / bare_rps:>7.2f}x "
            f"{cpu:>11.1f} {cpu - bare_cpu:>+8.1f} {bare_cpu / cpu:>8.2f}x"
        )
    ratio = med("seawall", 0) / bare_rps
    capacity = bare_cpu / med("seawall", 2)
    print(
        f"  seawall keeps {ratio:.2f}x of bare throughput measured, {capacity:.2f}x by server "
        "CPU per request (target >= 0.85x; capacity is the figure to trust on a busy machine)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per app")
    parser.add_argument("--http", choices=("h11", "httptools", "both"), default=None)
    parser.add_argument("--breakdown", action="store_true", help="also run the stack's parts")
    parser.add_argument("--no-pin", action="store_true", help="leave server and wrk unpinned")
    args = parser.parse_args()
    global PINS
    PINS = None if args.no_pin else _choose_pins()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    http = args.http or ("both" if _has_httptools() else "h11")
    if http != "h11" and not _has_httptools():
        sys.exit("httptools and uvloop are not installed (pip install 'uvicorn[standard]')")
    servers = ("h11", "httptools") if http == "both" else (http,)
    apps: tuple[str, ...] = ("bare", "seawall", "slowapi")
    if args.breakdown:
        apps += (
            "engine",
            "timing_errors",
            "ratelimit",
            "stack_no_rl_headers",
            "stack_id_header_only",
            "headers_only",
        )
    pinned = "unpinned" if PINS is None else f"server on CPU {PINS[0]}, wrk on CPU {PINS[1]}"
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, {pinned}")
    for server in servers:
        report(server, measure(server, apps, args.rounds, args.seconds, args.connections), args)


if __name__ == "__main__":
    main()
