"""FastAPI/Starlette middleware, through Starlette's TestClient."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from seawall.exceptions import CircuitOpen, ConfigurationError, RateLimited
from seawall.fastapi import SeawallMiddleware, document, exempt, problem_responses
from seawall.layers import CircuitBreaker, ErrorCapture, Timing
from seawall.stats import find_seawall
from tests.contrib.layers import Deny, Outcomes, Upper


def make_app(**kw: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SeawallMiddleware, **kw)

    @app.get("/items/{id}")
    async def item(id: int) -> Any:
        return {"id": id}

    @app.get("/sitems/{id}")
    def sitem(id: int) -> Any:
        return {"id": id}

    @app.get("/boom")
    async def boom() -> Any:
        raise RuntimeError("boom with secret hunter2")

    @app.get("/sboom")
    def sboom() -> Any:
        raise RuntimeError("sync boom with secret hunter2")

    @app.get("/rejected")
    async def rejected() -> Any:
        raise RateLimited("slow down", retry_after=7)

    @app.get("/open")
    async def is_open() -> Any:
        raise CircuitOpen("open", retry_after=3)

    @app.exception_handler(CircuitOpen)
    async def mine(request: Request, exc: CircuitOpen) -> JSONResponse:
        return JSONResponse({"mine": exc.detail}, status_code=503)

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.body())

    @app.get("/free")
    @exempt
    async def free() -> Any:
        return {"free": True}

    return app


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    return json.loads(response.content)  # type: ignore[no-any-return]


class TestWiring:
    def test_keywords_build_layers(self) -> None:
        """Explicit keywords, one per config key, build the layers."""
        app = make_app(timing={"response_time_header": True}, error_capture=True)
        client = TestClient(app)
        response = client.get("/items/3")
        assert response.json() == {"id": 3}
        assert "x-response-time" in response.headers
        assert "x-request-id" in response.headers
        wall = find_seawall(app)
        assert [type(layer) for layer in wall.layers] == [Timing, ErrorCapture]

    def test_config_dict_and_override(self) -> None:
        """config= gives a settings dict; keywords override it."""
        app = make_app(config={"timing": {"server_timing": False}}, timing=True)
        assert "server-timing" in TestClient(app).get("/items/1").headers

    def test_bad_setting_fails_at_startup(self) -> None:
        """A bad value names the key when the app starts."""
        app = make_app(timing={"slow": "fast"})
        with pytest.raises(ConfigurationError, match=r"timing\.slow"), TestClient(app):
            pass

    def test_layer_objects_and_layer_settings_together_are_refused(self) -> None:
        """A layer setting beside layers= would be dropped silently: it is an error."""
        app = make_app(layers=[Timing()], circuit_breaker=True)
        with pytest.raises(ConfigurationError, match=r"not both.*circuit_breaker"), TestClient(app):
            pass
        # Top-level settings go with layer objects.
        app = make_app(layers=[Timing()], request_id_header="X-Trace-ID")
        assert "x-trace-id" in TestClient(app).get("/items/1").headers

    def test_misspelt_setting_is_named(self) -> None:
        """A misspelt keyword is a ConfigurationError naming it, as in Flask and Django."""
        app = make_app(rate_limt="2/minute")
        with (
            pytest.raises(ConfigurationError, match=r"unknown setting 'rate_limt'"),
            TestClient(app),
        ):
            pass

    @pytest.mark.parametrize("path", ["/items/1", "/sitems/1"], ids=["async", "sync"])
    def test_route_template(self, path: str) -> None:
        """Statistics and outcomes key by the route template, sync and async endpoints."""
        outcomes = Outcomes()
        app = make_app(layers=[Timing(), outcomes])
        client = TestClient(app)
        for n in (1, 2):
            assert client.get(path[:-1] + str(n)).status_code == 200
        template = path.rsplit("/", 1)[0] + "/{id}"
        assert {o.route for o in outcomes.outcomes} == {template}
        assert find_seawall(app).stats()["timing"]["routes"][template]["count"] == 2

    def test_plain_starlette(self) -> None:
        """Starlette apps use the same middleware."""
        from starlette.middleware import Middleware

        async def home(request: Any) -> PlainTextResponse:
            return PlainTextResponse("hi")

        app = Starlette(
            routes=[Route("/", home)],
            middleware=[Middleware(SeawallMiddleware, layers=[Deny()])],
        )
        client = TestClient(app)
        assert client.get("/").headers["x-deny-checked"] == "1"
        assert client.get("/", headers={"x-deny": "1"}).status_code == 429

    def test_served_on_its_own_it_is_taken_for_asgi3(self) -> None:
        """Servers and SDKs tell ASGI 3 from ASGI 2 by iscoroutinefunction(__call__)."""
        import asyncio

        import uvicorn
        from sentry_sdk.integrations.asgi import _looks_like_asgi3

        async def home(request: Any) -> PlainTextResponse:
            return PlainTextResponse("hi")

        wall = SeawallMiddleware(Starlette(routes=[Route("/", home)]), layers=[Timing()])
        assert asyncio.iscoroutinefunction(wall.__call__)
        config = uvicorn.Config(app=wall)
        config.load()
        assert config.interface == "asgi3"
        assert _looks_like_asgi3(wall)
        # And it serves as one (an ASGI 2 reading would call it with the scope alone).
        assert TestClient(wall).get("/").text == "hi"


class TestErrors:
    @pytest.mark.parametrize("path", ["/boom", "/sboom"], ids=["async", "sync"])
    def test_exception_captured(self, path: str, logs: list[dict[str, Any]]) -> None:
        """An endpoint's exception is one captured error and a problem+json 500."""
        app = make_app(error_capture=True)
        response = TestClient(app, raise_server_exceptions=False).get(path)
        assert response.status_code == 500
        body = problem(response)
        assert "hunter2" not in response.text
        assert body["request_id"] == response.headers["x-request-id"]
        assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1

    def test_rejected_rendered(self) -> None:
        """A Rejected the app does not handle is rendered as problem+json."""
        response = TestClient(make_app(timing=True)).get("/rejected")
        assert response.status_code == 429
        assert problem(response)["detail"] == "slow down"
        assert response.headers["retry-after"] == "7"
        assert "server-timing" in response.headers

    def test_app_exception_handler_wins(self) -> None:
        """The app's handler for one of our exceptions still runs."""
        response = TestClient(make_app(timing=True)).get("/open")
        assert response.status_code == 503
        assert response.json() == {"mine": "open"}

    @pytest.mark.parametrize("key", [Exception, 500], ids=["Exception", "500"])
    def test_the_apps_own_catch_all_handler_renders_the_500(
        self, key: Any, logs: list[dict[str, Any]]
    ) -> None:
        """Starlette runs an Exception/500 handler outside seawall: it still answers.

        ErrorCapture still logs and counts the error once, and Timing and the
        breaker still see it as a failure.
        """
        import seawall

        app = make_app(error_capture=True, timing=True)

        @app.exception_handler(key)
        async def on_any(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"mine": type(exc).__name__}, status_code=500)

        response = TestClient(app, raise_server_exceptions=False).get("/boom")
        assert (response.status_code, response.json()) == (500, {"mine": "RuntimeError"})
        assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1
        assert seawall.stats(app)["timing"]["routes"]["/boom"]["errors"] == 1

    def test_http_errors_not_captured(self, logs: list[dict[str, Any]]) -> None:
        """404 from the router is FastAPI's answer, not an error."""
        response = TestClient(make_app(error_capture=True)).get("/nowhere")
        assert response.status_code == 404
        assert response.json() == {"detail": "Not Found"}
        assert not [e for e in logs if e["event"] == "seawall.error.captured"]


