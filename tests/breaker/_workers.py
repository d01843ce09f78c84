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
