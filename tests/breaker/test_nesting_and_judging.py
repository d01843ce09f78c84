"""Breakers judge what they are given, once per request.

Each test failed before its fix: a handler guard sharing the layer's
breaker (``breaker_name=``) took a second permit, so each request counted
twice and, in half-open, the handler was refused the one probe and the
breaker never closed again; a 4xx HTTP error raised in a guarded handler
counted as a failure; a half-open probe whose response the client left in
the middle counted as a success and closed the breaker; 404 scanner paths
used up ``max_routes`` and real routes then shared one breaker.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import seawall
from seawall import CircuitBreaker, Seawall
from seawall.resilience import breakers
from seawall.testing import ManualClock


def environ(path: str) -> dict[str, Any]:
    """A GET of *path*, as a WSGI server gives it."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "203.0.113.7",
    }


def test_a_handler_guard_inside_the_layer_shares_its_permit() -> None:
    name = f"nest-{uuid.uuid4().hex[:8]}"
    clock = ManualClock()
    healthy = {"ok": False}
    layer = CircuitBreaker(breaker_name=name, fail_max=1, wait_in_open=5, clock=clock)

    @seawall.breaker(name)
    async def handler(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", status_code=200 if healthy["ok"] else 500)

    client = TestClient(Seawall(Starlette(routes=[Route("/x", handler)]), layers=[layer]))
    assert client.get("/x").status_code == 500
    assert breakers[name].current_state == "open"
    healthy["ok"] = True
    clock.advance(6)
    # The probe is the layer's and the handler's at once: it closes the breaker.
    assert client.get("/x").status_code == 200
    assert breakers[name].current_state == "closed"
    before = breakers[name].successes
    for _ in range(3):
        assert client.get("/x").status_code == 200
    assert breakers[name].successes - before == 3  # once per request, not twice


def test_a_4xx_http_error_in_a_guarded_handler_is_no_failure() -> None:
    from fastapi import FastAPI, HTTPException
    from flask import Flask, abort

    from seawall.flask import Seawall as FlaskSeawall

    fastapi_app = FastAPI()
    fastapi_name = f"http4xx-{uuid.uuid4().hex[:8]}"

    @fastapi_app.get("/missing")
    @seawall.breaker(fastapi_name, fail_max=2)
    async def missing() -> None:
        raise HTTPException(404)

    client = TestClient(fastapi_app)
    assert [client.get("/missing").status_code for _ in range(4)] == [404] * 4
    assert breakers[fastapi_name].current_state == "closed"

    flask_app = Flask(__name__)
    guard = FlaskSeawall(flask_app, layers=[])
    flask_name = f"abort-{uuid.uuid4().hex[:8]}"

    @flask_app.get("/gone")
    @guard.breaker(flask_name, fail_max=2)
    def gone() -> Any:
        abort(404)

    flask_client = flask_app.test_client()
    assert [flask_client.get("/gone", buffered=True).status_code for _ in range(4)] == [404] * 4
    assert breakers[flask_name].current_state == "closed"


def test_an_abandoned_streaming_probe_is_not_counted() -> None:
    clock = ManualClock()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/fail":
            start_response("500 Internal Server Error", [])
            return [b""]
        start_response("200 OK", [])
        return iter([b"a", b"b", b"c"])

    layer = CircuitBreaker(fail_max=1, wait_in_open=5, clock=clock)
    wall = Seawall(app, layers=[layer])

    failing = wall(environ("/fail"), lambda *a: None)
    list(failing)
    failing.close()  # type: ignore[attr-defined]
    clock.advance(6)
    probe = wall(environ("/stream"), lambda *a: None)
    next(iter(probe))
    probe.close()  # type: ignore[attr-defined]  # the client left after one chunk
    found = layer.breaker()
    assert found.current_state == "half-open"
    assert found.successes == 0
    # A probe that runs to its end does close it.
    finished = wall(environ("/stream"), lambda *a: None)
    assert b"".join(finished) == b"abc"
    finished.close()  # type: ignore[attr-defined]
    assert found.current_state == "closed"


def test_unknown_paths_never_take_a_routes_own_breaker() -> None:
    from tests.breaker.apps import wsgi_routed

    layer = CircuitBreaker(per="route", fail_max=2, max_routes=5)
    wall = Seawall(wsgi_routed, layers=[layer])

    def get(path: str) -> int:
        seen: list[str] = []
        result = wall(environ(path), lambda status, headers, exc=None: seen.append(status))
        b"".join(result)
        result.close()  # type: ignore[attr-defined]
        return int(seen[0][:3])

    # Teach both templates, then a scanner's flood of unknown paths.
    assert get("/items/1") == 200
    assert get("/users/1") == 200
    for i in range(50):
        get(f"/scan-{i}")
    # /items/{id} fails until its breaker opens; /users/{id} has its own.
    assert [get("/items/500") for _ in range(3)] == [500, 500, 503]
    assert get("/users/2") == 200


def test_the_layer_takes_every_documented_setting() -> None:
    layer = CircuitBreaker(max_wait_in_half_open=7, wait_in_open=3)
    assert layer.breaker().config.max_wait_in_half_open == 7


@pytest.mark.redis
def test_an_open_shared_breaker_reports_its_retry_after(redis_url: str, key_prefix: str) -> None:
    clock = ManualClock()
    layer = CircuitBreaker(
        fail_max=1, wait_in_open=20, storage=redis_url, key_prefix=key_prefix, clock=clock
    )
    found = layer.breaker()
    permit = found.acquire()
    found.record(permit, True, 0.01)
    assert found.current_state == "open"
    assert found.stats()["retry_after"] == pytest.approx(20, abs=1)
    clock.advance(15)
    assert found.stats()["retry_after"] == pytest.approx(5, abs=1)
