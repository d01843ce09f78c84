"""RateLimit on the real Redis: both drivers, every strategy, one round trip per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from seawall import RateLimit
from tests.apps import client_for, wrap
from tests.ratelimit.conftest import redis_wall
from tests.redis_topologies.servers import RedisProcess

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter", "gcra"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_limit_headers_and_retry_after(
    interface: str, redis_url: str, key_prefix: str, strategy: str
) -> None:
    """Exactly the limit is admitted, then 429 with a Retry-After no earlier than t."""
    wall = redis_wall(interface, "3/minute;10/hour", redis_url, key_prefix, strategy=strategy)
    with client_for(wall) as client:
        responses = [client.get("/") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert responses[0].headers["ratelimit-policy"] == (
        '"default-60s";q=3;w=60, "default-3600s";q=10;w=3600'
    )
    minute, hour = responses[2].headers["ratelimit"].split(", ")
    assert minute.startswith('"default-60s";r=0;t=')
    assert hour.startswith('"default-3600s";r=7;t=')
    refused = responses[3]
    t = int(refused.headers["ratelimit"].split(", ")[0].rsplit("t=", 1)[1])
    retry_after = int(refused.headers["retry-after"])
    assert 0 < t <= retry_after <= 60
    # The refused requests used nothing of the hour.
    assert refused.headers["ratelimit"].split(", ")[1].startswith('"default-3600s";r=7;')
    keys = redis.Redis.from_url(redis_url).keys(f"{key_prefix}:*")
    assert keys  # namespaced by key_prefix
    assert all(b"{" in k for k in keys)  # hash tag on the client


def test_two_apps_share_one_bucket_through_redis(redis_url: str, key_prefix: str) -> None:
    """An ASGI and a WSGI app with the same storage and prefix count together."""

    def layers() -> list[RateLimit]:
        return [
            RateLimit(
                "4/minute",
                storage=redis_url,
                key_prefix=key_prefix,
                key=lambda r: "same-user",
                storage_timeout=1.0,
            )
        ]

    with client_for(wrap("asgi", layers())) as a, client_for(wrap("wsgi", layers())) as w:
        statuses = [c.get("/").status_code for c in (a, w, a, w, a, w)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def _commands(client: redis.Redis) -> tuple[int, int]:
    reads = int(client.info("stats")["total_reads_processed"])
    evalsha = int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    return reads, evalsha


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_round_trip_per_request(
    interface: str, private_redis: RedisProcess, strategy: str
) -> None:
    """Two limits and their header numbers cost one Redis round trip (INFO on a private server)."""
    wall = wrap(
        interface,
        [
            RateLimit(
                "50/minute;1000/hour",
                strategy=strategy,
                storage=private_redis.url,
                storage_timeout=1.0,
            )
        ],
    )
    counter = redis.Redis.from_url(private_redis.url)
    with client_for(wall) as client:
        client.get("/")  # connects and loads the script
        reads0, evalsha0 = _commands(counter)
        responses = [client.get("/") for _ in range(20)]
        reads1, evalsha1 = _commands(counter)
    counter.close()
    assert all(r.headers["ratelimit"].count("r=") == 2 for r in responses)
    assert evalsha1 - evalsha0 == 20
    # Read events: 20 requests + the INFO calls between the two snapshots.
    assert reads1 - reads0 == 20 + 2


def test_cost_and_rules_on_redis(
    make_client: Callable[..., httpx.Client], redis_url: str, key_prefix: str
) -> None:
    """Rules and cost work the same on Redis as in memory."""
    client = make_client(
        [
            RateLimit(
                "10/minute",
                storage=redis_url,
                key_prefix=key_prefix,
                rules={"/status/*": {"limit": "10/minute", "cost": 5}},
                storage_timeout=1.0,
            )
        ]
    )
    assert [client.get("/status/200").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/").headers["ratelimit"] == '"default";r=9;t=60'


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_large_cost_and_amount_on_redis(
    interface: str, redis_url: str, key_prefix: str, strategy: str
) -> None:
    """Costs and amounts past the small-int table reach the scripts as the same numbers."""
    wall = redis_wall(interface, "250/minute", redis_url, key_prefix, strategy=strategy, cost=100)
    with client_for(wall) as client:
        responses = [client.get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[1].headers["ratelimit"].startswith('"default";r=50;')


def test_stats_count_on_redis(redis_url: str, key_prefix: str, interface: str) -> None:
    """Per-rule counts and storage state are reported for Redis too."""
    layer = RateLimit("1/minute", storage=redis_url, key_prefix=key_prefix, storage_timeout=1.0)
    with client_for(wrap(interface, [layer])) as client:
        client.get("/")
        client.get("/")
    stats: dict[str, Any] = layer.stats()
    assert stats["rules"]["default"] == {"allowed": 1, "limited": 1, "shadow": 0}
    assert stats["storage_state"] == "up"
    assert stats["keys"] is None


def test_scripts_come_back_after_a_script_flush(
    interface: str, private_redis: RedisProcess
) -> None:
    """Calls go straight to EVALSHA; a server that forgot the script (SCRIPT FLUSH,
    a failover to a fresh replica) gets it loaded again, and counting goes on.

    Two limits, so the rule takes the script (one fixed window needs none)."""
    import hashlib

    from seawall._ratelimit.lua import SCRIPTS
    from seawall._ratelimit.quota import FIXED

    sha = hashlib.sha1(SCRIPTS[FIXED].encode()).hexdigest()
    wall = wrap(
        interface,
        [RateLimit("3/minute;100/hour", storage=private_redis.url, storage_timeout=1.0)],
    )
    server = redis.Redis.from_url(private_redis.url)
    with client_for(wall) as client:
        first = client.get("/")
        assert server.script_exists(sha) == [True]
        server.script_flush()
        assert server.script_exists(sha) == [False]
        after = [client.get("/") for _ in range(3)]
    assert first.status_code == 200
    assert [r.status_code for r in after] == [200, 200, 429]
    assert server.script_exists(sha) == [True]
    stats = wall.stats()["ratelimit"]
    assert stats["storage_errors"] == 0
    assert stats["storage_fallbacks"] == 0


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name[len("cmdstat_") :]: int(v["calls"]) for name, v in stats.items()}


def test_one_fixed_window_costs_three_plain_commands_in_one_round_trip(
    interface: str, private_redis: RedisProcess
) -> None:
    """The default rule (one fixed window, cost 1) sends SET NX, INCR and PTTL in one
    write: one read event per request on the server and no script."""
    wall = wrap(interface, [RateLimit("5/minute", storage=private_redis.url, storage_timeout=1.0)])
    counter = redis.Redis.from_url(private_redis.url)
    with client_for(wall) as client:
        client.get("/")  # connects
        reads0 = int(counter.info("stats")["total_reads_processed"])
        calls0 = _calls(counter)
        responses = [client.get("/") for _ in range(6)]
        reads1 = int(counter.info("stats")["total_reads_processed"])
        calls1 = _calls(counter)
    counter.close()
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429, 429]
    remaining = [r.headers["ratelimit"].split(";")[1] for r in responses]
    assert remaining == ["r=3", "r=2", "r=1", "r=0", "r=0", "r=0"]
    assert 0 < int(responses[-1].headers["retry-after"]) <= 60
    # Read events: 6 requests + the INFO calls between the two snapshots.
    assert reads1 - reads0 == 6 + 2
    assert {k: calls1.get(k, 0) - calls0.get(k, 0) for k in ("set", "incr", "pttl")} == {
        "set": 6,
        "incr": 6,
        "pttl": 6,
    }
    assert calls1.get("evalsha", 0) == calls0.get("evalsha", 0)


def test_a_counter_without_a_ttl_gets_one_back(
    interface: str, redis_url: str, key_prefix: str
) -> None:
    """A counter left with no expiry (the window ended between SET and INCR, or
    anything else that wrote the key) is given the window again, so a client is
    never locked out for good."""
    wall = redis_wall(interface, "5/minute", redis_url, key_prefix, key=lambda r: "ttl-lost")
    admin = redis.Redis.from_url(redis_url)
    with client_for(wall) as client:
        client.get("/")
        (key,) = admin.keys(f"{key_prefix}:*")
        admin.persist(key)
        assert admin.pttl(key) == -1
        response = client.get("/")
    assert response.headers["ratelimit"].startswith('"default";r=3;')
    assert 55_000 < admin.pttl(key) <= 60_000


def test_an_error_reply_in_the_middle_leaves_the_connection_in_step(
    redis_url: str, key_prefix: str
) -> None:
    """INCR on a key that holds a hash answers WRONGTYPE between two good replies:
    the call fails as a storage error, every reply is read, and the kept
    connection answers the next call correctly."""
    from seawall._ratelimit.quota import FIXED, Quota
    from seawall.exceptions import StorageError
    from seawall.storage import RedisBackend

    quota = [Quota(10, 60, "default")]
    admin = redis.Redis.from_url(redis_url)
    bad, good = f"{key_prefix}:wrongtype", f"{key_prefix}:good"
    admin.hset(bad, "f", "v")
    backend = RedisBackend(redis_url, timeout=1.0)
    with pytest.raises(StorageError) as caught:
        backend.hit(FIXED, [bad], quota, 1)
    assert "ResponseError" in str(caught.value)
    assert backend._sync_fast is not None
    assert len(backend._sync_fast.free) == 1  # an error reply keeps the connection
    assert backend.hit(FIXED, [good], quota, 1) == (True, [(9, pytest.approx(60, abs=1), 0.0)])
    assert backend.hit(FIXED, [good], quota, 1)[1][0][0] == 8
    backend.close()


def test_an_error_reply_in_the_middle_on_the_event_loop(redis_url: str, key_prefix: str) -> None:
    """The same on the asyncio path."""
    import asyncio

    from seawall._ratelimit.quota import FIXED, Quota
    from seawall.exceptions import StorageError
    from seawall.storage import RedisBackend

    quota = [Quota(10, 60, "default")]
    admin = redis.Redis.from_url(redis_url)
    bad, good = f"{key_prefix}:wrongtype-a", f"{key_prefix}:good-a"
    admin.hset(bad, "f", "v")
    backend = RedisBackend(redis_url, timeout=1.0)

    async def main() -> list[int]:
        with pytest.raises(StorageError):
            await backend.ahit(FIXED, [bad], quota, 1)
        assert backend._asides.get().fast is not None
        assert len(backend._asides.get().fast.free) == 1
        return [(await backend.ahit(FIXED, [good], quota, 1))[1][0][0] for _ in range(2)]

    assert asyncio.run(main()) == [9, 8]
