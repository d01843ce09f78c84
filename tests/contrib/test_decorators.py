"""Handler decorators and dependencies on each framework: limit, breaker, validate, exempt."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import pytest
from django.http import HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from flask import Blueprint, Flask
from pydantic import BaseModel
from starlette.testclient import TestClient

import seawall
from seawall.layers import Timing


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def problem(body: bytes) -> dict[str, Any]:
    return json.loads(body)  # type: ignore[no-any-return]


class Item(BaseModel):
    name: str
    qty: int


# -- Flask ---------------------------------------------------------------------


class TestFlask:
    def make(self) -> tuple[Flask, Any]:
        from seawall.flask import Seawall

        app = Flask(__name__)
        guard = Seawall(app, layers=[Timing()])
        return app, guard

    @staticmethod
    def get(app: Flask, path: str) -> Any:
        return app.test_client().get(path, buffered=True)

    def test_limit_view_sync_and_async(self) -> None:
        """@guard.limit: the third request in the window is a 429 problem with Retry-After."""
        app, guard = self.make()

        @app.get("/s/<int:n>")
        @guard.limit("2/minute")
        def s(n: int) -> Any:
            return "ok"

        @app.get("/a")
        @guard.limit("1/minute")
        async def a() -> Any:
            return "ok"

        first = self.get(app, "/s/1")
        assert first.status_code == 200
        assert "RateLimit" in first.headers
        assert self.get(app, "/s/2").status_code == 200
        third = self.get(app, "/s/3")
        assert third.status_code == 429
        assert third.headers["Content-Type"] == "application/problem+json"
        assert int(third.headers["Retry-After"]) > 0
        assert problem(third.data)["type"].endswith("quota-exceeded")
        assert self.get(app, "/a").status_code == 200
        assert self.get(app, "/a").status_code == 429

    def test_limit_blueprint(self) -> None:
        """guard.limit(blueprint): one bucket for the blueprint's views."""
        app, guard = self.make()
        bp = Blueprint(unique("bp"), __name__, url_prefix="/bp")
        bp.get("/x")(lambda: "x")
        bp.get("/y", endpoint="y")(lambda: "y")
        guard.limit("2/minute")(bp)
        app.register_blueprint(bp)
        app.get("/other")(lambda: "other")
        assert [self.get(app, p).status_code for p in ("/bp/x", "/bp/y", "/bp/x")] == [
            200,
            200,
            429,
        ]
        assert self.get(app, "/other").status_code == 200

    def test_breaker_view(self) -> None:
        """@guard.breaker opens after failures and answers 503 with Retry-After."""
        app, guard = self.make()
        app.testing = False

        @app.get("/flaky")
        @guard.breaker(unique("flask-view"), fail_max=2, wait_in_open=30)
        def flaky() -> Any:
            return "down", 503

        assert [self.get(app, "/flaky").status_code for _ in range(2)] == [503, 503]
        refused = self.get(app, "/flaky")
        assert refused.status_code == 503
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert problem(refused.data)["type"].endswith("temporary-reduced-capacity")
        assert "Retry-After" in refused.headers

    def test_breaker_blueprint(self) -> None:
        """guard.breaker(blueprint): 5xx and exceptions of its views feed one breaker."""
        app, guard = self.make()
        app.testing = False
        bp = Blueprint(unique("bpb"), __name__, url_prefix="/b")

        @bp.get("/boom")
        def boom() -> Any:
            raise RuntimeError("x")

        bp.get("/ok")(lambda: "fine")
        guard.breaker(fail_max=2, wait_in_open=30)(bp)
        app.register_blueprint(bp)
        assert self.get(app, "/b/ok").status_code == 200
        assert [self.get(app, "/b/boom").status_code for _ in range(2)] == [500, 500]
        refused = self.get(app, "/b/ok")
        assert refused.status_code == 503
        assert problem(refused.data)["breaker"] == f"blueprint:{bp.name}"

    def test_validate_view(self) -> None:
        """@guard.validate: a body off the schema is a 422 problem; a good one passes in."""
        app, guard = self.make()

        @app.post("/items")
        @guard.validate(Item, into="item")
        def create(item: Item) -> Any:
            return {"name": item.name}

        client = app.test_client()
        ok = client.post("/items", json={"name": "a", "qty": 1}, buffered=True)
        assert ok.json == {"name": "a"}
        bad = client.post("/items", json={"name": "a", "qty": "many"}, buffered=True)
        assert bad.status_code == 422
        assert problem(bad.data)["errors"]
        assert "many" not in bad.get_data(as_text=True)
        # An HTML form with a file is multipart: its text fields are the document.
        form = {"name": "b", "qty": "2", "photo": (io.BytesIO(b"\x89PNG"), "p.png")}
        multipart = client.post("/items", data=form, buffered=True)
        assert (multipart.status_code, multipart.json) == (200, {"name": "b"})
        photo = (io.BytesIO(b"\x89PNG"), "p.png")
        missing = client.post("/items", data={"name": "b", "photo": photo}, buffered=True)
        assert missing.status_code == 422
        broken = client.post(
            "/items",
            data=b"no parts here",
            content_type="multipart/form-data; boundary=xyz",
            buffered=True,
        )
        assert broken.status_code == 400

    def test_breaker_and_validate_async_views(self) -> None:
        """guard.breaker and guard.validate on async def views."""
        app, guard = self.make()
        app.testing = False

        @app.get("/aflaky")
        @guard.breaker(unique("flask-async"), fail_max=2, wait_in_open=30)
        async def aflaky() -> Any:
            return "down", 503

        @app.post("/aitems")
        @guard.validate(Item, into="item")
        async def acreate(item: Item) -> Any:
            return {"name": item.name}

        assert [self.get(app, "/aflaky").status_code for _ in range(2)] == [503, 503]
        refused = self.get(app, "/aflaky")
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert problem(refused.data)["type"].endswith("temporary-reduced-capacity")
        client = app.test_client()
        ok = client.post("/aitems", json={"name": "b", "qty": 1}, buffered=True)
        assert ok.json == {"name": "b"}
        bad = client.post("/aitems", json={"qty": 1}, buffered=True)
        assert bad.status_code == 422
        assert bad.headers["Content-Type"] == "application/problem+json"

    def test_validate_blueprint(self) -> None:
        """guard.validate(blueprint) checks every request to the blueprint."""
        app, guard = self.make()
        bp = Blueprint(unique("bpv"), __name__)
        bp.post("/v")(lambda: "ok")
        guard.validate({"type": "object", "required": ["x"]})(bp)
        app.register_blueprint(bp)
        client = app.test_client()
        assert client.post("/v", json={"x": 1}, buffered=True).status_code == 200
        assert client.post("/v", json={"y": 1}, buffered=True).status_code == 422


