"""Every layer seawall has, from settings, through each framework's own test client.

One settings dict turns on all eleven layers (Timing, ErrorCapture, Health,
Metrics, Dashboard, LoadShedding, ConcurrencyLimit, RateLimit, Validation,
CircuitBreaker, Timeout); one sequence of requests shows each at work on
Flask, Django (sync and async handler) and FastAPI, with sync and async
views where the framework has both.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import Request

import seawall
from seawall.handlers import exempt

TOKEN = "test-dashboard-token-0123456789"
RATE = 12

SETTINGS: dict[str, Any] = {
    "timing": {"response_time_header": True},
    "error_capture": True,
    "health": {"resources": False},
    "metrics": True,
    "dashboard": {"token": TOKEN},
    "load_shedding": {"cpu_threshold": None, "memory_threshold": None},
    "concurrency": {"max_in_flight": 8},
    "rate_limit": {"limit": f"{RATE}/minute"},
    "validation": {"max_body": 1024},
    "circuit_breaker": {"per": "route", "fail_max": 2, "wait_in_open": 60},
    "timeout": {"seconds": 0.3},
}

Send = Callable[..., tuple[int, dict[str, str], bytes]]
SLOW = 0.8


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in dict(headers).items()}


# -- the same app on each framework ----------------------------------------------------


def flask_app() -> tuple[Send, Callable[[], dict[str, Any]]]:
    from flask import Flask, request

    from seawall.flask import Seawall

    app = Flask(__name__)
    app.config["SEAWALL"] = SETTINGS
    Seawall(app)

    @app.route("/items/<int:id>", methods=["GET", "POST"])
    def item(id: int) -> Any:
        return {"id": id, "read": len(request.get_data())}

    @app.get("/aitems/<int:id>")
    async def aitem(id: int) -> Any:
        return {"id": id}

    @app.get("/flaky/<int:n>")
    def flaky(n: int) -> Any:
        return {"down": n}, 500

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("secret hunter2")

    @app.get("/slow")
    def slow() -> Any:
        time.sleep(SLOW)
        return {"late": True}

    @app.get("/free")
    @exempt
    def free() -> Any:
        return {"free": True}

    client = app.test_client()

    def send(
        path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if body is None:
            r = client.get(path, headers=headers or {}, buffered=True)
        else:
            r = client.post(path, headers=headers or {}, data=body, buffered=True)
        return r.status_code, _lower(r.headers), r.data

    return send, lambda: seawall.stats(app)


def django_app(mode: str) -> tuple[Send, Callable[[], dict[str, Any]]]:
    from django.test import AsyncClient, Client, override_settings

    from seawall.django import get_wall

    with override_settings(SEAWALL=SETTINGS, ROOT_URLCONF="tests.contrib.test_every_layer"):
        client: Any = (Client if mode == "sync" else AsyncClient)(raise_request_exception=False)
        client.handler.load_middleware(is_async=mode == "async")
        # One client, one middleware, one wall for the whole sequence, as in a server.
        wall = get_wall()
    ctype = "application/octet-stream"

    def send(
        path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        with override_settings(ROOT_URLCONF="tests.contrib.test_every_layer"):
            if body is None:
                call = client.get(path, headers=headers or {})
            else:
                call = client.post(path, body, content_type=ctype, headers=headers or {})
            r = call if mode == "sync" else asyncio.run(call)
        content = b"".join(r.streaming_content) if r.streaming else r.content
        return r.status_code, _lower(r.headers), content

    return send, wall.stats


def fastapi_app() -> tuple[Send, Callable[[], dict[str, Any]]]:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from seawall.fastapi import SeawallMiddleware
    from seawall.stats import find_seawall

    app = FastAPI()
    app.add_middleware(SeawallMiddleware, config=SETTINGS)

    @app.api_route("/items/{id}", methods=["GET", "POST"])
    async def item(id: int, request: Request) -> Any:
        return {"id": id, "read": len(await request.body())}

    @app.get("/aitems/{id}")
    def aitem(id: int) -> Any:  # the sync twin: FastAPI runs it in a thread
        return {"id": id}

    @app.get("/flaky/{n}")
    async def flaky(n: int) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"down": n}, status_code=500)

    @app.get("/boom")
    async def boom() -> Any:
        raise RuntimeError("secret hunter2")

    @app.get("/slow")
    async def slow() -> Any:
        await asyncio.sleep(SLOW)
        return {"late": True}

    @app.get("/free")
    @exempt
    async def free() -> Any:
        return {"free": True}

    client = TestClient(app, raise_server_exceptions=False)

    def send(
        path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if body is None:
            r = client.get(path, headers=headers or {})
        else:
            r = client.post(path, headers=headers or {}, content=body)
        return r.status_code, _lower(r.headers), r.content

    return send, lambda: find_seawall(app).stats()


# Django's URLconf for django_app (this module is ROOT_URLCONF there).


def _dj_views() -> list[Any]:
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    def item(request: Any, id: int) -> Any:
        return JsonResponse({"id": id, "read": len(request.body)})

    async def aitem(request: Any, id: int) -> Any:
        return JsonResponse({"id": id})

    def flaky(request: Any, n: int) -> Any:
        return JsonResponse({"down": n}, status=500)

    def boom(request: Any) -> Any:
        raise RuntimeError("secret hunter2")

    async def slow(request: Any) -> Any:
        await asyncio.sleep(SLOW)
        return HttpResponse(b'{"late": true}', content_type="application/json")

    def sync_slow(request: Any) -> Any:
        time.sleep(SLOW)
        return HttpResponse(b'{"late": true}', content_type="application/json")

    @exempt
    def free(request: Any) -> Any:
        return JsonResponse({"free": True})

    return [
        path("items/<int:id>", item),
        path("aitems/<int:id>", aitem),
        path("flaky/<int:n>", flaky),
        path("boom", boom),
        path("slow", slow),
        path("sslow", sync_slow),
        path("free", free),
    ]


def __getattr__(name: str) -> Any:
    # Django imports ROOT_URLCONF's urlpatterns lazily; build them on demand.
    if name == "urlpatterns":
        return _dj_views()
    raise AttributeError(name)


FRAMEWORKS = ["flask", "django-sync", "django-async", "fastapi"]


def build(framework: str) -> tuple[Send, Callable[[], dict[str, Any]]]:
    if framework == "flask":
        return flask_app()
    if framework == "fastapi":
        return fastapi_app()
    return django_app(framework.split("-")[1])


def problem(answer: tuple[int, dict[str, str], bytes]) -> dict[str, Any]:
    status, headers, body = answer
    assert headers["content-type"] == "application/problem+json", (status, body)
    doc: dict[str, Any] = json.loads(body)
    assert doc["status"] == status
    assert doc["request_id"] == headers["x-request-id"]
    return doc


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_layer(framework: str, logs: list[dict[str, Any]]) -> None:
    """Each layer does its job on each framework, from the same settings."""
    send, stats = build(framework)
    used = 0  # requests that reached the rate limiter

    # Health answers before the refusing layers.
    status, headers, body = send("/health/live")
    assert status == 200
    assert headers["content-type"].startswith("application/health+json")

    # Metrics: the Prometheus exposition.
    status, headers, body = send("/metrics")
    assert status == 200
    assert b"seawall_" in body

    # Dashboard: never without its token.
    assert send("/_seawall")[0] in (401, 403)
    status, headers, _ = send("/_seawall", {"authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert headers["content-type"].startswith("text/html")

    # Timing, RateLimit headers, request id, on a sync and an async view.
    for path in ("/items/1", "/aitems/1"):
        status, headers, body = send(path)
        used += 1
        assert status == 200, body
        assert json.loads(body)["id"] == 1
        assert "server-timing" in headers
        assert "x-response-time" in headers
        assert headers["x-request-id"]
        assert headers["ratelimit-policy"].startswith(f'"default";q={RATE}')

    # Validation: a body past max_body is a 413 problem; one within reaches the view.
    assert json.loads(send("/items/1", body=b"x" * 1024)[2])["read"] == 1024
    big = send("/items/1", body=b"x" * 1025)
    used += 2
    assert big[0] == 413
    assert problem(big)["type"] == "urn:seawall:problem:body-too-large"

    # ErrorCapture: one captured error, a problem 500 without the secret.
    boom = send("/boom")
    used += 1
    assert boom[0] == 500
    assert problem(boom)["type"] == "urn:seawall:problem:internal-error"
    assert b"hunter2" not in boom[2]
    assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1

    # CircuitBreaker per route: failures open it (test_breaker_keys_by_template
    # below shows that the paths of one route template share it).
    assert [send("/flaky/1")[0] for _ in range(3)] == [500, 500, 500]
    refused = send("/flaky/1")
    assert refused[0] == 503
    assert problem(refused)["type"].endswith("temporary-reduced-capacity")
    assert int(refused[1]["retry-after"]) > 0
    used += 4
    assert send("/items/2")[0] == 200  # another route's breaker is closed
    used += 1

    # Timeout: ASGI cancels the handler (504); WSGI cannot, and marks the overrun.
    slow_path = "/sslow" if framework == "django-sync" else "/slow"
    slow = send(slow_path)
    used += 1
    if framework in ("fastapi", "django-async"):
        assert slow[0] == 504
        assert problem(slow)["type"] == "urn:seawall:problem:timeout"
    else:
        assert slow[0] == 200
    snapshot = stats()
    assert snapshot["timeout"]["exceeded"] == 1

    # LoadShedding and ConcurrencyLimit admitted every request and hold none now.
    for key in ("shedding", "concurrency"):
        assert snapshot[key]["admitted"] >= used, (key, snapshot[key])
        assert snapshot[key]["in_flight"] == 0, (key, snapshot[key])
    assert snapshot["breaker"]["per"] == "route"

    # RateLimit: the rest of the quota passes, then a 429 problem with Retry-After.
    answers = [send("/items/3")[0] for _ in range(RATE - used)]
    assert answers == [200] * (RATE - used)
    limited = send("/items/3")
    assert limited[0] == 429
    assert problem(limited)["type"].endswith("quota-exceeded")
    assert int(limited[1]["retry-after"]) > 0

    # An exempt view skips the refusing layers (the limit), keeps the observing ones.
    status, headers, body = send("/free")
    assert status == 200
    assert json.loads(body) == {"free": True}
    assert "server-timing" in headers
    assert "ratelimit" not in headers


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_breaker_keys_by_template(framework: str) -> None:
    """Per-route breakers key by template: failures of /flaky/1..3 open /flaky/4."""
    send, _ = build(framework)
    # The first request of a route is keyed by its path (the template is
    # learned from its outcome); every later path of the route shares one breaker.
    assert [send(f"/flaky/{n}")[0] for n in (1, 2, 3)] == [500, 500, 500]
    assert send("/flaky/4")[0] == 503
    assert send("/items/1")[0] == 200
