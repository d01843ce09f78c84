"""seawall.limit on sync and async handlers, and the check()/acheck() core adapters use."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

import seawall
from seawall import ConfigurationError, RateLimited, RequestView, Seawall
from seawall.layers.ratelimit import Limiter
from seawall.testing import ManualClock
from tests.apps import client_for


def make_apps(clock: ManualClock, storage: str = "memory://", prefix: str = "seawall") -> Any:
    # A generous storage timeout: CI machines stall for more than the 20 ms default.
    @seawall.limit("2/minute", clock=clock, storage=storage, key_prefix=prefix, storage_timeout=1.0)
    async def async_handler() -> bytes:
        return b"async ok"

    @seawall.limit("2/minute", clock=clock, storage=storage, key_prefix=prefix, storage_timeout=1.0)
    def sync_handler() -> bytes:
        return b"sync ok"

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await async_handler()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        body = sync_handler()
        start_response("200 OK", [])
        return [body]

    return asgi, wsgi


def run_app(interface: str, storage: str = "memory://", prefix: str = "seawall") -> list[Any]:
    asgi, wsgi = make_apps(ManualClock(), storage, prefix)
    wall = Seawall(asgi if interface == "asgi" else wsgi, layers=[])
    with client_for(wall) as client:
        return [client.get("/") for _ in range(3)]


def test_decorator_limits_the_handler(interface: str) -> None:
    """The handler runs `limit` times, then the driver renders RateLimited as a 429."""
    responses = run_app(interface)
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].content in (b"async ok", b"sync ok")
    assert responses[0].headers["ratelimit"] == '"handler";r=1;t=60'
    body = json.loads(responses[2].content)
    assert body["type"].endswith("quota-exceeded")
    assert responses[2].headers["retry-after"] == "60"


@pytest.mark.redis
def test_decorator_on_redis(interface: str, redis_url: str, key_prefix: str) -> None:
    """Async handlers use the async Redis client, sync ones the sync client."""
    responses = run_app(interface, redis_url, key_prefix)
    assert [r.status_code for r in responses] == [200, 200, 429]


def test_outside_a_request_fails_loudly() -> None:
    """Calling a limited handler outside a wrapped app is a configuration error."""

    @seawall.limit("1/minute")
    def handler() -> None:
        return None

    with pytest.raises(ConfigurationError, match="no current request"):
        handler()


def test_check_and_acheck() -> None:
    """check()/acheck() answer None or the RateLimited to raise, and add headers."""
    limiter = seawall.limit("1/minute", clock=ManualClock())
    assert isinstance(limiter, Limiter)
    request = RequestView(method="GET", path="/", peer="9.9.9.9")
    assert limiter.check(request) is None
    assert dict(request.response_headers)["RateLimit"] == '"handler";r=0;t=60'
    rejection = asyncio.run(limiter.acheck(RequestView(method="GET", path="/", peer="9.9.9.9")))
    assert isinstance(rejection, RateLimited)
    assert rejection.retry_after == 60
    assert limiter.check(RequestView(method="GET", path="/", peer="8.8.8.8")) is None
    assert limiter.stats()["limited"] == 1


def test_each_handler_has_its_own_bucket() -> None:
    """Two decorated handlers never share a bucket unless they share a limiter."""
    clock = ManualClock()
    shared = seawall.limit("1/minute", clock=clock)

    @shared
    def a() -> str:
        return "a"

    @shared
    def b() -> str:
        return "b"

    @seawall.limit("1/minute", clock=clock)
    def c() -> str:
        return "c"

    wall = Seawall(
        lambda environ, start_response: _call(environ, start_response, a, b, c), layers=[]
    )
    with httpx.Client(transport=httpx.WSGITransport(app=wall), base_url="http://t") as client:
        statuses = [client.get(p).status_code for p in ("/a", "/b", "/c")]
    assert statuses == [200, 429, 200]


def _call(environ: dict[str, Any], start_response: Any, *handlers: Any) -> Any:
    handler = {"/a": handlers[0], "/b": handlers[1], "/c": handlers[2]}[environ["PATH_INFO"]]
    body = handler().encode()
    start_response("200 OK", [])
    return [body]


def test_rules_are_refused() -> None:
    """rules belong to the layer, not to a handler limit."""
    with pytest.raises(ConfigurationError):
        seawall.limit("1/minute", rules={"/x": "1/second"})
