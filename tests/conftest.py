"""Shared fixtures: both drivers, the real Redis server, captured logs."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, settings

import seawall._workers
from tests.apps import client_for, wrap
from tests.redis_topologies.servers import RedisProcess, free_port, require_binary

# The check for several workers arms a timer that logs from its own thread:
# in this process it would land in whichever test captures logs two seconds
# after the first in-memory layer. tests/ratelimit/test_workers.py runs it in
# processes of its own.
seawall._workers._armed.update({"RateLimit", "ConcurrencyLimit"})

# Generated-input tests judge behaviour, never speed: on a loaded 2-core CI
# machine an example may take longer than Hypothesis's 200 ms deadline, or
# generating one may trip its too_slow health check, and a test that fails
# for that cannot be replayed (seen once in a full run, 2026-12-07). Each
# test's own @settings still sets its number of examples.
settings.register_profile("seawall", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("seawall")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def redis_available() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def require_redis() -> None:
    """Skip (or fail, under SEAWALL_REQUIRE_REDIS) when Redis is not there."""
    if redis_available():
        return
    if os.environ.get("SEAWALL_REQUIRE_REDIS"):
        pytest.fail(f"SEAWALL_REQUIRE_REDIS is set but no Redis answers at {REDIS_URL}")
    pytest.skip(f"no Redis server at {REDIS_URL} (set SEAWALL_REQUIRE_REDIS to make this fail)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("redis") is not None:
            item.add_marker(pytest.mark.usefixtures("_redis_required"))


@pytest.fixture
def _redis_required() -> None:
    require_redis()


@pytest.fixture
def redis_url() -> str:
    """The real Redis server's URL (skips or fails when absent, see require_redis)."""
    require_redis()
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"seawall-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture
def unstarted_redis() -> Iterator[RedisProcess]:
    """A redis-server of the test's own on a spare port, not started yet.

    The test may start, kill, pause, stall and restart it (an outage first,
    say). Never the shared server on 6379: other tests and processes use it.
    """
    require_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seawall-private-"))
    server = RedisProcess(free_port(), workdir)
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def private_redis(unstarted_redis: RedisProcess) -> RedisProcess:
    """:func:`unstarted_redis`, started."""
    return unstarted_redis.start()


def delete_keys(url: str, prefix: str) -> None:
    """Delete every key of the Redis at *url* whose name holds *prefix*."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def in_threads(work: Callable[[], Any], threads: int, each: int) -> list[Any]:
    """Run *work* *each* times in each of *threads* threads started together; every result."""
    import threading

    results: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        for _ in range(each):
            result = work()
            with lock:
                results.append(result)

    started = [threading.Thread(target=run) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return results


@pytest.fixture(params=["asgi", "wsgi"])
def interface(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per driver."""
    return str(request.param)


@pytest.fixture
def make_client(interface: str) -> Callable[..., httpx.Client]:
    """``make_client(layers, **seawall_kwargs)``: the twin app for this driver, wrapped."""
    clients: list[httpx.Client] = []

    def factory(layers: list[Any], *, raise_server_exceptions: bool = True, **kw: Any) -> Any:
        client = client_for(
            wrap(interface, layers, **kw), raise_server_exceptions=raise_server_exceptions
        )
        clients.append(client)
        return client

    yield factory  # type: ignore[misc]
    for client in clients:
        client.close()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event logged during the test, as dicts (structlog.testing)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture(autouse=True)
def _no_hidden_layer_failures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test during which a layer raised, unless it is marked ``layer_failures``.

    The engine passes over a layer that raises (``on_layer_error="continue"``,
    fail open) and logs ``seawall.layer.failed``: a test that only looks at
    answers would not see the crash. Tests that capture logs themselves
    (the ``logs`` fixture) check their own events and are not seen here.
    """
    if request.node.get_closest_marker("layer_failures"):
        yield
        return
    with structlog.testing.capture_logs() as captured:
        yield
    failed = [event for event in captured if event["event"] == "seawall.layer.failed"]
    assert not failed, failed[:3]
