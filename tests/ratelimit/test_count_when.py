"""count_when: count a request only once it ended, and only if its status says so.

The login case: failed attempts use up the limit, successful ones do not;
once the failures reach the limit every request is refused, including one
that would have succeeded. Tested on memory and on the real Redis, through
both drivers, for every strategy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from seawall import ConfigurationError, ErrorCapture, RateLimit, limit
from seawall._ratelimit.quota import FIXED, GCRA, MOVING, SLIDING, parse_quotas
from seawall.layers.ratelimit import Hit
from seawall.storage import LimitsBackend, MemoryBackend
from seawall.testing import ManualClock
from tests.apps import client_for, lifespan, wrap
from tests.ratelimit.conftest import serve
from tests.redis_topologies.servers import RedisProcess, free_port

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter", "gcra"]


def settle(layer: RateLimit) -> None:
    """Wait for the counts an ASGI request left to the event loop (Redis only)."""
    deadline = time.monotonic() + 5
    while layer._tasks and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not layer._tasks


def statuses(client: Any, layer: RateLimit, paths: list[str]) -> list[int]:
    out = []
    for path in paths:
        out.append(client.get(path).status_code)
        settle(layer)
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_failures_use_up_the_limit_successes_do_not(interface: str, strategy: str) -> None:
    layer = RateLimit("3/minute", strategy=strategy, count_when="failure", clock=ManualClock())
    with client_for(wrap(interface, [layer])) as client:
        got = statuses(client, layer, ["/"] * 5 + ["/status/401"] * 4 + ["/"])
    assert got == [200] * 5 + [401, 401, 401, 429, 429]
    stats = layer.stats()
    assert stats["counted"] == 3
    assert stats["not_counted"] == 5
    assert stats["rules"]["default"] == {"allowed": 8, "limited": 2, "shadow": 0}


def test_a_refusal_carries_retry_after_and_headers(interface: str) -> None:
    clock = ManualClock()
    layer = RateLimit("2/minute", count_when="failure", clock=clock)
    with client_for(wrap(interface, [layer])) as client:
        first = client.get("/status/403")
        second = client.get("/status/403")
        clock.advance(20)
        refused = client.get("/")
    # The header tells what was left before the request's own outcome.
    assert first.headers["ratelimit"] == '"default";r=2;t=60'
    assert second.headers["ratelimit"] == '"default";r=1;t=60'
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "40"
    assert refused.headers["content-type"] == "application/problem+json"


def test_success_counts_only_successes(interface: str) -> None:
    layer = RateLimit("2/minute", count_when="success", clock=ManualClock())
    with client_for(wrap(interface, [layer])) as client:
        got = statuses(client, layer, ["/status/500", "/status/404", "/", "/status/404", "/", "/"])
    assert got == [500, 404, 200, 404, 200, 429]


def test_a_callable_sees_the_status(interface: str) -> None:
    seen: list[int] = []

    def unauthorized(status: int) -> bool:
        seen.append(status)
        return status == 401

    layer = RateLimit("1/minute", count_when=unauthorized, clock=ManualClock())
    with client_for(wrap(interface, [layer])) as client:
        got = statuses(client, layer, ["/status/403", "/status/403", "/status/401", "/status/403"])
    assert got == [403, 403, 401, 429]
    assert seen == [403, 403, 401]  # the refusal itself is never offered


def test_an_exception_counts_as_500(interface: str) -> None:
    layer = RateLimit("1/minute", count_when="failure", clock=ManualClock())
    with client_for(wrap(interface, [ErrorCapture(), layer])) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/").status_code == 429


def test_a_rule_counts_failures_while_the_default_counts_all(interface: str) -> None:
    layer = RateLimit(
        "2/minute",
        rules={"/status/*": {"limit": "2/minute", "count_when": "failure"}},
        clock=ManualClock(),
    )
    with client_for(wrap(interface, [layer])) as client:
        default = [client.get("/").status_code for _ in range(3)]
        rule = [client.get(p).status_code for p in ["/status/200"] * 3 + ["/status/400"] * 3]
    assert default == [200, 200, 429]
    assert rule == [200, 200, 200, 400, 400, 429]


def test_shadow_lets_through_and_counts_nothing_more(interface: str) -> None:
    layer = RateLimit("1/minute", count_when="failure", shadow=True, clock=ManualClock())
    with client_for(wrap(interface, [layer])) as client:
        got = statuses(client, layer, ["/status/401"] * 3)
    assert got == [401, 401, 401]
    stats = layer.stats()
    assert stats["shadow"] == 2
    assert stats["counted"] == 1  # the would-be refusals were not counted


def test_no_completion_hook_unless_a_rule_counts_later() -> None:
    """Layers without count_when keep a stack with no on_complete hook to call."""
    assert not hasattr(RateLimit("1/minute"), "on_complete")
    assert not hasattr(RateLimit(rules={"/a": {"limit": "1/minute"}}), "on_complete")
    assert callable(
        RateLimit(rules={"/a": {"limit": "1/second", "count_when": "failure"}}).on_complete
    )
    assert RateLimit("1/minute", count_when="failure")._default.fast is None  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["failures", 401, True])
def test_a_bad_count_when_fails_at_startup(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="count_when: expected 'failure', 'success'"):
        RateLimit("1/minute", count_when=value)
    with pytest.raises(ConfigurationError, match=r"rules\['/a'\]: count_when"):
        RateLimit(rules={"/a": {"limit": "1/minute", "count_when": value}})


def _decorated_app(interface: str, limiter: Any) -> Any:
    """A bare app whose one handler is decorated: ?fail answers 401, else 200."""
    from seawall import Seawall

    if interface == "asgi":

        @limiter
        async def handler(query: bytes) -> int:
            return 401 if b"fail" in query else 200

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
                return
            status = await handler(scope["query_string"])
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b"x"})

        return Seawall(app, layers=[])

    @limiter
    def sync_handler(query: str) -> int:
        return 401 if "fail" in query else 200

    def wsgi(environ: Any, start_response: Any) -> Any:
        status = sync_handler(environ.get("QUERY_STRING", ""))
        start_response(f"{status} X", [])
        return [b"x"]

    return Seawall(wsgi, layers=[])


def test_the_handler_decorator_counts_only_failures(interface: str) -> None:
    """No layer in the stack: the driver calls the limiter back after the response."""
    limiter = limit("2/minute", count_when="failure", clock=ManualClock())
    with client_for(_decorated_app(interface, limiter), raise_server_exceptions=False) as client:
        ok = [client.get("/").status_code for _ in range(4)]
        failed = [client.get("/?fail").status_code for _ in range(3)]
        after = client.get("/")
    assert ok == [200] * 4
    assert failed == [401, 401, 429]
    assert after.status_code == 429
    assert after.headers["content-type"] == "application/problem+json"
    assert limiter.stats()["counted"] == 2
    assert limiter.stats()["not_counted"] == 4


def test_a_failing_callback_is_logged_not_raised(
    interface: str, logs: list[dict[str, Any]]
) -> None:
    def broken(status: int) -> bool:
        raise ValueError("oops")

    limiter = limit("2/minute", count_when=broken)
    with client_for(_decorated_app(interface, limiter)) as client:
        assert [client.get("/").status_code for _ in range(3)] == [200] * 3
    failures = [e for e in logs if e["event"] == "seawall.after_response.failed"]
    assert len(failures) == 3
    assert failures[0]["error"] == "ValueError"


def test_from_config_takes_count_when() -> None:
    from seawall import Seawall

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    wall = Seawall.from_config(
        app,
        {
            "rate_limit": {
                "default": "5/minute",
                "count_when": "failure",
                "rules": {"POST /login": {"limit": "3/minute", "count_when": "success"}},
            }
        },
    )
    (layer,) = wall.stack.layers
    assert isinstance(layer, RateLimit)
    assert layer._default is not None
    assert layer._default.count_when is not None
    assert layer._default.count_when(401)


@pytest.mark.parametrize("strategy", [FIXED, MOVING, SLIDING, GCRA])
def test_memory_test_consumes_nothing(strategy: int) -> None:
    backend = MemoryBackend(clock=ManualClock())
    quotas = parse_quotas("2/minute;5/hour", "p")
    keys = ["k:m", "k:h"]
    for _ in range(5):
        allowed, stats = backend.hit(strategy, keys, quotas, 1, False)
        assert allowed
        assert [s[0] for s in stats] == [2, 5]
    assert backend.hit(strategy, keys, quotas, 2)[0]
    allowed, stats = backend.hit(strategy, keys, quotas, 1, False)
    assert not allowed
    assert stats[0][0] == 0
    assert stats[0][2] > 0
    assert stats[1] == (3, stats[1][1], 0.0)


def test_limits_backend_test_consumes_nothing() -> None:
    """The limits-storage backend (memcached and others) on limits' own memory storage."""
    backend = LimitsBackend("memory://")
    quotas = parse_quotas("2/minute", "p")
    for _ in range(3):
        allowed, stats = backend.hit(FIXED, ["lb"], quotas, 1, False)
        assert allowed
        assert stats[0][0] == 2
    assert backend.hit(FIXED, ["lb"], quotas, 2)[0]
    assert not backend.hit(FIXED, ["lb"], quotas, 1, False)[0]


