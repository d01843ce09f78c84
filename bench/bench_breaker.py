"""
Circuit breaker, Timeout and @protect costs, in one run.

    python bench/bench_breaker.py [--n 40000] [--requests 2000] [--rounds 5]
                                  [--redis redis://127.0.0.1:6379/0 | --redis '']

1. Per guarded call: a direct call, pybreaker, and seawall's Breaker
   (closed, the consecutive and the failure-rate forms), the open-state
   fast-fail of both, and @seawall.protect with no failures.
2. Per request: Seawall on a bare ASGI and WSGI app, without and with
   CircuitBreaker (and Timeout), closed and open.
3. Shared state (when Redis answers): a call and a request through a breaker
   whose state lives in Redis. These are wall-clock times (the cost is the
   round trips, which CPU time would not show).
4. A summary: each figure against its target, a direct call and pybreaker.

Targets (issue 4): closed-state overhead <= 3 µs per call and <= pybreaker's
own cost.

Times in 1 and 2 are CPU time of the benchmark thread (``time.thread_time``),
so other processes competing for the cores do not inflate them; the rounds
are interleaved and the medians printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import contextlib

import _harness
import pybreaker
import structlog
from _harness import compare, report

from seawall import CircuitBreaker, Seawall, Timeout
from seawall._breaker import Breaker
from seawall.resilience import protect


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def wall_per_call(fn: Any, n: int) -> float:
    """Wall-clock µs per call (for calls that wait on Redis)."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def wall_asgi(app: Any, layer: CircuitBreaker, n: int) -> float:
    """Wall-clock µs per request, ASGI, background writes included."""

    async def drain() -> None:
        store = layer.breaker().shared
        if store is not None:
            await store.drain()  # the outcomes' writes are part of the cost

    return _harness.time_asgi(app, n, after=drain)


def wall_wsgi(app: Any, n: int) -> float:
    """Wall-clock µs per request, WSGI."""
    return _harness.time_wsgi(app, n)


def redis_answers(url: str) -> bool:
    """Whether a Redis server answers at *url* (the shared section is skipped if not)."""
    if not url:
        return False
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def per_call(fn: Any, n: int) -> float:
    t0 = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - t0) / n * 1e6


def per_call_refused(fn: Any, exc: type[BaseException], n: int) -> float:
    t0 = time.thread_time()
    for _ in range(n):
        with contextlib.suppress(exc):
            fn()
    return (time.thread_time() - t0) / n * 1e6


def per_acall(fn: Any, n: int) -> float:
    async def loop() -> float:
        t0 = time.thread_time()
        for _ in range(n):
            await fn()
        return (time.thread_time() - t0) / n * 1e6

    return asyncio.run(loop())


def time_asgi(app: Any, n: int) -> float:
    """CPU µs per request for *n* sequential in-process ASGI requests."""
    return _harness.time_asgi(app, n, clock=time.thread_time)


def time_wsgi(app: Any, n: int) -> float:
    """CPU µs per request for *n* sequential in-process WSGI requests."""
    return _harness.time_wsgi(app, n, clock=time.thread_time)


async def asgi_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_ok(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [])
    return [b"ok"]


