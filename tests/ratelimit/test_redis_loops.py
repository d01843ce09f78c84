"""Redis limits stay exact when every request runs on an event loop of its own.

An async view under a WSGI server (Flask's async views, Django's under its
WSGI handler) runs on a new event loop per request, in whichever thread
serves it. The async Redis clients are bound to a loop, so a backend must
keep one per loop: one slot shared by all would be rebuilt on every request
and overwritten by the next thread mid-call, and the failures that follow
(wrong-loop and timeout errors) go to the storage-failure policy, ``allow``
by default: requests through uncounted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from seawall._ratelimit.quota import FIXED, GCRA, MOVING, SLIDING, Quota
from seawall.storage import storage_for
from tests.conftest import in_threads

pytestmark = pytest.mark.redis

THREADS = 8
EACH = 30
LIMIT = 50


def _in_threads(work: Callable[[], Any]) -> list[Any]:
    return in_threads(work, THREADS, EACH)


@pytest.mark.parametrize(
    "strategy", [FIXED, MOVING, SLIDING, GCRA], ids=["fixed", "moving", "sliding", "gcra"]
)
def test_a_backend_counts_exactly_with_a_new_loop_per_call(
    redis_url: str, key_prefix: str, strategy: int
) -> None:
    # A generous timeout: each call connects on its own loop; this test is about
    # counting, and a loaded CI machine must not turn a slow connect into a failure.
    backend = storage_for(redis_url, timeout=5.0, strategy=strategy)
    # A day: the sliding-window counter is aligned to the clock, and a run that
    # straddled a window boundary would rightly let a few more through.
    quota = Quota(LIMIT, 86_400.0, "default")
    key = f"{key_prefix}:loops:{strategy}"
    errors: list[BaseException] = []

    def one() -> bool:
        try:
            result = asyncio.run(backend.ahit(strategy, [key], [quota], 1))
        except Exception as exc:  # recorded: the assertion below names it
            errors.append(exc)
            return False
        return result[0]

    allowed = _in_threads(one)
    assert not errors, errors[:3]
    assert sum(allowed) == LIMIT
    # Clients of loops that closed are let go: at most the loops alive at the last call.
    assert len(backend._asides) <= THREADS  # type: ignore[union-attr]


def test_one_value_per_loop_and_closed_loops_forgotten() -> None:
    from seawall._wire import PerLoop

    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    cache: PerLoop[object] = PerLoop(make)

    async def twice() -> bool:
        return cache.get() is cache.get()

    assert all(asyncio.run(twice()) for _ in range(20))
    assert len(made) == 20  # one per loop, the same within a loop
    assert len(cache) == 1  # the 19 closed loops were forgotten

    async def pop() -> tuple[object, object | None]:
        value = cache.get()
        return value, cache.pop()

    value, popped = asyncio.run(pop())
    assert popped is value


def test_flask_async_views_are_limited_exactly_from_many_threads(
    redis_url: str, key_prefix: str
) -> None:
    from flask import Flask

    from seawall.flask import Seawall

    app = Flask(__name__)
    guard = Seawall(app, layers=[])

    @app.get("/a")
    # A generous timeout, as above: this test is about counting; under the
    # default 20 ms a loaded machine times a call out, and "allow" then lets
    # that request through uncounted (51 admitted, seen once).
    @guard.limit(
        f"{LIMIT}/minute",
        storage=redis_url,
        key_prefix=key_prefix,
        key=lambda r: "k",
        storage_timeout=5.0,
    )
    async def view() -> str:
        await asyncio.sleep(0)
        return "ok"

    with structlog.testing.capture_logs() as logs:
        statuses = _in_threads(lambda: app.test_client().get("/a", buffered=True).status_code)
    assert Counter(statuses) == {200: LIMIT, 429: THREADS * EACH - LIMIT}
    assert not [e for e in logs if e["event"].endswith("storage_down")], logs[:3]
