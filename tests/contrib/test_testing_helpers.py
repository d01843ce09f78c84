"""seawall.testing.override: disabling or tightening layers in an app's own tests."""

from __future__ import annotations

import sys
import unittest
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.testclient import TestClient

from seawall.fastapi import SeawallMiddleware
from seawall.flask import Seawall
from seawall.layers import Timing
from seawall.testing import override, reset
from tests.contrib.layers import Deny


def flask_app() -> Flask:
    app = Flask(__name__)
    Seawall(app, layers=[Timing(), Deny()])
    app.get("/")(lambda: "hi")
    return app


def status(app: Flask, **headers: str) -> int:
    return app.test_client().get("/", headers=headers, buffered=True).status_code


class TestOverride:
    @pytest.mark.parametrize("spec", ["deny", "Deny", Deny], ids=["name", "class name", "class"])
    def test_disable_then_restore(self, spec: Any) -> None:
        """A disabled layer is gone inside the block and back after it."""
        app = flask_app()
        assert status(app, **{"x-deny": "1"}) == 429
        with override(app, disable=[spec]) as wall:
            assert status(app, **{"x-deny": "1"}) == 200
            assert [type(layer) for layer in wall.layers] == [Timing]
        assert status(app, **{"x-deny": "1"}) == 429

    def test_disable_by_config_key(self) -> None:
        """Config keys name layers too ("timing")."""
        app = flask_app()
        with override(app, disable=["timing"]):
            assert "Server-Timing" not in app.test_client().get("/", buffered=True).headers
        assert "Server-Timing" in app.test_client().get("/", buffered=True).headers

    def test_replace_tightens(self) -> None:
        """replace= swaps a layer for a stricter one."""
        app = flask_app()
        with override(app, replace={"deny": Deny(header="x-other")}):
            assert status(app, **{"x-deny": "1"}) == 200
            assert status(app, **{"x-other": "1"}) == 429

    def test_unknown_name_is_an_error(self) -> None:
        """A typo must not leave a limit silently in place."""
        with (
            pytest.raises(ValueError, match="rate_limitt"),
            override(flask_app(), disable=["rate_limitt"]),
        ):
            pass

    def test_as_decorator(self) -> None:
        """override(...) decorates a test function."""
        app = flask_app()

        @override(app, disable=["deny"])
        def check() -> int:
            return status(app, **{"x-deny": "1"})

        assert check() == 200
        assert status(app, **{"x-deny": "1"}) == 429

    def test_as_decorator_of_an_async_function(self) -> None:
        """The block lasts while the coroutine runs, not only while it is made."""
        import asyncio
        import inspect

        app = flask_app()

        @override(app, disable=["deny"])
        async def check() -> int:
            await asyncio.sleep(0)
            return status(app, **{"x-deny": "1"})

        assert inspect.iscoroutinefunction(check)
        assert asyncio.run(check()) == 200
        assert status(app, **{"x-deny": "1"}) == 429

    def test_a_decorated_test_gets_a_fresh_replacement_each_run(self) -> None:
        """One replacement object serves every run of a decorated test: empty at each start."""
        from seawall import RateLimit

        app = flask_app()

        @override(app, replace={"timing": RateLimit("2/minute")})
        def run() -> list[int]:
            return [status(app) for _ in range(3)]

        assert run() == [200, 200, 429]
        assert run() == [200, 200, 429]

    def test_replace_inside_a_disabling_override_adds_the_layer(self) -> None:
        """An outer override (a fixture) disabled the layer; an inner one brings a tight one."""
        from seawall import RateLimit

        app = flask_app()
        with override(app, disable=["deny"]):
            with override(app, replace={"rate_limit": RateLimit("1/minute")}) as wall:
                assert [status(app) for _ in range(2)] == [200, 429]
                assert "deny" not in wall.stack.names
            assert status(app) == 200
        with (
            pytest.raises(ValueError, match="rate_limitt"),
            override(app, replace={"rate_limitt": RateLimit("1/minute")}),
        ):
            pass

    def test_fastapi_before_first_request(self) -> None:
        """A FastAPI app can be overridden before it served anything."""
        app = FastAPI()
        app.add_middleware(SeawallMiddleware, layers=[Deny()])
        app.get("/")(lambda: {"ok": True})
        with override(app, disable=["deny"]):
            assert TestClient(app).get("/", headers={"x-deny": "1"}).status_code == 200
        assert TestClient(app).get("/", headers={"x-deny": "1"}).status_code == 429

    def test_reset_between_tests(self) -> None:
        """reset(app) clears every layer's state."""
        app = flask_app()
        status(app)
        wall = app.extensions["seawall"]._wall
        assert wall.stats()["deny"]["seen"] == 1
        reset(app)
        assert wall.stats()["deny"]["seen"] == 0


class UnittestStyle(unittest.TestCase):
    """The unittest recipe from docs: enterContext in setUp."""

    def setUp(self) -> None:
        self.app = flask_app()
        if sys.version_info >= (3, 11):
            self.enterContext(override(self.app, disable=["deny"]))
        else:  # the docs' recipe for Python 3.10, which has no enterContext
            cm = override(self.app, disable=["deny"])
            cm.__enter__()
            self.addCleanup(cm.__exit__, None, None, None)

    def test_limits_are_off(self) -> None:
        assert status(self.app, **{"x-deny": "1"}) == 200


def test_unittest_recipe_restores() -> None:
    """After the unittest case ends, the layer is back."""
    result = unittest.TestResult()
    case = UnittestStyle("test_limits_are_off")
    case.run(result)
    assert result.wasSuccessful(), result.failures + result.errors
    assert status(case.app, **{"x-deny": "1"}) == 429


