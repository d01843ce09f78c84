"""Handler limits with ``override_defaults=True`` replace the app-wide RateLimit everywhere.

The app-wide limit is 2/minute; a handler limit of 5/minute with
``override_defaults=True`` lets five requests through (and its own sixth is
refused), the same limit without it stops at two. Requests to an overriding
handler do not use the app-wide budget, and every other layer (Timing, the
request id) still runs on them. FastAPI also finds marks on the endpoints of
mounted apps (``app.mount``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View
from fastapi import APIRouter, Depends, FastAPI
from flask import Blueprint, Flask
from starlette.testclient import TestClient

from seawall import RateLimit, Timing
from seawall.testing import ManualClock, override

#: Five overriding requests (200), its sixth (429); then the app-wide budget, untouched.
EXPECTED = [200] * 5 + [429]
#: The same handler limit on top of the app-wide one: two, then the app-wide 429s.
ON_TOP = [200, 200, 429, 429, 429, 429]


def _wide() -> list[Any]:
    return [Timing(), RateLimit("2/minute", clock=ManualClock())]


def _check_override_route(responses: list[Any]) -> None:
    assert [r.status_code for r in responses] == EXPECTED
    for r in responses:
        # Timing and the request id still run on the route.
        assert "server-timing" in r.headers
        assert "x-request-id" in r.headers
    # The 429 is the handler's own limit (5 a minute), not the app's.
    assert '"handler";q=5;w=60' in responses[-1].headers["RateLimit-Policy"]
    assert '"default"' not in responses[0].headers["RateLimit-Policy"]


# -- Flask ----------------------------------------------------------------------


def _flask() -> Flask:
    from seawall.flask import Seawall

    app = Flask(__name__)
    guard = Seawall(app, layers=_wide())

    @app.get("/loose")
    @guard.limit("5/minute", override_defaults=True)
    def loose() -> str:
        return "ok"

    @app.get("/aloose")
    @guard.limit("5/minute", override_defaults=True)
    async def aloose() -> str:
        return "ok"

    @app.get("/tight")
    @guard.limit("5/minute")
    def tight() -> str:
        return "ok"

    @app.get("/other")
    def other() -> str:
        return "ok"

    bp = Blueprint("bp", __name__, url_prefix="/bp")

    @bp.get("/x")
    def bp_x() -> str:
        return "ok"

    guard.limit("5/minute", override_defaults=True)(bp)
    app.register_blueprint(bp)
    return app


@pytest.mark.parametrize("route", ["/loose", "/aloose", "/bp/x"])
def test_flask(route: str) -> None:
    app = _flask()
    client = app.test_client()
    # buffered: the test client then closes each response, as a server does.
    _check_override_route([client.get(route, buffered=True) for _ in range(6)])
    assert [client.get("/other", buffered=True).status_code for _ in range(3)] == [200, 200, 429]


def test_flask_without_override_is_on_top() -> None:
    client = _flask().test_client()
    assert [client.get("/tight", buffered=True).status_code for _ in range(6)] == ON_TOP


def test_flask_override_follows_testing_override() -> None:
    """seawall.testing.override changes what overriding routes get too."""
    app = _flask()
    client = app.test_client()
    with override(app, disable=["timing"]):
        assert "Server-Timing" not in client.get("/loose", buffered=True).headers
    assert "Server-Timing" in client.get("/loose", buffered=True).headers


# -- Django ---------------------------------------------------------------------


def _django_urls() -> list[Any]:
    from seawall.django import limit

    @limit("5/minute", override_defaults=True)
    def loose(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    @limit("5/minute", override_defaults=True)
    async def aloose(request: Any) -> HttpResponse:
        await asyncio.sleep(0)
        return HttpResponse(b"ok")

    @limit("5/minute")
    def tight(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    def other(request: Any) -> HttpResponse:
        return HttpResponse(b"ok")

    @limit("5/minute", override_defaults=True)
    class Whole(View):
        def get(self, request: Any) -> HttpResponse:
            return HttpResponse(b"ok")

    class Method(View):
        @method_decorator(limit("5/minute", override_defaults=True))
        def get(self, request: Any) -> HttpResponse:
            return HttpResponse(b"ok")

    return [
        path("loose", loose),
        path("aloose", aloose),
        path("tight", tight),
        path("other", other),
        path("whole", Whole.as_view()),
        path("method", Method.as_view()),
    ]


urlpatterns: list[Any] = []


@pytest.fixture
def django_app() -> Any:
    global urlpatterns
    urlpatterns = _django_urls()
    with override_settings(ROOT_URLCONF=__name__, SEAWALL={"layers": _wide()}):
        yield


@pytest.mark.parametrize("route", ["/loose", "/aloose", "/whole", "/method"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_django(django_app: Any, route: str, mode: str) -> None:
    if mode == "sync":
        client = Client()
        responses = [client.get(route) for _ in range(6)]
        others = [client.get("/other").status_code for _ in range(3)]
    else:

        async def run() -> tuple[list[Any], list[int]]:
            client = AsyncClient()
            got = [await client.get(route) for _ in range(6)]
            return got, [(await client.get("/other")).status_code for _ in range(3)]

        responses, others = asyncio.run(run())
    _check_override_route(responses)
    assert others == [200, 200, 429]


def test_django_without_override_is_on_top(django_app: Any) -> None:
    client = Client()
    assert [client.get("/tight").status_code for _ in range(6)] == ON_TOP


# -- FastAPI --------------------------------------------------------------------


def _fastapi() -> FastAPI:
    from seawall.fastapi import SeawallMiddleware, exempt, limit

    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=_wide())

    @app.get("/loose", dependencies=[Depends(limit("5/minute", override_defaults=True))])
    async def loose() -> str:
        return "ok"

    @app.get("/tight", dependencies=[Depends(limit("5/minute"))])
    async def tight() -> str:
        return "ok"

    @app.get("/other")
    def other() -> str:
        return "ok"

    router = APIRouter(dependencies=[Depends(limit("5/minute", override_defaults=True))])

    @router.get("/r/x")
    def router_x() -> str:
        return "ok"

    app.include_router(router)

    sub = FastAPI()

    @sub.get("/free")
    @exempt
    def free() -> str:
        return "ok"

    @sub.get("/loose", dependencies=[Depends(limit("5/minute", override_defaults=True))])
    def sub_loose() -> str:
        return "ok"

    @sub.get("/plain")
    def plain() -> str:
        return "ok"

    app.mount("/sub", sub)
    return app


@pytest.mark.parametrize("route", ["/loose", "/r/x", "/sub/loose"])
def test_fastapi(route: str) -> None:
    client = TestClient(_fastapi())
    _check_override_route([client.get(route) for _ in range(6)])
    assert [client.get("/other").status_code for _ in range(3)] == [200, 200, 429]


def test_fastapi_without_override_is_on_top() -> None:
    client = TestClient(_fastapi())
    assert [client.get("/tight").status_code for _ in range(6)] == ON_TOP


def test_fastapi_exempt_endpoint_of_a_mounted_app() -> None:
    client = TestClient(_fastapi())
    free = [client.get("/sub/free") for _ in range(4)]
    assert [r.status_code for r in free] == [200] * 4
    assert all("ratelimit" not in r.headers for r in free)
    assert all("server-timing" in r.headers for r in free)
    # The mounted app's unmarked endpoint gets the whole wall.
    assert [client.get("/sub/plain").status_code for _ in range(3)] == [200, 200, 429]