def test_hit_effect_says_whether_it_consumes() -> None:
    backend = MemoryBackend()
    quotas = parse_quotas("1/minute", "p")
    test = Hit(backend, FIXED, ["k"], quotas, 1, consume=False)
    assert test != Hit(backend, FIXED, ["k"], quotas, 1)
    assert "consume=False" in repr(test)
    assert test.run()[0]
    assert test.run()[0]
    assert Hit(backend, FIXED, ["k"], quotas, 1).run()[0]
    assert not test.run()[0]


# -- the real Redis -------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_redis_counts_failures_only(
    interface: str, redis_url: str, key_prefix: str, strategy: str
) -> None:
    layer = RateLimit(
        "3/minute",
        strategy=strategy,
        storage=redis_url,
        key_prefix=key_prefix,
        storage_timeout=1.0,
        count_when="failure",
    )
    with client_for(wrap(interface, [layer])) as client:
        got = statuses(client, layer, ["/"] * 5 + ["/status/401"] * 4 + ["/"])
    assert got == [200] * 5 + [401, 401, 401, 429, 429]
    assert layer.stats()["storage_errors"] == 0


def test_redis_the_test_writes_nothing_and_the_count_writes_every_limit(
    interface: str, redis_url: str, key_prefix: str
) -> None:
    """The test on arrival leaves Redis untouched; the count after a failure writes it."""
    layer = RateLimit(
        "2/minute;10/hour",
        storage=redis_url,
        key_prefix=key_prefix,
        storage_timeout=1.0,
        count_when="failure",
    )
    client_redis = redis.Redis.from_url(redis_url)
    with client_for(wrap(interface, [layer])) as client:
        ok = client.get("/")
        settle(layer)
        assert client_redis.keys(f"{key_prefix}:*") == []
        failed = client.get("/status/500")
        settle(layer)
    assert ok.headers["ratelimit"].startswith('"default-60s";r=2;')
    assert failed.headers["ratelimit"].startswith('"default-60s";r=2;')
    values = sorted(int(client_redis.get(k) or 0) for k in client_redis.keys(f"{key_prefix}:*"))
    assert values == [1, 1]
    client_redis.close()


