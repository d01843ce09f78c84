"""Async views under WSGI keep their Redis limits and breakers exact, from many threads.

Flask's async views, and Django's async views under its WSGI handler, run each
request on an event loop of its own. Handler limits and breakers on Redis
then use the sync client (``seawall._log.serving_wsgi``): an asyncio client
per request's loop would connect on every request, and under load its
connects time out into the storage-failure policy (requests let through
uncounted, a breaker on local state).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
import structlog
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path

from tests.conftest import in_threads

pytestmark = pytest.mark.redis

THREADS = 8
EACH = 20
LIMIT = 40


def _in_threads(work: Callable[[], Any]) -> list[Any]:
    return in_threads(work, THREADS, EACH)


def _connections(redis_url: str) -> int:
    """Connections the Redis server has accepted so far (this test's admin one included)."""
    return int(redis.Redis.from_url(redis_url).info("stats")["total_connections_received"])


def _storage_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if "storage_down" in e["event"] or "storage_up" in e["event"]]


urlpatterns: list[Any] = []


def test_django_async_view_under_wsgi_is_limited_exactly(redis_url: str, key_prefix: str) -> None:
    from seawall.django import limit

    @limit(f"{LIMIT}/minute", storage=redis_url, key_prefix=key_prefix, key=lambda r: "k")
    async def view(request: Any) -> HttpResponse:
        await asyncio.sleep(0)
        return HttpResponse(b"ok")

    global urlpatterns
    urlpatterns = [path("a", view)]
    before = _connections(redis_url)
    with (
        override_settings(ROOT_URLCONF=__name__, SEAWALL={"timing": True}),
        structlog.testing.capture_logs() as logs,
    ):
        statuses = _in_threads(lambda: Client().get("/a").status_code)
    assert Counter(statuses) == {200: LIMIT, 429: THREADS * EACH - LIMIT}
    assert not _storage_events(logs), _storage_events(logs)[:3]
    # The sync pool's connections, about one per thread: not one per request
    # (160 here). Slack for anything else on the server meanwhile.
    assert _connections(redis_url) - before <= 3 * THREADS


def test_flask_async_view_breaker_on_redis_opens_from_many_threads(
    redis_url: str, key_prefix: str
) -> None:
    from flask import Flask

    from seawall.flask import Seawall

    app = Flask(__name__)
    guard = Seawall(app, layers=[])
    name = f"{key_prefix}-wsgi-async"

    @app.get("/b")
    @guard.breaker(name, fail_max=5, wait_in_open=60, storage=redis_url, key_prefix=key_prefix)
    async def view() -> Any:
        await asyncio.sleep(0)
        return "down", 500

    before = _connections(redis_url)
    with structlog.testing.capture_logs() as logs:
        statuses = _in_threads(lambda: app.test_client().get("/b", buffered=True).status_code)
    # The sync pool's connections, about one per thread: not one per request
    # (160 here). Slack for anything else on the server meanwhile.
    assert _connections(redis_url) - before <= 3 * THREADS
    counts = Counter(statuses)
    assert set(counts) == {500, 503}, counts
    # Opened on Redis, not on one thread's local state: at most one failure
    # per thread past the fifth (those already let through when it opened).
    assert 5 <= counts[500] <= 5 + THREADS, counts
    assert not _storage_events(logs), _storage_events(logs)[:3]
    state_keys = list(redis.Redis.from_url(redis_url).scan_iter(f"{{{key_prefix}:br:{name}}}*"))
    assert state_keys, "the breaker's state is not in Redis"