# -- Django --------------------------------------------------------------------


def _dj_limited(request: Any, n: int) -> Any:
    return JsonResponse({"n": n})


async def _dj_alimited(request: Any) -> Any:
    return HttpResponse(b"ok")


def _dj_broken(request: Any) -> Any:
    return HttpResponse(b"down", status=500)


def _dj_create(request: Any, item: Item) -> Any:
    return JsonResponse({"name": item.name})


async def _dj_abroken(request: Any) -> Any:
    return HttpResponse(b"down", status=503)


async def _dj_acreate(request: Any, item: Item) -> Any:
    return JsonResponse({"name": item.name})


class _CBV(View):
    def get(self, request: Any) -> Any:
        return HttpResponse(b"cbv")


urlpatterns: list[Any] = []


@pytest.fixture
def django_views() -> Any:
    """A URLconf of decorated views, fresh per test (so are the buckets)."""
    from seawall.django import breaker, limit, validate

    global urlpatterns
    cbv = limit("1/minute")(type("CBV", (_CBV,), {}))

    class MethodCBV(View):
        @method_decorator(limit("1/minute"))
        async def get(self, request: Any) -> Any:
            return HttpResponse(b"method")

    method_cbv = MethodCBV
    urlpatterns = [
        path("limited/<int:n>", limit("2/minute")(_dj_limited)),
        path("alimited", limit("1/minute")(_dj_alimited)),
        path("broken", breaker(unique("dj"), fail_max=2, wait_in_open=30)(_dj_broken)),
        path("create", validate(Item, into="item")(_dj_create)),
        path("abroken", breaker(unique("dja"), fail_max=2, wait_in_open=30)(_dj_abroken)),
        path("acreate", validate(Item, into="item")(_dj_acreate)),
        path("cbv", cbv.as_view()),
        path("mcbv", method_cbv.as_view()),
    ]
    with override_settings(ROOT_URLCONF=__name__, SEAWALL={"timing": True}):
        yield