class TestResetHandlerState:
    """reset(app) also refills handler limits and closes named breakers."""

    def test_flask_view_and_blueprint_limits(self) -> None:
        from flask import Blueprint

        app = Flask(__name__)
        guard = Seawall(app, layers=[Timing()])

        @app.get("/login")
        @guard.limit("1/minute")
        def login() -> Any:
            return "ok"

        from flask.views import MethodView

        class Report(MethodView):
            @guard.limit("1/minute")
            def get(self) -> Any:
                return "report"

        app.add_url_rule("/report", view_func=Report.as_view("report"))

        bp = Blueprint("reset_bp", __name__, url_prefix="/bp")
        bp.get("/x")(lambda: "x")
        guard.limit("1/minute")(bp)
        app.register_blueprint(bp)
        client = app.test_client()
        for path in ("/login", "/bp/x", "/report"):
            assert [client.get(path, buffered=True).status_code for _ in range(2)] == [200, 429]
        reset(app)
        for path in ("/login", "/bp/x", "/report"):
            assert client.get(path, buffered=True).status_code == 200

    def test_fastapi_dependency_decorator_and_breaker(self) -> None:
        import uuid

        from fastapi import Depends

        import seawall
        from seawall.fastapi import breaker, limit

        app = FastAPI()
        app.add_middleware(SeawallMiddleware, layers=[Timing()])
        name = f"reset-{uuid.uuid4().hex[:8]}"

        @app.get("/items/{n}", dependencies=[Depends(limit("1/minute"))])
        async def item(n: int) -> Any:
            return {}

        @app.get("/d")
        @seawall.limit("1/minute")
        async def d() -> Any:
            return {}

        @app.get("/b", dependencies=[Depends(breaker(name, fail_max=1, wait_in_open=60))])
        async def b() -> Any:
            raise RuntimeError("down")

        client = TestClient(app, raise_server_exceptions=False)
        assert [client.get(p).status_code for p in ("/items/1", "/items/2")] == [200, 429]
        assert [client.get("/d").status_code for _ in range(2)] == [200, 429]
        assert [client.get("/b").status_code for _ in range(2)] == [500, 503]
        reset(app)
        assert client.get("/items/3").status_code == 200
        assert client.get("/d").status_code == 200
        assert client.get("/b").status_code == 500  # closed again: the endpoint runs

    def test_fastapi_included_routers_and_mounted_apps(self) -> None:
        """Limits on routes of included routers and mounted apps are refilled too."""
        from fastapi import APIRouter, Depends

        from seawall.fastapi import limit

        app = FastAPI()
        app.add_middleware(SeawallMiddleware, layers=[Timing()])
        # reset() before the first request: a fixture resetting at setup must not fail.
        reset(app)
        router = APIRouter(dependencies=[Depends(limit("1/minute"))])
        router.get("/r")(lambda: {})
        other = APIRouter()
        other.get("/dep", dependencies=[Depends(limit("1/minute"))])(lambda: {})
        sub = FastAPI()
        sub.get("/s", dependencies=[Depends(limit("1/minute"))])(lambda: {})
        app.include_router(router, prefix="/rl")
        app.include_router(other, prefix="/o")
        app.mount("/sub", sub)
        client = TestClient(app)
        paths = ("/rl/r", "/o/dep", "/sub/s")
        for path in paths:
            assert [client.get(path).status_code for _ in range(2)] == [200, 429], path
        reset(app)
        assert [client.get(path).status_code for path in paths] == [200, 200, 200]


class TestDjango:
    """override/reset with the middleware class: every test client's wall."""

    def test_override_reaches_walls_built_in_the_block(self) -> None:
        from django.test import Client, override_settings

        from seawall.django import SeawallMiddleware, get_wall

        with override_settings(SEAWALL={"layers": [Timing(), Deny()]}):
            assert Client().get("/items/1", headers={"x-deny": "1"}).status_code == 429
            before = get_wall()
            with override(SeawallMiddleware, disable=["deny"]) as current:
                assert current is before
                # A new client: a new middleware, a new wall, overridden too.
                assert Client().get("/items/1", headers={"x-deny": "1"}).status_code == 200
                inside = get_wall()
                assert inside is not before
                assert [type(layer) for layer in inside.layers] == [Timing]
            assert [type(layer) for layer in inside.layers] == [Timing, Deny]
            assert Client().get("/items/1", headers={"x-deny": "1"}).status_code == 429

    def test_override_typo_fails_at_once(self) -> None:
        from django.test import Client, override_settings

        from seawall.django import SeawallMiddleware

        with override_settings(SEAWALL={"layers": [Timing()]}):
            Client().get("/items/1")
            with (
                pytest.raises(ValueError, match="rate_limitt"),
                override(SeawallMiddleware, disable=["rate_limitt"]),
            ):
                pass

    def test_reset_refills_django_view_limits(self) -> None:
        from django.http import HttpResponse
        from django.test import Client, override_settings
        from django.urls import path
        from django.utils.decorators import method_decorator
        from django.views import View

        from seawall.django import SeawallMiddleware, limit

        @limit("1/minute")
        def login(request: Any) -> Any:
            return HttpResponse(b"ok")

        class Report(View):
            # The form the Django page shows: a limit on one handler method.
            @method_decorator(limit("1/minute"))
            def get(self, request: Any) -> Any:
                return HttpResponse(b"report")

        paths = [path("login", login), path("report", Report.as_view())]
        urls = type("urls", (), {"urlpatterns": paths})
        with override_settings(ROOT_URLCONF=urls, SEAWALL={"timing": True}):
            client = Client()
            for url in ("/login", "/report"):
                assert [client.get(url).status_code for _ in range(2)] == [200, 429]
            reset(SeawallMiddleware)
            assert [client.get(url).status_code for url in ("/login", "/report")] == [200, 200]
