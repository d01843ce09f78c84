"""Shared benchmark harness: in-process ASGI and WSGI calls, interleaved rounds, medians."""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

ROUNDS = 9


def asgi_scope(
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: str = "127.0.0.1",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "client": (client, 50000),
        "server": ("127.0.0.1", 8000),
        "headers": headers
        if headers is not None
        else [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip"),
            (b"connection", b"keep-alive"),
        ],
    }


def wsgi_environ(path: str = "/", method: str = "GET") -> dict[str, Any]:
    import io

    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "HTTP_ACCEPT_ENCODING": "gzip",
        "HTTP_CONNECTION": "keep-alive",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def time_asgi(
    app: Any,
    n: int,
    scope_factory: Callable[[], dict[str, Any]] = asgi_scope,
    *,
    clock: Callable[[], float] = time.perf_counter,
    after: Callable[[], Any] | None = None,
) -> float:
    """µs per request for *n* sequential in-process requests.

    *clock* is wall time by default (``time.thread_time`` for CPU time);
    *after* is awaited before the clock stops (background writes, say).
    """

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def loop() -> float:
        scopes = [scope_factory() for _ in range(n)]
        t0 = clock()
        for scope in scopes:
            await app(scope, receive, send)
        if after is not None:
            await after()
        return (clock() - t0) / n * 1e6

    return asyncio.run(loop())


def time_wsgi(
    app: Any,
    n: int,
    environ_factory: Callable[[], dict[str, Any]] = wsgi_environ,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """µs per request for *n* sequential in-process WSGI requests (see :func:`time_asgi`)."""

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    environs = [environ_factory() for _ in range(n)]
    t0 = clock()
    for env in environs:
        result = app(env, start_response)
        for _ in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (clock() - t0) / n * 1e6


class Medians(dict[str, float]):
    """Median µs per request per case, keeping every round's sample for paired figures."""

    samples: dict[str, list[float]]


def compare(cases: dict[str, Callable[[], float]], rounds: int = ROUNDS) -> Medians:
    """Run every case once per round, in a shuffled order each round; return medians.

    The order is shuffled (seeded, so reruns match) because on a shared 2-core
    machine whatever runs first or last in a round is not hit by the same noise
    as the rest; :func:`report` pairs each case with the baseline of the same
    round, which cancels the slow drifts of machine speed seen here."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    shuffle = random.Random(20261203).shuffle
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            gc.collect()
            samples[name].append(cases[name]())
    medians = Medians((name, statistics.median(values)) for name, values in samples.items())
    medians.samples = samples
    return medians


def paired(medians: dict[str, float], case: str, baseline: str) -> float:
    """Median over rounds of *case* minus *baseline* in the same round (µs).

    Falls back to the difference of medians when *medians* holds no samples."""
    samples = getattr(medians, "samples", None)
    if samples is None:
        return medians[case] - medians[baseline]
    return statistics.median(a - b for a, b in zip(samples[case], samples[baseline], strict=True))


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def report(
    title: str,
    medians: dict[str, float],
    baseline: str,
    baselines: dict[str, str] | None = None,
) -> None:
    """Print µs per request, the added µs and the ratio to *baseline*.

    With samples from :func:`compare`, "added" and "ratio" are medians of the
    per-round differences and ratios to the same round's baseline, and the
    added column's interquartile range is printed beside it. *baselines* maps
    a case to its own baseline instead (a second family of cases in one run)."""
    samples = getattr(medians, "samples", None)
    print(f"\n{title}")
    print(f"  {'case':<44} {'µs/req':>9} {'added µs':>9} {'ratio':>7}  added IQR")
    for name, value in medians.items():
        own = (baselines or {}).get(name, baseline)
        base = medians[own]
        if samples is None:
            print(f"  {name:<44} {value:>9.2f} {value - base:>+9.2f} {value / base:>6.2f}x")
            continue
        pairs = list(zip(samples[name], samples[own], strict=True))
        added = [a - b for a, b in pairs]
        ratio = statistics.median(a / b for a, b in pairs)
        low, high = _quartiles(added)
        print(
            f"  {name:<44} {value:>9.2f} {statistics.median(added):>+9.2f} {ratio:>6.2f}x"
            f"  [{low:+.1f}, {high:+.1f}]"
        )


def verdict(
    label: str,
    added: float,
    target: float,
    anchors: list[tuple[str, float, float]] | tuple[()] = (),
) -> None:
    """Print *added* µs against an issue's *target*, as measured here and scaled.

    The issues' targets are µs measured on the machine each was written on.
    Machines of the same kind here differ from it, and from one another, by
    up to 2-3x, so a figure alone does not say whether a target is met there.
    Each anchor is ``(what, µs the issue measured, µs this run measured)``
    for the same work (a peer, a passthrough): its ratio estimates that
    machine's speed against this one, and *added* is printed scaled by it.
    The anchors seldom agree (peers' versions and the issue's harness differ
    from ours), so every one is printed, none is chosen."""
    met = "met" if added <= target else "NOT met"
    print(f"  target: {label} adds <= {target:g} µs: {added:+.2f} µs here, {met}")
    for what, there, here in anchors:
        if here <= 0:
            continue
        factor = there / here
        scaled = added * factor
        met = "met" if scaled <= target else "NOT met"
        print(
            f"    scaled by {what} ({there:g} µs on the issue's machine, {here:.1f} here,"
            f" x{factor:.2f}): {scaled:+.2f} µs, {met}"
        )