@pytest.mark.usefixtures("django_views")
class TestDjango:
    def test_limit_function_view(self) -> None:
        """@limit on a sync function view: 429 problem+json past the limit."""
        c = Client()
        assert [c.get(f"/limited/{n}").status_code for n in (1, 2, 3)] == [200, 200, 429]
        refused = c.get("/limited/4")
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert "Retry-After" in refused.headers
        assert "Server-Timing" in refused.headers

    def test_limit_async_view(self) -> None:
        """@limit on an async view under the async middleware path."""

        async def run() -> list[int]:
            c = AsyncClient()
            return [(await c.get("/alimited")).status_code for _ in range(2)]

        assert asyncio.run(run()) == [200, 429]

    def test_limit_class_and_method_decorator(self) -> None:
        """@limit on a class, and method_decorator(limit(...)) on an async method."""
        c = Client()
        assert [c.get("/cbv").status_code for _ in range(2)] == [200, 429]

        async def run() -> list[int]:
            ac = AsyncClient()
            return [(await ac.get("/mcbv")).status_code for _ in range(2)]

        assert asyncio.run(run()) == [200, 429]

    def test_breaker(self) -> None:
        """@breaker counts 5xx answers and opens: 503 problem."""
        c = Client()
        assert [c.get("/broken").status_code for _ in range(2)] == [500, 500]
        refused = c.get("/broken")
        assert refused.status_code == 503
        assert refused.headers["Content-Type"] == "application/problem+json"

    def test_validate(self) -> None:
        """@validate with a pydantic model: 422 problem, or the model passed in."""
        c = Client()
        ok = c.post("/create", {"name": "a", "qty": 2}, content_type="application/json")
        assert ok.json() == {"name": "a"}
        bad = c.post("/create", {"name": "a"}, content_type="application/json")
        assert bad.status_code == 422
        assert problem(bad.content)["errors"]
        # The test client's default (and an HTML form's with files) is multipart.
        assert c.post("/create", {"name": "m", "qty": 3}).json() == {"name": "m"}
        assert c.post("/create", {"name": "m"}).status_code == 422

    def test_breaker_and_validate_async_views(self) -> None:
        """@breaker and @validate on async views, under the async middleware path."""

        async def run() -> list[Any]:
            c = AsyncClient()
            answers = [await c.get("/abroken") for _ in range(3)]
            ctype = "application/json"
            answers.append(await c.post("/acreate", {"name": "a", "qty": 2}, content_type=ctype))
            answers.append(await c.post("/acreate", {"qty": 2}, content_type=ctype))
            return answers

        first, second, refused, ok, bad = asyncio.run(run())
        assert [first.status_code, second.status_code, refused.status_code] == [503, 503, 503]
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert problem(refused.content)["type"].endswith("temporary-reduced-capacity")
        assert ok.json() == {"name": "a"}
        assert bad.status_code == 422
        assert bad.headers["Content-Type"] == "application/problem+json"


@pytest.mark.redis
def test_django_class_views_keep_their_own_buckets(redis_url: str, key_prefix: str) -> None:
    """Two decorated classes, two method_decorator'd methods: four buckets, even in Redis.

    method_decorator first decorates a dummy function, and a class decorated
    whole is guarded through the inherited View.dispatch: neither may name
    the bucket, or every such view would share one Redis key.
    """
    from seawall.django import limit

    def tight() -> Any:
        return limit("1/minute", storage=redis_url, key_prefix=key_prefix)

    def view(body: bytes) -> Any:
        def get(self: Any, request: Any) -> Any:
            return HttpResponse(body)

        return get

    whole = [tight()(type(f"Whole{i}", (View,), {"get": view(b"w")})) for i in (1, 2)]
    methods = [
        type(f"Method{i}", (View,), {"get": method_decorator(tight())(view(b"m"))}) for i in (1, 2)
    ]
    global urlpatterns
    urlpatterns = [path(f"v{i}", cls.as_view()) for i, cls in enumerate(whole + methods)]
    with override_settings(ROOT_URLCONF=__name__, SEAWALL={"timing": True}):
        c = Client()
        assert [c.get(f"/v{i}").status_code for i in range(4)] == [200] * 4
        assert [c.get(f"/v{i}").status_code for i in range(4)] == [429] * 4


# -- FastAPI -------------------------------------------------------------------


