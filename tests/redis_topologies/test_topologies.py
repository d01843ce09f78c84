"""RateLimit and ConcurrencyLimit over Redis Cluster and Sentinel, sync and async paths.

The servers are started by this directory's conftest from the installed
redis-server binary (session scope).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from seawall import ConcurrencyLimit, Overloaded, RequestView, Seawall
from seawall._core.layer import Outcome
from seawall._run import arun_flow, run_flow
from tests.apps import asgi_app, wsgi_app


@pytest.fixture
def prefix() -> str:
    return f"seawall-topo-{uuid.uuid4().hex[:10]}"


class TestHarness:
    """The topologies themselves work through limits (independent of our layers)."""

    def test_limits_sync_moving_window_is_exact(self, topology_uri: str, prefix: str) -> None:
        storage = storage_from_string(topology_uri, key_prefix=prefix)
        limiter = MovingWindowRateLimiter(storage)
        item = parse("5/minute")
        assert [limiter.hit(item, "k") for _ in range(7)] == [True] * 5 + [False] * 2

    def test_limits_async_moving_window_is_exact(self, topology_uri: str, prefix: str) -> None:
        async def main() -> list[bool]:
            # limits' one registry also builds the async storages ("async+" schemes).
            storage = storage_from_string(
                "async+" + topology_uri, key_prefix=prefix, implementation="redispy"
            )
            limiter = AsyncMovingWindow(storage)  # type: ignore[arg-type]
            item = parse("5/minute")
            return [await limiter.hit(item, "k") for _ in range(7)]

        assert asyncio.run(main()) == [True] * 5 + [False] * 2

    def test_cluster_spreads_keys_over_three_masters(self, redis_cluster: Any) -> None:
        from tests.redis_topologies.servers import cli

        info = cli(redis_cluster.nodes[0].port, "cluster", "info")
        assert "cluster_known_nodes:3" in info
        assert "cluster_slots_assigned:16384" in info


@pytest.fixture
def client_for_interface(interface: str) -> Iterator[Any]:
    """``make(wall)``: a client for *wall* on this driver; ASGI keeps one event loop."""
    opened: list[httpx.Client] = []

    def make(wall: Any) -> httpx.Client:
        if interface == "asgi":
            from starlette.testclient import TestClient

            client: httpx.Client = TestClient(wall)
            client.__enter__()
        else:
            client = httpx.Client(
                transport=httpx.WSGITransport(app=wall), base_url="http://testserver"
            )
        opened.append(client)
        return client

    yield make
    for client in opened:
        if interface == "asgi":
            client.__exit__(None, None, None)
        else:
            client.close()


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
def test_ratelimit_over_topology(
    interface: str, topology_uri: str, prefix: str, strategy: str, client_for_interface: Any
) -> None:
    """RateLimit on Cluster/Sentinel: 5 admitted then 429 (exactly 5 with moving-window)."""
    from seawall import RateLimit

    # Bounded but generous timeout, and deny: a slow call on a loaded CI box
    # must show up as a failure, never as an extra admitted request.
    layer = RateLimit(
        "5/minute",
        strategy=strategy,
        storage=topology_uri,
        key_prefix=prefix,
        storage_timeout=1.0,
        on_storage_error="deny",
    )
    app = asgi_app if interface == "asgi" else wsgi_app
    client = client_for_interface(Seawall(app, layers=[layer]))
    codes = [client.get("/").status_code for _ in range(8)]
    admitted = codes.count(200)
    if strategy == "moving-window":
        assert admitted == 5
    else:
        assert 1 <= admitted <= 5
    assert set(codes) == {200, 429}
    assert codes[-1] == 429
    refused = client.get("/")
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("quota-exceeded")


def _view() -> RequestView:
    return RequestView(method="GET", path="/", peer="10.1.1.1", headers=[])


def _done(layer: ConcurrencyLimit, request: RequestView) -> None:
    layer.on_complete(request, Outcome(200, None, 0.0, 0.0, "/"))


class TestConcurrencyLimit:
    def test_sync_slots_on_topology(self, topology_uri: str, prefix: str) -> None:
        layer = ConcurrencyLimit(
            2,
            per_key=2,
            storage=topology_uri,
            key_prefix=prefix,
            on_storage_error="deny",
            storage_timeout=0.5,
        )
        held = [_view(), _view()]
        for r in held:
            run_flow(layer.on_request(r))
        with pytest.raises(Overloaded):
            run_flow(layer.on_request(_view()))
        for r in held:
            _done(layer, r)
        assert layer.flush()
        run_flow(layer.on_request(_view()))
        assert layer.stats()["storage_errors"] == 0
        layer.close()

    def test_async_slots_on_topology(self, topology_uri: str, prefix: str) -> None:
        async def main() -> None:
            layer = ConcurrencyLimit(
                2,
                per_key=2,
                storage=topology_uri,
                key_prefix=prefix,
                on_storage_error="deny",
                storage_timeout=0.5,
            )
            held = [_view(), _view()]
            for r in held:
                await arun_flow(layer.on_request(r))
            with pytest.raises(Overloaded):
                await arun_flow(layer.on_request(_view()))
            for r in held:
                _done(layer, r)
            await layer.aclose()  # the releases were tasks on this loop
            b = _view()
            await arun_flow(layer.on_request(b))
            _done(layer, b)
            await layer.aclose()
            assert layer.stats()["storage_errors"] == 0

        asyncio.run(main())


def test_ban_over_topology(
    interface: str, topology_uri: str, prefix: str, client_for_interface: Any
) -> None:
    """Ban and strike keys share the client's Cluster slot: no CROSSSLOT, one ban for all."""
    from seawall import RateLimit

    layer = RateLimit(
        "2/minute",
        storage=topology_uri,
        key_prefix=prefix,
        storage_timeout=1.0,
        on_storage_error="deny",
        ban={"after": "2/minute", "duration": 600},
    )
    app = asgi_app if interface == "asgi" else wsgi_app
    client = client_for_interface(Seawall(app, layers=[layer]))
    responses = [client.get("/") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 429, 429, 429]
    assert 590 <= int(responses[4].headers["retry-after"]) <= 600
    stats = layer.stats()
    assert (stats["bans"], stats["banned"], stats["storage_errors"]) == (1, 1, 0)