def test_a_dead_storage_never_fails_the_count(interface: str) -> None:
    layer = RateLimit(
        "1/minute",
        storage=f"redis://127.0.0.1:{free_port()}/0",
        count_when="success",
        on_storage_error="allow",
        storage_probe=60,
        clock=ManualClock(),
    )
    with client_for(wrap(interface, [layer])) as client:
        got = statuses(client, layer, ["/status/200"] * 3)
    assert got == [200, 200, 200]
    stats = layer.stats()
    assert stats["storage_state"] == "down"
    # One failed call, then the guard spares both the tests and the counts.
    assert stats["storage_errors"] == 1


def test_a_handler_limit_bans_too(interface: str) -> None:
    """count_when and ban together on one decorated handler: failures, refusals, then a ban."""
    limiter = limit(
        "2/minute",
        count_when="failure",
        ban={"after": "2/minute", "duration": 300},
        clock=ManualClock(),
    )
    with client_for(_decorated_app(interface, limiter)) as client:
        statuses = [client.get("/?fail").status_code for _ in range(4)]
        banned = client.get("/")
    assert statuses == [401, 401, 429, 429]
    assert banned.status_code == 429
    assert banned.headers["retry-after"] == "300"
    assert (limiter.stats()["bans"], limiter.stats()["banned"]) == (1, 1)


SERVED = """
from seawall import RateLimit, Seawall

def layers():
    return [RateLimit("2/minute", count_when="failure")]

async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    status = 401 if b"fail" in scope["query_string"] else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"x"})

def wsgi(environ, start_response):
    status = "401 No" if "fail" in environ.get("QUERY_STRING", "") else "200 OK"
    start_response(status, [("Content-Length", "1")])
    return [b"x"]

asgi_app = Seawall(asgi, layers=layers())
wsgi_app = Seawall(wsgi, layers=layers())
"""


