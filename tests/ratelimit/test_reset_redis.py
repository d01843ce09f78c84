"""seawall.testing.reset refills Redis-backed buckets, and only the layer's own.

A test suite that resets between tests must find every bucket full again,
whatever the storage; and a reset must never touch the keys of another
layer, another limiter or another app sharing the Redis.
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from seawall import RateLimit
from seawall.fastapi import SeawallMiddleware, limit
from seawall.layers import Timing
from seawall.testing import reset
from tests.apps import client_for, wrap
from tests.redis_topologies.servers import RedisProcess


def test_reset_refills_a_redis_dependency_limit(private_redis: RedisProcess) -> None:
    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=[Timing()])
    url = private_redis.url

    @app.get("/a", dependencies=[Depends(limit("2/minute", storage=url, storage_timeout=1.0))])
    async def a() -> Any:
        return {}

    @app.get("/b", dependencies=[Depends(limit("2/minute", storage=url, storage_timeout=1.0))])
    async def b() -> Any:
        return {}

    client = TestClient(app)
    assert [client.get("/a").status_code for _ in range(3)] == [200, 200, 429]
    assert [client.get("/b").status_code for _ in range(3)] == [200, 200, 429]
    reset(app)
    assert [client.get("/a").status_code for _ in range(3)] == [200, 200, 429]
    assert [client.get("/b").status_code for _ in range(3)] == [200, 200, 429]


def test_reset_deletes_only_the_layers_own_keys(
    interface: str, private_redis: RedisProcess
) -> None:
    url = private_redis.url
    mine = RateLimit(
        "2/minute",
        storage=url,
        key_prefix="app*1",  # glob characters in the prefix are literal
        rules={"/r": "1/minute"},
        ban={"after": "1/minute", "duration": 60},
        storage_timeout=1.0,
    )
    # Same Redis: another app's prefix, another strategy, another amount.
    other_app = RateLimit("2/minute", storage=url, key_prefix="app-1", storage_timeout=1.0)
    other_strategy = RateLimit(
        "2/minute", storage=url, key_prefix="app*1", strategy="gcra", storage_timeout=1.0
    )
    other_amount = RateLimit("3/minute", storage=url, key_prefix="app*1", storage_timeout=1.0)
    others = [other_app, other_strategy, other_amount]
    admin = redis.Redis.from_url(url)
    for layer in others:
        with client_for(wrap(interface, [layer])) as other:
            assert other.get("/").status_code == 200
    theirs = set(admin.keys("*"))
    assert len(theirs) == 3
    with client_for(wrap(interface, [mine])) as client:
        assert client.get("/r").status_code == 200
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
        assert client.get("/r").status_code == 429  # banned, after one refusal
        assert len(set(admin.keys("*")) - theirs) == 3  # two buckets and a ban
        mine.reset()
        assert {k for k in admin.keys("*")} == theirs
        assert client.get("/r").status_code == 200  # the ban is gone too
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
    admin.close()
