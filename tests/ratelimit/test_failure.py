"""Storage failure: allow / deny / local, one log line per transition, bounded cost, recovery."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from seawall import RateLimit
from seawall.testing import ManualClock
from tests.apps import client_for, wrap
from tests.redis_topologies.servers import RedisProcess, free_port


def down_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_allow_lets_everything_through_and_logs_once(
    interface: str, logs: list[dict[str, Any]]
) -> None:
    """allow: no 5xx, no limit, no headers; one storage_down line, one storage call per probe."""
    clock = ManualClock()
    layer = RateLimit("1/minute", storage=down_url(), on_storage_error="allow", clock=clock)
    with client_for(wrap(interface, [layer])) as client:
        started = time.perf_counter()
        responses = [client.get("/") for _ in range(30)]
        elapsed = time.perf_counter() - started
    assert [r.status_code for r in responses] == [200] * 30
    assert "ratelimit" not in responses[0].headers
    assert len(events(logs, "seawall.ratelimit.storage_down")) == 1
    stats = layer.stats()
    assert stats["storage_state"] == "down"
    assert stats["storage_errors"] == 1  # the breaker spared the other 29 requests
    assert stats["storage_fallbacks"] == 30
    assert elapsed < 10  # bounded: no request waited on a dead storage after the first


def test_deny_answers_503(interface: str) -> None:
    """deny: a 503 temporary-reduced-capacity problem with Retry-After."""
    layer = RateLimit(
        "100/minute",
        storage=down_url(),
        on_storage_error="deny",
        storage_probe=5,
        clock=ManualClock(),
    )
    with client_for(wrap(interface, [layer])) as client:
        response = client.get("/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert json.loads(response.content)["type"].endswith("temporary-reduced-capacity")


def test_local_limits_each_worker_to_its_share(interface: str) -> None:
    """local: an in-process limit of limit / workers, with headers."""
    layer = RateLimit(
        "6/minute", storage=down_url(), on_storage_error="local", workers=3, clock=ManualClock()
    )
    with client_for(wrap(interface, [layer])) as client:
        responses = [client.get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["ratelimit"] == '"default";r=1;t=60'


def test_probe_once_per_period(interface: str, logs: list[dict[str, Any]]) -> None:
    """While down, the storage is tried once per probe period, and no more log lines."""
    clock = ManualClock()
    layer = RateLimit("5/minute", storage=down_url(), storage_probe=2.0, clock=clock)
    with client_for(wrap(interface, [layer])) as client:
        for _ in range(3):
            for _ in range(5):
                assert client.get("/").status_code == 200
            clock.advance(2.0)
    assert layer.stats()["storage_errors"] == 3
    assert len(events(logs, "seawall.ratelimit.storage_down")) == 1
    assert events(logs, "seawall.ratelimit.storage_up") == []


def test_recovers_when_redis_returns(
    interface: str, unstarted_redis: RedisProcess, logs: list[dict[str, Any]]
) -> None:
    """Back to shared limits on the first probe after Redis returns; one storage_up line."""
    clock = ManualClock()
    layer = RateLimit(
        "2/minute", storage=unstarted_redis.url, storage_probe=1.0, storage_timeout=1.0, clock=clock
    )
    with client_for(wrap(interface, [layer])) as client:
        assert client.get("/").status_code == 200  # outage: allowed
        unstarted_redis.start()
        assert client.get("/").status_code == 200  # still within the probe period
        clock.advance(1.0)
        statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # shared limit again
    assert len(events(logs, "seawall.ratelimit.storage_down")) == 1
    assert len(events(logs, "seawall.ratelimit.storage_up")) == 1
    assert layer.stats()["storage_state"] == "up"


@pytest.mark.parametrize("policy", ["allow", "local"])
def test_timeout_bounds_a_stalled_storage(interface: str, policy: str) -> None:
    """A storage that accepts but never answers costs one timeout, then nothing."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections, never replies: a paused Redis
    port = listener.getsockname()[1]
    try:
        layer = RateLimit(
            "100/minute",
            storage=f"redis://127.0.0.1:{port}/0",
            on_storage_error=policy,
            storage_timeout=0.05,
        )  # type: ignore[arg-type]
        with client_for(wrap(interface, [layer])) as client:
            started = time.perf_counter()
            first = client.get("/")
            first_took = time.perf_counter() - started
            started = time.perf_counter()
            rest = [client.get("/") for _ in range(10)]
            rest_took = time.perf_counter() - started
    finally:
        listener.close()
    assert first.status_code == 200
    assert all(r.status_code == 200 for r in rest)
    assert first_took < 2.0
    assert rest_took < first_took + 2.0
    assert layer.stats()["storage_errors"] == 1