@pytest.mark.server
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_counts_under_a_real_server(server: str, tmp_path: Path) -> None:
    """uvicorn (the event loop) and gunicorn (close() in a sync worker) count after responding."""
    import httpx

    if server == "uvicorn":
        argv = ["uvicorn", "app:asgi_app", "--port", "{port}", "--log-level", "warning"]
    else:
        # One worker: the in-memory count lives in one process.
        argv = ["gunicorn", "app:wsgi_app", "-b", "127.0.0.1:{port}", "-w", "1"]
    with (
        serve(tmp_path, SERVED, argv) as address,
        httpx.Client(base_url=f"http://{address}") as client,
    ):
        ok = [client.get("/").status_code for _ in range(3)]
        failed = []
        for _ in range(3):
            failed.append(client.get("/?fail").status_code)
            time.sleep(0.05)  # the count lands after the response
    assert ok == [200, 200, 200]
    assert failed == [401, 401, 429]


def test_counts_spare_a_storage_the_guard_knows_is_down() -> None:
    """A count due while the storage is down is dropped, not tried: one timeout per probe."""
    import asyncio

    from seawall import RequestView
    from seawall._core.layer import Outcome

    layer = RateLimit(
        "5/minute",
        storage=f"redis://127.0.0.1:{free_port()}/0",
        count_when="failure",
        storage_probe=60,
        clock=ManualClock(),
    )
    view = RequestView(method="GET", path="/", peer="10.0.0.9", headers=[])
    assert layer.check(view) is None  # the one failed call: the guard opens
    assert layer.stats()["storage_errors"] == 1
    quotas = parse_quotas("5/minute", "default")
    failed = Outcome(401, None, 0.01, 0.01, "/")
    for _ in range(3):  # sync (WSGI threads) and async (the event loop)
        view.state[layer] = (layer._backend, ["k"], quotas, 1, lambda status: True)
        layer._count_outcome(view, failed)  # no loop here: the sync count

        async def on_a_loop() -> None:
            view.state[layer] = (layer._backend, ["k"], quotas, 1, lambda status: True)
            layer._count_outcome(view, failed)  # a task on this loop
            await asyncio.gather(*layer._tasks)

        asyncio.run(on_a_loop())
    stats = layer.stats()
    assert stats["storage_errors"] == 1
    assert stats["counted"] == 6


def test_redis_round_trips(interface: str, private_redis: RedisProcess) -> None:
    """Two limits: a request that does not count is one round trip, one that counts two."""
    from seawall._ratelimit.lua import SCRIPTS

    layer = RateLimit(
        "50/minute;1000/hour",
        storage=private_redis.url,
        storage_timeout=1.0,
        count_when="failure",
    )
    store = redis.Redis.from_url(private_redis.url)
    for source in SCRIPTS.values():
        store.script_load(source)
    with client_for(wrap(interface, [layer])) as client:
        client.get("/status/500")  # connects (both clients, on ASGI the count's too)
        settle(layer)

        def reads(path: str, n: int) -> int:
            before = int(store.info("stats")["total_reads_processed"])
            for _ in range(n):
                client.get(path)
                settle(layer)
            return int(store.info("stats")["total_reads_processed"]) - before - 1

        assert (reads("/", 4), reads("/status/401", 4)) == (4, 8)
    store.close()


def test_asgi_shutdown_waits_for_the_counts_left_running(redis_url: str, key_prefix: str) -> None:
    """Lifespan shutdown: the counts of the last requests reach Redis before the app stops."""
    import asyncio

    from seawall import Seawall
    from tests.apps import asgi_app

    layer = RateLimit("5/minute", storage=redis_url, key_prefix=key_prefix, count_when="failure")
    wall = Seawall(asgi_app, layers=[layer], interface="asgi")
    check = redis.Redis.from_url(redis_url)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async def sink(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                seen["pending"] = len(layer._tasks)
                seen["keys"] = list(check.scan_iter(match=f"{key_prefix}*"))

        async def no_body() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "path": "/status/401",
            "raw_path": b"/status/401",
            "query_string": b"",
            "headers": [],
            "client": ("10.0.0.7", 5000),
            "server": ("127.0.0.1", 80),
            "scheme": "http",
            "root_path": "",
        }
        await wall(scope, no_body, sink)
        # The count is a task the response did not wait for: still to run.
        seen["left"] = len(layer._tasks)
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def lifespan_receive() -> Any:
            return next(messages)

        await wall({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, sink)

    asyncio.run(main())
    assert seen["left"] == 1
    assert seen["pending"] == 0
    assert seen["keys"], "the count was not in Redis when the app stopped"
    assert layer.stats()["counted"] == 1
    assert layer.stats()["storage_errors"] == 0
