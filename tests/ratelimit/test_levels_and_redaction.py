"""What the storage-backed layers log, at which level, and what their reprs show.

- A refusal (429, 503 of a full ConcurrencyLimit) is one request's event:
  ``debug``, so a client over its limit cannot flood the logs.
- A storage transition is one line each way, at the same level for every
  layer: ``storage_down`` at ``warning``, ``storage_up`` at ``info``.
- No repr shows a Redis password (``seawall check`` and ``describe()`` print them).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from seawall import CircuitBreaker, ConcurrencyLimit, RateLimit, Seawall
from seawall.testing import ManualClock
from tests.apps import client_for, wrap
from tests.concurrency.test_redis import admit, finish, view
from tests.redis_topologies.servers import RedisProcess


def levels(logs: list[dict[str, Any]], suffix: str) -> list[str]:
    return [e["log_level"] for e in logs if e["event"].endswith(suffix)]


def test_a_429_is_logged_at_debug(
    interface: str, private_redis: RedisProcess, logs: list[dict[str, Any]]
) -> None:
    layer = RateLimit("1/minute", storage=private_redis.url, storage_timeout=1.0)
    with client_for(wrap(interface, [layer])) as client:
        statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200, 429, 429]
    assert levels(logs, "ratelimit.rejected") == ["debug", "debug"]


def test_ratelimit_transitions_are_warning_then_info(
    unstarted_redis: RedisProcess, logs: list[dict[str, Any]]
) -> None:
    clock = ManualClock()
    layer = RateLimit(
        "5/minute", storage=unstarted_redis.url, storage_timeout=1.0, storage_probe=1, clock=clock
    )
    with client_for(wrap("wsgi", [layer])) as client:
        assert client.get("/").status_code == 200  # nothing listens: down, allowed
        unstarted_redis.start()
        clock.advance(1.0)
        assert client.get("/").status_code == 200  # the probe: up again
    assert levels(logs, "ratelimit.storage_down") == ["warning"]
    assert levels(logs, "ratelimit.storage_up") == ["info"]


def test_concurrency_levels(unstarted_redis: RedisProcess, logs: list[dict[str, Any]]) -> None:
    layer = ConcurrencyLimit(
        1, storage=unstarted_redis.url, storage_timeout=1.0, storage_probe=0.05
    )
    assert admit(layer, view())  # nothing listens: down, allowed
    unstarted_redis.start()
    time.sleep(0.06)
    held = view()
    assert admit(layer, held)  # the probe takes the slot
    assert not admit(layer, view())  # full: refused
    finish(layer, held)
    layer.close()
    assert levels(logs, "concurrency.storage_down") == ["warning"]
    assert levels(logs, "concurrency.storage_up") == ["info"]
    assert levels(logs, "concurrency.rejected") == ["debug"]


@pytest.mark.parametrize(
    "uri", ["redis://:s3cret-pw@127.0.0.1:6379/0", "redis://alice:s3cret-pw@127.0.0.1:6379/0"]
)
def test_no_repr_shows_the_redis_password(uri: str) -> None:
    layers = [
        RateLimit("5/minute", storage=uri),
        ConcurrencyLimit(5, storage=uri),
        CircuitBreaker(storage=uri),
    ]
    wall = Seawall(lambda environ, start_response: [], layers=layers, interface="wsgi")
    shown = [text for _, _, text in wall.describe()]
    assert len(shown) == 3
    for text in shown:
        assert "s3cret" not in text, text
        assert "***@127.0.0.1:6379" in text, text
    for layer in layers:
        close = getattr(layer, "close", None)
        if close is not None:
            close()