class TestLayers:
    def test_layer_rejection_and_headers(self) -> None:
        """A layer's Respond goes out before routing, with the layers' headers."""
        client = TestClient(make_app(layers=[Timing(), Deny()]))
        response = client.get("/items/1", headers={"x-deny": "1"})
        assert response.status_code == 429
        assert problem(response)["detail"] == "Slow down."
        assert response.headers["retry-after"] == "7"
        assert "server-timing" in response.headers
        assert client.get("/items/1").headers["x-deny-checked"] == "1"

    def test_body_effects(self) -> None:
        """ReadBody/ReplaceBody reach the endpoint."""
        client = TestClient(make_app(layers=[Upper(limit=16)]))
        assert client.post("/echo", content=b"hello").text == "HELLO"
        assert client.post("/echo", content=b"x" * 17).status_code == 413

    def test_exempt_endpoint(self) -> None:
        """@exempt endpoints skip rejecting layers, keep observing ones."""
        outcomes = Outcomes()
        client = TestClient(make_app(layers=[Timing(), outcomes, Deny()]))
        response = client.get("/free", headers={"x-deny": "1"})
        assert response.status_code == 200
        assert "server-timing" in response.headers
        assert "x-deny-checked" not in response.headers
        assert outcomes.outcomes[-1].route == "/free"
        assert client.get("/items/1", headers={"x-deny": "1"}).status_code == 429
        assert client.get("/nowhere", headers={"x-deny": "1"}).status_code == 429

    def test_exempt_endpoint_of_an_included_router(self) -> None:
        """@exempt reaches endpoints of routers included with a prefix, nested too.

        FastAPI 0.165 stopped copying an included router's routes into
        ``app.routes``: a scan of the top-level routes alone missed them.
        """
        from fastapi import APIRouter

        app = FastAPI()
        app.add_middleware(SeawallMiddleware, layers=[Timing(), Deny()])
        router, inner = APIRouter(), APIRouter()

        @router.get("/free/{id}")
        @exempt
        def free(id: int) -> str:
            return "ok"

        @inner.get("/deep")
        @exempt
        async def deep() -> str:
            return "ok"

        @router.get("/guarded")
        def guarded() -> str:
            return "ok"

        router.include_router(inner, prefix="/in")
        app.include_router(router, prefix="/api")
        client = TestClient(app)
        for path in ("/api/free/3", "/api/in/deep"):
            response = client.get(path, headers={"x-deny": "1"})
            assert response.status_code == 200, path
            assert "server-timing" in response.headers
        assert client.get("/api/guarded", headers={"x-deny": "1"}).status_code == 429
        # The template decides, not the path alone: another method is not exempt.
        assert client.post("/api/free/3", headers={"x-deny": "1"}).status_code == 429