class NoOp:
    """A layer with the same hooks as CircuitBreaker that does nothing.

    Having an ``on_complete`` hook makes the driver build an ``Outcome`` per
    request; this baseline separates that driver cost from the breaker's own.
    """

    name = "noop"
    order = 700

    def on_request(self, request: Any) -> None:
        return None

    def on_complete(self, request: Any, outcome: Any) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip")
    args = parser.parse_args()
    n, rounds = args.n, args.rounds
    # The manual open() calls below log a transition; keep the tables readable.
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())

    # -- 1. per guarded call, closed -------------------------------------------------
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    pyb_wrapped = pyb(work)
    ours_rate = Breaker("rate", failure_rate_threshold=0.5, minimum_number_of_calls=20)
    ours_max = Breaker("max", fail_max=5)
    ours_time = Breaker(
        "time", sliding_window_type="time", sliding_window_size=60, slow_call_rate_threshold=0.5
    )
    ours_wrapped = ours_rate(work)
    p_plain = protect(work)
    p_full = protect(retry=3, breaker=ours_max, bulkhead=64, fallback=None)(work)
    cases = {
        "direct call": lambda: per_call(work, n),
        "pybreaker.call": lambda: per_call(lambda: pyb.call(work), n),
        "pybreaker decorator": lambda: per_call(pyb_wrapped, n),
        "seawall Breaker.call (failure rate, count)": lambda: per_call(
            lambda: ours_rate.call(work), n
        ),
        "seawall Breaker.call (fail_max)": lambda: per_call(lambda: ours_max.call(work), n),
        "seawall Breaker.call (time window + slow)": lambda: per_call(
            lambda: ours_time.call(work), n
        ),
        "seawall Breaker decorator": lambda: per_call(ours_wrapped, n),
        "@protect (nothing configured)": lambda: per_call(p_plain, n),
        "@protect(retry=3, breaker, bulkhead, fallback)": lambda: per_call(p_full, n),
    }
    closed = compare(cases, rounds)
    report(f"Per guarded call, closed, {n} calls x {rounds} rounds, medians", closed, "direct call")

    # -- 1b. open-state fast-fail -------------------------------------------------------
    pyb_open = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    pyb_open.open()
    ours_open = Breaker("open", fail_max=1, wait_in_open=3600)
    ours_open.open()
    fail_cases = {
        "direct call": lambda: per_call(work, n),
        "pybreaker open: raises CircuitBreakerError": lambda: per_call_refused(
            lambda: pyb_open.call(work), pybreaker.CircuitBreakerError, n
        ),
        "seawall open: raises CircuitOpen": lambda: per_call_refused(
            lambda: ours_open.call(work), pybreaker.CircuitBreakerError, n
        ),
        "seawall open: acquire() refusal, no raise": lambda: per_call(ours_open.acquire, n),
    }
    opened = compare(fail_cases, rounds)
    report(f"Open-state fast-fail, {n} calls x {rounds} rounds, medians", opened, "direct call")

    # -- 1c. async ---------------------------------------------------------------------------
    ours_async = Breaker("async", failure_rate_threshold=0.5)
    p_async = protect(retry=3, breaker=ours_async, fallback=None)(awork)
    p_async_timeout = protect(retry=3, breaker=ours_async, timeout=5.0, fallback=None)(awork)
    async_cases = {
        "direct await": lambda: per_acall(awork, n // 2),
        "seawall Breaker.call_async": lambda: per_acall(
            lambda: ours_async.call_async(awork), n // 2
        ),
        "@protect(retry=3, breaker, fallback) async": lambda: per_acall(p_async, n // 2),
        "@protect(..., timeout=5) async": lambda: per_acall(p_async_timeout, n // 2),
    }
    report(
        f"Async, {n // 2} awaits x {rounds} rounds, medians (pybreaker has no asyncio path)",
        compare(async_cases, rounds),
        "direct await",
    )

    # -- 2. per request -------------------------------------------------------------------
    r = args.requests
    open_asgi = CircuitBreaker(wait_in_open=3600)
    open_asgi.open()
    asgi_cases = {
        "Seawall, no layers": Seawall(asgi_ok, layers=[], interface="asgi"),
        "+ no-op layer (same hooks)": Seawall(asgi_ok, layers=[NoOp()], interface="asgi"),
        "+ CircuitBreaker (global, closed)": Seawall(
            asgi_ok, layers=[CircuitBreaker()], interface="asgi"
        ),
        "+ CircuitBreaker (per=route, closed)": Seawall(
            asgi_ok, layers=[CircuitBreaker(per="route")], interface="asgi"
        ),
        "+ CircuitBreaker + Timeout(10)": Seawall(
            asgi_ok, layers=[CircuitBreaker(), Timeout(10)], interface="asgi"
        ),
        "+ CircuitBreaker (open: 503)": Seawall(asgi_ok, layers=[open_asgi], interface="asgi"),
    }
    asgi = compare({k: (lambda a=a: time_asgi(a, r)) for k, a in asgi_cases.items()}, rounds)
    report(
        f"Per request, ASGI, {r} requests x {rounds} rounds, medians", asgi, "Seawall, no layers"
    )
    open_wsgi = CircuitBreaker(wait_in_open=3600)
    open_wsgi.open()
    wsgi_cases = {
        "Seawall, no layers": Seawall(wsgi_ok, layers=[], interface="wsgi"),
        "+ no-op layer (same hooks)": Seawall(wsgi_ok, layers=[NoOp()], interface="wsgi"),
        "+ CircuitBreaker (global, closed)": Seawall(
            wsgi_ok, layers=[CircuitBreaker()], interface="wsgi"
        ),
        "+ CircuitBreaker (per=route, closed)": Seawall(
            wsgi_ok, layers=[CircuitBreaker(per="route")], interface="wsgi"
        ),
        "+ CircuitBreaker + Timeout(10)": Seawall(
            wsgi_ok, layers=[CircuitBreaker(), Timeout(10)], interface="wsgi"
        ),
        "+ CircuitBreaker (open: 503)": Seawall(wsgi_ok, layers=[open_wsgi], interface="wsgi"),
    }
    wsgi = compare({k: (lambda a=a: time_wsgi(a, r)) for k, a in wsgi_cases.items()}, rounds)
    report(
        f"Per request, WSGI, {r} requests x {rounds} rounds, medians", wsgi, "Seawall, no layers"
    )

    # -- 3. shared state in Redis (wall clock) ----------------------------------------
    if redis_answers(args.redis):
        shared(args.redis, max(200, r // 4), rounds)
    else:
        print(f"\nShared state: skipped (no Redis answers at {args.redis!r})")

    summary(closed, opened, asgi, wsgi)


def shared(url: str, m: int, rounds: int) -> None:
    """Breaker state in Redis: one round trip to take a permit, one to give it back."""
    prefix = f"bench-{time.time_ns()}"
    ours = Breaker("bench", storage=url, key_prefix=prefix, storage_timeout=1.0)
    options: dict[str, Any] = {"storage": url, "key_prefix": prefix, "storage_timeout": 1.0}
    shared_layer, local_layer = CircuitBreaker(**options), CircuitBreaker()
    asgi_shared = Seawall(asgi_ok, layers=[shared_layer], interface="asgi")
    wsgi_shared = Seawall(wsgi_ok, layers=[CircuitBreaker(**options)], interface="wsgi")
    asgi_local = Seawall(asgi_ok, layers=[local_layer], interface="asgi")
    wsgi_local = Seawall(wsgi_ok, layers=[CircuitBreaker()], interface="wsgi")
    cases = {
        "direct call": lambda: wall_per_call(work, m),
        "Breaker.call, state in Redis": lambda: wall_per_call(lambda: ours.call(work), m),
        "ASGI request, CircuitBreaker in memory": lambda: wall_asgi(asgi_local, local_layer, m),
        "ASGI request, CircuitBreaker in Redis": lambda: wall_asgi(asgi_shared, shared_layer, m),
        "WSGI request, CircuitBreaker in memory": lambda: wall_wsgi(wsgi_local, m),
        "WSGI request, CircuitBreaker in Redis": lambda: wall_wsgi(wsgi_shared, m),
    }
    report(
        f"Shared state in Redis ({url}), wall clock, {m} calls x {rounds} rounds, medians",
        compare(cases, rounds),
        "direct call",
    )
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def summary(
    closed: dict[str, float],
    opened: dict[str, float],
    asgi: dict[str, float],
    wsgi: dict[str, float],
) -> None:
    """Each figure against its target, a direct call and pybreaker."""
    direct = closed["direct call"]
    pyb = closed["pybreaker.call"]
    pyb_added = pyb - direct
    print("\nSummary (issue 4 targets: closed-state overhead <= 3 µs and <= pybreaker's own cost)")
    print(f"  {'case':<46} {'added µs':>9} {'x direct':>9} {'x pybreaker':>12}  target")
    rows = [
        ("Breaker.call (failure rate, count)", "seawall Breaker.call (failure rate, count)"),
        ("Breaker.call (fail_max)", "seawall Breaker.call (fail_max)"),
        ("Breaker.call (time window + slow)", "seawall Breaker.call (time window + slow)"),
        ("Breaker decorator", "seawall Breaker decorator"),
        ("@protect (nothing configured)", "@protect (nothing configured)"),
        ("@protect(retry=3, breaker, bulkhead, fallback)",
         "@protect(retry=3, breaker, bulkhead, fallback)"),
    ]  # fmt: skip
    for label, key in rows:
        added = closed[key] - direct
        ok = added <= 3.0 and added <= pyb_added
        target = "met" if ok else "NOT met"
        if key.startswith("@protect"):
            target = "(no target)"
        print(
            f"  {label:<46} {added:>+9.2f} {closed[key] / direct:>8.1f}x "
            f"{added / pyb_added:>11.2f}x  {target}"
        )
    print(f"  {'pybreaker.call (reference)':<46} {pyb_added:>+9.2f} {pyb / direct:>8.1f}x "
          f"{1.0:>11.2f}x")  # fmt: skip
    open_ours = opened["seawall open: raises CircuitOpen"] - opened["direct call"]
    open_pyb = opened["pybreaker open: raises CircuitBreakerError"] - opened["direct call"]
    refusal = opened["seawall open: acquire() refusal, no raise"] - opened["direct call"]
    print(
        f"  {'open fast-fail, raising':<46} {open_ours:>+9.2f} "
        f"{opened['seawall open: raises CircuitOpen'] / opened['direct call']:>8.1f}x "
        f"{open_ours / open_pyb:>11.2f}x  (no target)"
    )
    print(f"  {'open refusal without the exception (layer path)':<46} {refusal:>+9.2f}")
    for name, table in (("ASGI", asgi), ("WSGI", wsgi)):
        added = table["+ CircuitBreaker (global, closed)"] - table["Seawall, no layers"]
        # The breaker's own share: over a no-op layer with the same hooks (the
        # driver builds an Outcome for any layer with on_complete).
        own = table["+ CircuitBreaker (global, closed)"] - table["+ no-op layer (same hooks)"]
        print(
            f"  {'per request, ' + name + ', CircuitBreaker closed':<46} {added:>+9.2f} "
            f"{'':>9} {'':>12}  {'met' if added <= 3.0 else 'NOT met'} (<= 3)"
        )
        print(
            f"  {'  of which the breaker itself (vs no-op layer)':<46} {own:>+9.2f} "
            f"{'':>9} {own / pyb_added:>11.2f}x  "
            f"{'met' if own <= pyb_added else 'NOT met'} (<= pybreaker)"
        )


if __name__ == "__main__":
    main()