class TestFastAPI:
    def make(self) -> FastAPI:
        from seawall.fastapi import SeawallMiddleware

        app = FastAPI()
        app.add_middleware(SeawallMiddleware, layers=[Timing()])
        return app

    def test_limit_dependency_keyed_by_template(self) -> None:
        """Depends(limit(...)) needs no request parameter; /items/{id} is one bucket."""
        from seawall.fastapi import limit

        app = self.make()
        router = APIRouter(dependencies=[Depends(limit("2/minute"))])

        @router.get("/items/{item_id}")
        async def item(item_id: int) -> Any:
            return {"id": item_id}

        @router.get("/other")
        def other() -> Any:
            return {}

        app.include_router(router)
        client = TestClient(app)
        codes = [client.get(f"/items/{n}").status_code for n in (1, 2, 3)]
        assert codes == [200, 200, 429]
        refused = client.get("/items/9")
        assert refused.headers["content-type"] == "application/problem+json"
        assert "retry-after" in refused.headers
        assert "server-timing" in refused.headers
        assert [client.get("/other").status_code for _ in range(2)] == [200, 200]

    @pytest.mark.redis
    def test_two_limit_dependencies_on_one_template(self, redis_url: str, key_prefix: str) -> None:
        """limit() dependencies on GET and POST /items/{id} keep separate buckets, in Redis too."""
        from seawall.fastapi import limit

        app = self.make()

        def tight() -> Any:
            return Depends(limit("1/minute", storage=redis_url, key_prefix=key_prefix))

        @app.get("/items/{item_id}", dependencies=[tight()])
        async def read(item_id: int) -> Any:
            return {}

        @app.post("/items/{item_id}", dependencies=[tight()])
        async def write(item_id: int) -> Any:
            return {}

        client = TestClient(app)
        assert [client.get("/items/1").status_code, client.post("/items/2").status_code] == [
            200,
            200,
        ]
        assert [client.get("/items/3").status_code, client.post("/items/4").status_code] == [
            429,
            429,
        ]

    def test_limit_decorator_on_endpoint(self) -> None:
        """@seawall.limit directly on an endpoint, no request parameter."""
        app = self.make()

        @app.get("/d")
        @seawall.limit("1/minute")
        async def d() -> Any:
            return {"ok": True}

        client = TestClient(app)
        assert [client.get("/d").status_code for _ in range(2)] == [200, 429]

    def test_decorators_on_sync_and_async_endpoints(self) -> None:
        """@seawall.limit and @seawall.breaker on sync and async endpoints, no request parameter."""
        app = self.make()

        @app.get("/sync-limited")
        @seawall.limit("1/minute")
        def sync_limited() -> Any:
            return {"ok": True}

        @app.get("/sync-broken")
        @seawall.breaker(unique("fa-sync"), fail_max=2, wait_in_open=30)
        def sync_broken() -> Any:
            raise RuntimeError("down")

        @app.get("/async-broken")
        @seawall.breaker(unique("fa-async"), fail_max=2, wait_in_open=30)
        async def async_broken() -> Any:
            raise RuntimeError("down")

        client = TestClient(app, raise_server_exceptions=False)
        assert [client.get("/sync-limited").status_code for _ in range(2)] == [200, 429]
        for url in ("/sync-broken", "/async-broken"):
            assert [client.get(url).status_code for _ in range(2)] == [500, 500]
            refused = client.get(url)
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["type"].endswith("temporary-reduced-capacity")

    def test_dependencies_on_sync_endpoints(self) -> None:
        """Depends(limit(...)) and Depends(breaker(...)) guard sync endpoints too."""
        from seawall.fastapi import breaker, limit

        app = self.make()

        @app.get("/sl", dependencies=[Depends(limit("1/minute"))])
        def sl() -> Any:
            return {}

        @app.get("/sb", dependencies=[Depends(breaker(unique("fa-dep"), fail_max=1))])
        def sb() -> Any:
            raise RuntimeError("down")

        client = TestClient(app, raise_server_exceptions=False)
        assert [client.get("/sl").status_code for _ in range(2)] == [200, 429]
        assert [client.get("/sb").status_code for _ in range(2)] == [500, 503]

    def test_breaker_dependency(self) -> None:
        """Depends(breaker(name)) learns the endpoint's failures and opens."""
        from seawall.fastapi import breaker

        app = self.make()

        @app.get("/b", dependencies=[Depends(breaker(unique("fa"), fail_max=2, wait_in_open=30))])
        async def b() -> Any:
            raise HTTPException(503)

        client = TestClient(app)
        assert [client.get("/b").status_code for _ in range(2)] == [503, 503]
        refused = client.get("/b")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"

    def test_validate_dependency_returns_document(self) -> None:
        """Depends(validate(Model)) gives the model; a bad body is a 422 problem."""
        from seawall.fastapi import validate

        app = self.make()

        @app.post("/items")
        async def create(item: Item = Depends(validate(Item))) -> Any:  # noqa: B008
            return {"name": item.name}

        client = TestClient(app)
        assert client.post("/items", json={"name": "a", "qty": 1}).json() == {"name": "a"}
        bad = client.post("/items", json={"qty": "x"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"

    def test_document_includes_dependency_statuses(self) -> None:
        """document(app) adds the statuses of a route's seawall dependencies."""
        from seawall.fastapi import document, limit

        app = FastAPI()

        @app.get("/x", dependencies=[Depends(limit("5/minute"))])
        async def x() -> Any:
            return {}

        document(app)
        responses = app.openapi()["paths"]["/x"]["get"]["responses"]
        assert "429" in responses
        assert "503" not in responses