class TestOpenAPI:
    def test_document_adds_problem_responses(self) -> None:
        """document(app) lists the statuses the middleware's layers may send."""
        app = make_app(rate_limit="100/minute", circuit_breaker=True, validation=True)
        document(app)
        paths = app.openapi()["paths"]
        item = paths["/items/{id}"]["get"]["responses"]
        for status in ("429", "503", "413", "415", "422", "400"):
            assert item[status]["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }, status
        assert "200" in item
        assert "429" not in paths["/free"]["get"]["responses"]

    def test_document_keeps_fastapi_422_and_serves_it(self) -> None:
        """FastAPI's own 422 (path/body validation) stays beside ours, also at /openapi.json."""
        app = make_app(validation=True)
        document(app)
        served = TestClient(app).get("/openapi.json").json()
        assert served == app.openapi()
        schema = served["paths"]["/items/{id}"]["get"]["responses"]["422"]
        assert schema["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/HTTPValidationError"
        }
        assert "application/problem+json" in schema["content"]
        components = served["components"]["schemas"]
        assert set(components["Problem"]["required"]) == {"type", "title", "status"}
        assert "HTTPValidationError" in components
        # Without the validation layer, only FastAPI's 422 is documented.
        plain = make_app(timing=True)
        document(plain)
        only = plain.openapi()["paths"]["/items/{id}"]["get"]["responses"]["422"]
        assert set(only["content"]) == {"application/json"}

    def test_document_keeps_what_the_app_documented(self) -> None:
        """A status the route documents itself keeps its description and content."""
        app = FastAPI()
        app.add_middleware(SeawallMiddleware, rate_limit="10/minute")

        @app.get("/x", responses={429: {"description": "Slow down, please"}})
        async def x() -> Any:
            return {}

        document(app)
        entry = app.openapi()["paths"]["/x"]["get"]["responses"]["429"]
        assert entry["description"] == "Slow down, please"
        assert "application/problem+json" in entry["content"]

    def test_document_covers_the_default_stack(self) -> None:
        """With no layer named the middleware runs the recommended stack: its answers too."""
        app = make_app()
        document(app)
        responses = app.openapi()["paths"]["/items/{id}"]["get"]["responses"]
        # Validation (400, 413, 415, 422) and CircuitBreaker (503).
        assert {"400", "413", "415", "422", "503"} <= set(responses), sorted(responses)
        assert "429" not in responses

    def test_document_follows_layer_objects(self) -> None:
        app = make_app(layers=[Timing(), CircuitBreaker()])
        document(app)
        responses = app.openapi()["paths"]["/items/{id}"]["get"]["responses"]
        assert "503" in responses
        assert "413" not in responses

    def test_document_gives_validated_routes_their_body(self) -> None:
        """Depends(validate(Model)) reads the body FastAPI cannot see: /docs shows it anyway."""
        from fastapi import Depends
        from pydantic import BaseModel

        from seawall.fastapi import validate

        class Address(BaseModel):
            city: str

        class Member(BaseModel):
            name: str
            address: Address

        app = make_app(timing=True)

        member_body = Depends(validate(Member))

        @app.post("/members", status_code=201)
        async def create(member: Member = member_body) -> Any:
            return member.model_dump()

        @app.post("/raw", dependencies=[Depends(validate({"type": "object"}))])
        async def raw_body() -> Any:
            return {}

        document(app)
        spec = app.openapi()
        body = spec["paths"]["/members"]["post"]["requestBody"]
        assert body["required"] is True
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/Member"
        schemas = spec["components"]["schemas"]
        assert schemas["Member"]["properties"]["address"] == {
            "$ref": "#/components/schemas/Address"
        }
        assert "city" in schemas["Address"]["properties"]
        raw = spec["paths"]["/raw"]["post"]["requestBody"]["content"]["application/json"]
        assert raw["schema"] == {"type": "object"}
        client = TestClient(app)
        assert (
            client.post("/members", json={"name": "a", "address": {"city": "b"}}).status_code == 201
        )

    def test_problem_responses_helper(self) -> None:
        """problem_responses() gives a responses= mapping for one route."""
        app = FastAPI()

        @app.get("/x", responses=problem_responses(429, 503))
        async def x() -> Any:
            return {}

        responses = app.openapi()["paths"]["/x"]["get"]["responses"]
        assert set(responses) >= {"429", "503"}
        schema = responses["429"]["content"]["application/problem+json"]["schema"]
        assert schema["required"] == ["type", "title", "status"]


class TestIncludedRouters:
    """Routes of included routers keep their prefixes in templates, buckets and OpenAPI.

    FastAPI 0.165 put the router's own, unprefixed route in
    ``scope["route"]``: one router included at ``/v1`` and ``/v2`` looked
    like one route, ``/items/{id}``.
    """

    @staticmethod
    def make() -> FastAPI:
        from fastapi import APIRouter, Depends

        from seawall.fastapi import limit

        app = FastAPI()
        router = APIRouter()

        @router.get("/items/{id}", dependencies=[Depends(limit("2/minute"))])
        def item(id: int) -> int:
            return id

        app.include_router(router, prefix="/v1")
        app.include_router(router, prefix="/v2")
        app.add_middleware(SeawallMiddleware, layers=[Timing(), CircuitBreaker()])
        return app

    def test_templates_carry_the_prefix(self) -> None:
        import seawall

        app = self.make()
        client = TestClient(app)
        assert client.get("/v1/items/1").status_code == 200
        assert client.get("/v2/items/2").status_code == 200
        routes = seawall.stats(app)["timing"]["routes"]
        assert set(routes) == {"/v1/items/{id}", "/v2/items/{id}"}

    def test_each_prefix_has_its_own_bucket(self) -> None:
        client = TestClient(self.make())
        assert [client.get("/v1/items/1").status_code for _ in range(3)] == [200, 200, 429]
        assert [client.get("/v2/items/1").status_code for _ in range(3)] == [200, 200, 429]

    def test_document_covers_included_routes(self) -> None:
        app = self.make()
        document(app)
        paths = app.openapi()["paths"]
        for prefix in ("/v1", "/v2"):
            responses = paths[f"{prefix}/items/{{id}}"]["get"]["responses"]
            # The dependency's 429 and the middleware breaker's 503.
            assert {"429", "503"} <= set(responses), (prefix, sorted(responses))


class TestMountedApps:
    """Routes of mounted apps carry the mount's path in templates, buckets and breakers.

    A mounted app's route knows only its own path: ``/orders/{oid}`` under
    ``/legacy`` had the template of the outer app's ``/orders/{oid}``.
    """

    @staticmethod
    def make() -> FastAPI:
        from fastapi import Depends

        from seawall.fastapi import limit

        app = FastAPI()
        app.add_middleware(
            SeawallMiddleware,
            layers=[Timing(), ErrorCapture(), CircuitBreaker(per="route", fail_max=2)],
        )
        legacy = FastAPI()

        @legacy.get("/orders/{oid}", dependencies=[Depends(limit("2/minute"))])
        async def legacy_order(oid: int) -> Any:
            return {"oid": oid}

        @legacy.get("/broken/{oid}")
        async def legacy_broken(oid: int) -> Any:
            raise RuntimeError("legacy backend down")

        app.mount("/v1", legacy)
        app.mount("/v2", legacy)

        @app.get("/orders/{oid}")
        @app.get("/broken/{oid}")
        async def order(oid: int) -> Any:
            return {"oid": oid}

        return app

    def test_templates_carry_the_mount(self) -> None:
        import seawall

        app = self.make()
        client = TestClient(app)
        for path in ("/v1/orders/1", "/v2/orders/2", "/orders/3"):
            assert client.get(path).status_code == 200
        routes = seawall.stats(app)["timing"]["routes"]
        assert set(routes) == {"/v1/orders/{oid}", "/v2/orders/{oid}", "/orders/{oid}"}

    def test_each_mount_has_its_own_bucket(self) -> None:
        client = TestClient(self.make())
        assert [client.get("/v1/orders/1").status_code for _ in range(3)] == [200, 200, 429]
        assert [client.get("/v2/orders/1").status_code for _ in range(3)] == [200, 200, 429]

    def test_a_failing_mounted_route_opens_only_its_own_breaker(self) -> None:
        client = TestClient(self.make(), raise_server_exceptions=False)
        # The first request counts under its raw path: the template is learnt from it.
        statuses = [client.get("/v1/broken/0").status_code for _ in range(4)]
        assert statuses == [500, 500, 500, 503]
        assert client.get("/broken/2").status_code == 200
        assert client.get("/v2/broken/2").status_code == 500

    def test_starlette_mounts_under_a_plain_wall(self) -> None:
        from starlette.routing import Mount

        from seawall import Seawall

        async def hello(request: Any) -> PlainTextResponse:
            return PlainTextResponse("hi")

        sub = Starlette(routes=[Route("/x/{y}", hello)])
        inner = Starlette(routes=[Route("/x/{y}", hello), Mount("/sub", sub)])
        timing = Timing()
        client = TestClient(Seawall(inner, layers=[timing]))
        assert client.get("/sub/x/1").status_code == client.get("/x/1").status_code == 200
        assert set(timing.stats()["routes"]) == {"/sub/x/{y}", "/x/{y}"}


def test_a_websocket_client_closing_is_not_a_breaker_failure() -> None:
    """The tutorial's receive loop raises WebSocketDisconnect as the client closes: not counted."""
    from fastapi import Depends
    from starlette.websockets import WebSocketDisconnect

    from seawall._breaker.registry import breakers
    from seawall.fastapi import breaker

    app = FastAPI()
    app.add_middleware(SeawallMiddleware, error_capture=True)

    @app.websocket("/chat", dependencies=[Depends(breaker("ws-chat-close", fail_max=2))])
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            await websocket.send_text((await websocket.receive_text()).upper())

    client = TestClient(app)
    echoed: list[str] = []

    def session() -> None:
        with client.websocket_connect("/chat") as ws:
            ws.send_text("hi")
            echoed.append(ws.receive_text())

    try:
        for _ in range(4):
            # Leaving the block closes with 1000; TestClient re-raises the app's disconnect.
            with pytest.raises(WebSocketDisconnect):
                session()
            assert echoed[-1] == "HI"
        stats = breakers["ws-chat-close"].stats()
        assert (stats["state"], stats["failures"]) == ("closed", 0)
    finally:
        breakers.clear()


def test_a_request_fastapi_refuses_is_not_a_breaker_failure() -> None:
    """FastAPI's 422 (a bad query parameter) is the client's doing, like a 4xx HTTPException."""
    from fastapi import Depends

    from seawall._breaker.registry import breakers
    from seawall.fastapi import breaker

    app = FastAPI()
    app.add_middleware(SeawallMiddleware, error_capture=True)

    @app.get("/n", dependencies=[Depends(breaker("bad-query", fail_max=2))])
    async def n(count: int) -> int:
        return count

    client = TestClient(app)
    try:
        assert [client.get("/n?count=x").status_code for _ in range(3)] == [422, 422, 422]
        assert client.get("/n?count=2").status_code == 200
        stats = breakers["bad-query"].stats()
        assert (stats["state"], stats["failures"]) == ("closed", 0)
    finally:
        breakers.clear()


@pytest.mark.parametrize("storage", ["memory://", "redis"])
def test_a_named_route_limit_is_one_bucket_for_its_routes(
    storage: str, request: pytest.FixtureRequest
) -> None:
    """limit(..., name="api") on a router: its routes share the named bucket, memory as Redis."""
    import uuid

    from fastapi import APIRouter, Depends

    from seawall.fastapi import limit

    options: dict[str, Any] = {"storage": "memory://"}
    if storage == "redis":
        options = {
            "storage": request.getfixturevalue("redis_url"),
            "key_prefix": request.getfixturevalue("key_prefix"),
        }
    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=[Timing()])
    name = f"api-{uuid.uuid4().hex[:8]}"
    router = APIRouter(dependencies=[Depends(limit("2/minute", name=name, **options))])
    router.get("/a")(lambda: {})
    router.get("/b")(lambda: {})
    app.include_router(router)
    client = TestClient(app)
    assert [client.get(p).status_code for p in ("/a", "/a", "/b")] == [200, 200, 429]


@pytest.mark.parametrize("which", ["limit", "validate"])
def test_dependencies_without_the_middleware_say_so(which: str) -> None:
    """Without SeawallMiddleware their 429/422 would be a bare 500: the error names the fix."""
    from fastapi import Depends

    import seawall.fastapi as adapter

    app = FastAPI()
    dependency = adapter.limit("5/minute") if which == "limit" else adapter.validate()
    app.post("/x", dependencies=[Depends(dependency)])(lambda: {})
    with pytest.raises(ConfigurationError, match=rf"fastapi\.{which}\(\) needs the middleware"):
        TestClient(app).post("/x", json={})
