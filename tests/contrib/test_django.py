"""The Django middleware, through Django's own test clients (sync and async)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client, override_settings

from seawall.django import SeawallMiddleware, get_wall
from seawall.layers import ErrorCapture, Timing
from tests.contrib.layers import Deadline, Deny, MaxBody, Outcomes, Upper


@pytest.fixture
def seawall_settings() -> Iterator[Any]:
    """``seawall_settings(**SEAWALL)``: override settings.SEAWALL for the test."""
    overrides: list[Any] = []

    def apply(**config: Any) -> None:
        o = override_settings(SEAWALL=config)
        o.enable()
        overrides.append(o)

    yield apply
    for o in reversed(overrides):
        o.disable()


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/problem+json"
    return json.loads(response.content)  # type: ignore[no-any-return]


def aget(path: str, **kw: Any) -> Any:
    async def run() -> Any:
        return await AsyncClient().get(path, **kw)

    return asyncio.run(run())


class TestWiring:
    def test_capabilities(self) -> None:
        """One class, both modes: Django picks without an adapter thread hop."""
        assert SeawallMiddleware.sync_capable is True
        assert SeawallMiddleware.async_capable is True

        async def async_next(request: Any) -> Any:
            return None

        from asgiref.sync import iscoroutinefunction

        assert iscoroutinefunction(SeawallMiddleware(async_next))
        assert not iscoroutinefunction(SeawallMiddleware(lambda request: None))

    def test_settings_validated_naming_the_key(self, seawall_settings: Any) -> None:
        """A bad SEAWALL key raises ImproperlyConfigured naming it."""
        seawall_settings(timming=True)
        with pytest.raises(ImproperlyConfigured, match="timming"):
            Client().get("/items/1")
        seawall_settings(timing={"slow": "fast"})
        with pytest.raises(ImproperlyConfigured, match=r"timing\.slow"):
            Client().get("/items/1")
        # A layer table beside layer objects would be dropped silently.
        seawall_settings(layers=[Timing()], rate_limit="1/minute")
        with pytest.raises(ImproperlyConfigured, match=r"not both.*rate_limit"):
            Client().get("/items/1")

    @pytest.mark.parametrize("kind", ["wsgi", "asgi"])
    def test_bad_settings_stop_startup(self, seawall_settings: Any, kind: str) -> None:
        """get_wsgi/asgi_application() build the middleware at startup: a typo fails there."""
        from django.core.asgi import get_asgi_application
        from django.core.wsgi import get_wsgi_application

        seawall_settings(rate_limit={"limt": "5/minute"})
        build = get_wsgi_application if kind == "wsgi" else get_asgi_application
        with pytest.raises(ImproperlyConfigured, match=r"SEAWALL: .*rate_limit\.limt"):
            build()

    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_config_and_request_id(self, seawall_settings: Any, mode: str) -> None:
        """SEAWALL builds the layers; the request id is bound for the view and echoed."""
        seawall_settings(timing={"response_time_header": True})
        response = Client().get("/items/3") if mode == "sync" else aget("/items/3")
        assert response.status_code == 200
        assert "X-Response-Time" in response.headers
        assert "Server-Timing" in response.headers
        assert response.json()["rid"] == response.headers["X-Request-ID"]
        assert [type(layer) for layer in get_wall().layers] == [Timing]
        assert get_wall().interface == ("wsgi" if mode == "sync" else "asgi")

    @pytest.mark.parametrize("mode", ["sync", "async"])
    @pytest.mark.parametrize("path", ["/items/4", "/aitems/4", "/cbv/4"])
    def test_route_template(self, seawall_settings: Any, mode: str, path: str) -> None:
        """Sync, async and class-based views report the route template."""
        outcomes = Outcomes()
        seawall_settings(layers=[outcomes])
        response = Client().get(path) if mode == "sync" else aget(path)
        assert response.status_code == 200
        outcome = outcomes.outcomes[-1]
        assert outcome.route == path.rsplit("/", 1)[0] + "/<int:id>"
        assert outcome.templated
        assert outcome.status == 200

    def test_streaming_completes_at_close(self, seawall_settings: Any) -> None:
        """A streaming response finishes its bookkeeping when it is closed."""
        outcomes = Outcomes()
        seawall_settings(layers=[outcomes])
        response = Client().get("/stream")
        assert b"".join(response.streaming_content) == b"abc"
        response.close()
        assert [o.route for o in outcomes.outcomes] == ["/stream"]

    def test_a_streamed_body_sees_the_request_id(self, seawall_settings: Any) -> None:
        """The view's generator runs after the middleware returned: still the request's id."""
        import seawall

        seawall_settings(timing=True)
        response = Client().get("/stream-id")
        body = b"".join(response.streaming_content)
        response.close()
        assert body == b"id=" + response.headers["X-Request-ID"].encode()
        assert seawall.request_id() is None


class TestErrors:
    @pytest.mark.parametrize("mode", ["sync", "async"])
    @pytest.mark.parametrize("path", ["/boom", "/aboom"])
    def test_view_exception_captured(
        self, seawall_settings: Any, logs: list[dict[str, Any]], mode: str, path: str
    ) -> None:
        """A view's exception becomes one captured error and a problem+json 500."""
        seawall_settings(error_capture=True)
        client: Any = Client(raise_request_exception=False)
        if mode == "sync":
            response = client.get(path)
        else:

            async def run() -> Any:
                return await AsyncClient(raise_request_exception=False).get(path)

            response = asyncio.run(run())
        assert response.status_code == 500
        body = problem(response)
        assert body["type"] == "urn:seawall:problem:internal-error"
        assert b"hunter2" not in response.content
        assert body["request_id"] == response.headers["X-Request-ID"]
        assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1

    @pytest.mark.parametrize(
        ("path", "status"),
        [("/missing", 404), ("/denied", 403), ("/suspicious", 400), ("/bad", 400)],
    )
    def test_django_exceptions_keep_their_meaning(
        self, seawall_settings: Any, logs: list[dict[str, Any]], path: str, status: int
    ) -> None:
        """Http404, PermissionDenied, SuspiciousOperation and BadRequest stay Django's answers."""
        seawall_settings(error_capture=True)
        response = Client().get(path)
        assert response.status_code == status
        assert response.headers["Content-Type"].startswith("text/html")
        assert not [e for e in logs if e["event"] == "seawall.error.captured"]

    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_rejected_rendered(self, seawall_settings: Any, mode: str) -> None:
        """A Rejected raised by a view is its problem+json."""
        seawall_settings(timing=True)
        response = Client().get("/rejected") if mode == "sync" else aget("/rejected")
        assert response.status_code == 429
        body = problem(response)
        assert body["detail"] == "slow down"
        assert body["instance"] == "/rejected"
        assert response.headers["Retry-After"] == "7"
        assert "Server-Timing" in response.headers

    def test_debug_keeps_django_page_but_captures(
        self, seawall_settings: Any, logs: list[dict[str, Any]]
    ) -> None:
        """In DEBUG, Django's technical 500 page stays; the error is still captured."""
        seawall_settings(error_capture=True)
        with override_settings(DEBUG=True):
            response = Client(raise_request_exception=False).get("/boom")
        assert response.status_code == 500
        assert response.headers["Content-Type"].startswith("text/html")
        assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1

    def test_the_projects_handler500_renders_the_500(
        self, seawall_settings: Any, logs: list[dict[str, Any]]
    ) -> None:
        """A root URLconf's own handler500 (a branded page) answers; the error is captured."""
        seawall_settings(error_capture=True)
        with override_settings(DEBUG=False, ROOT_URLCONF="tests.contrib.django_urls_handler500"):
            response = Client(raise_request_exception=False).get("/boom")
        assert (response.status_code, response.content) == (500, b"<h1>Sorry</h1>")
        assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1


def test_a_body_over_djangos_own_cap_names_djangos_setting(seawall_settings: Any) -> None:
    """Past DATA_UPLOAD_MAX_MEMORY_SIZE (under seawall's max_body) the 413 names Django's cap.

    It named max_body, so raising max_body looked like the fix.
    """
    seawall_settings(validation={"max_body": "10 KB", "threats": "block"})
    body = b'{"text": "' + b"a" * 500 + b'"}'
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        response = Client().post("/echo", body, content_type="application/json")
    assert response.status_code == 413
    doc = problem(response)
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in doc["detail"]
    assert doc["max_body"] == 100


class TestRoutes:
    def test_re_path_routes_have_templates(self, seawall_settings: Any) -> None:
        """A re_path route's regex becomes a template: one per-route breaker for every id.

        The regex itself matched no path, so each id got a breaker of its own
        and, past max_routes, failing ids shared "<other>" with healthy routes.
        """
        from seawall import CircuitBreaker

        seawall_settings(layers=[Timing(), ErrorCapture(), CircuitBreaker(per="route", fail_max=3)])
        client = Client(raise_request_exception=False)
        statuses = [client.get(f"/rx/{pk}/").status_code for pk in range(6)]
        # The first request counts under its raw path: the template is learnt from it.
        assert statuses == [500, 500, 500, 500, 503, 503]
        assert client.get("/rxpages/home/").status_code == 200
        routes = get_wall().stats()["timing"]["routes"]
        assert {"/rx/<pk>/", "/rxpages/<slug>/"} <= set(routes)

    def test_exempt_views_under_i18n_patterns_whatever_language_is_active(
        self, seawall_settings: Any
    ) -> None:
        """seawall resolves before LocaleMiddleware: /fr/... resolves though English is active."""
        from django.conf.urls.i18n import i18n_patterns
        from django.http import HttpResponse
        from django.urls import path
        from django.utils import translation

        from seawall.django import exempt

        @exempt
        def status(request: Any) -> Any:
            return HttpResponse(b"ok")

        seawall_settings(rate_limit="2/minute")
        languages = [("en", "English"), ("fr", "French")]
        with override_settings(USE_I18N=True, LANGUAGE_CODE="en", LANGUAGES=languages):
            urls = type("urls", (), {"urlpatterns": i18n_patterns(path("status/", status))})
            middleware = [
                "seawall.django.SeawallMiddleware",
                "django.middleware.locale.LocaleMiddleware",
            ]
            with override_settings(ROOT_URLCONF=urls, MIDDLEWARE=middleware):
                client = Client()
                statuses = []
                for _ in range(4):
                    # What the thread served last: LocaleMiddleware leaves it active.
                    translation.activate("en")
                    statuses.append(client.get("/fr/status/").status_code)
                translation.deactivate()
        assert statuses == [200, 200, 200, 200]


class TestLayers:
    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_layer_rejection(self, seawall_settings: Any, mode: str) -> None:
        """A layer's Respond is sent before the view, with the layers' headers."""
        seawall_settings(layers=[Timing(), Deny()])
        kw = {"headers": {"x-deny": "1"}}
        response = Client().get("/items/1", **kw) if mode == "sync" else aget("/items/1", **kw)
        assert response.status_code == 429
        assert problem(response)["detail"] == "Slow down."
        assert response.headers["Retry-After"] == "7"
        assert response.headers["X-Deny-Policy"] == "test"
        assert "Server-Timing" in response.headers
        ok = Client().get("/items/1")
        assert ok.headers["X-Deny-Checked"] == "1"

    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_body_effects(self, seawall_settings: Any, mode: str) -> None:
        """ReadBody/ReplaceBody: the view reads the replaced body."""
        seawall_settings(layers=[Upper(limit=16)])
        ctype = "application/octet-stream"
        if mode == "sync":
            response = Client().post("/echo", b"hello", content_type=ctype)
            big = Client().post("/echo", b"x" * 17, content_type=ctype)
        else:

            async def run() -> Any:
                c = AsyncClient()
                return (
                    await c.post("/echo", b"hello", content_type=ctype),
                    await c.post("/echo", b"x" * 17, content_type=ctype),
                )

            response, big = asyncio.run(run())
        assert response.content == b"HELLO"
        assert big.status_code == 413

    def test_max_body(self, seawall_settings: Any) -> None:
        """A body over request.max_body is a 413 problem, the view never reads it."""
        seawall_settings(layers=[MaxBody(limit=8)])
        ctype = "application/octet-stream"
        assert Client().post("/echo", b"12345678", content_type=ctype).content == b"12345678"
        response = Client().post("/echo", b"123456789", content_type=ctype)
        assert response.status_code == 413
        assert problem(response)["max_body"] == 8

    def test_async_deadline(self, seawall_settings: Any) -> None:
        """An async view past request.deadline is cancelled and answered 504."""
        outcomes = Outcomes()
        seawall_settings(layers=[outcomes, Deadline(0.05)])
        response = aget("/slow?s=2")
        assert response.status_code == 504
        assert problem(response)["type"] == "urn:seawall:problem:timeout"
        assert outcomes.outcomes[-1].timed_out

    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_exempt_view(self, seawall_settings: Any, mode: str) -> None:
        """An @exempt view skips rejecting layers, keeps observing ones."""
        outcomes = Outcomes()
        seawall_settings(layers=[Timing(), outcomes, Deny()])
        kw = {"headers": {"x-deny": "1"}}
        response = Client().get("/free", **kw) if mode == "sync" else aget("/free", **kw)
        assert response.status_code == 200
        assert "Server-Timing" in response.headers
        assert "X-Deny-Checked" not in response.headers
        assert outcomes.outcomes[-1].route == "/free"
        assert Client().get("/items/1", **kw).status_code == 429
        assert Client().get("/nowhere", **kw).status_code == 429


class TestLogging:
    @pytest.mark.parametrize(("mode", "path"), [("sync", "/logged"), ("async", "/alogged")])
    def test_view_log_lines_carry_the_request_id(
        self, seawall_settings: Any, mode: str, path: str
    ) -> None:
        """structlog lines logged in a view (sync or async) carry the request's id."""
        import structlog
        from structlog.testing import LogCapture

        seawall_settings(timing=True)
        capture = LogCapture()
        structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
        try:
            headers = {"X-Request-ID": f"dj-{mode}"}
            response = (
                Client().get(path, headers=headers)
                if mode == "sync"
                else aget(path, headers=headers)
            )
            structlog.get_logger("app").info("outside")
        finally:
            structlog.reset_defaults()
        assert response.headers["X-Request-ID"] == f"dj-{mode}"
        inside, outside = capture.entries
        assert inside["event"] == "in.view"
        assert inside["view"] == mode
        assert inside["request_id"] == f"dj-{mode}"
        assert "request_id" not in outside

    def test_seawall_lines_carry_request_and_route(
        self, seawall_settings: Any, logs: list[dict[str, Any]]
    ) -> None:
        """seawall's own lines about a Django request name its id and URL pattern."""
        seawall_settings(error_capture=True)
        response = Client(raise_request_exception=False).get(
            "/boom", headers={"X-Request-ID": "dj-err"}
        )
        assert response.status_code == 500
        (captured,) = [e for e in logs if e["event"] == "seawall.error.captured"]
        assert captured["request_id"] == "dj-err"
        assert captured["route"] == "/boom"
        assert captured["method"] == "GET"


class TestProxySetupWarnings:
    """seawall's proxy set-up check reads Django's META under ASGI too."""

    @staticmethod
    def _events(logs: list[dict[str, Any]]) -> list[str]:
        return [str(e["event"]) for e in logs if str(e["event"]).startswith("seawall.client.")]

    def test_uvicorn_rewrite_in_front_of_django_asgi_is_reported(
        self, seawall_settings: Any, logs: list[dict[str, Any]]
    ) -> None:
        import httpx
        from django.core.asgi import get_asgi_application
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        seawall_settings(rate_limit={"default": "1000/minute"}, trusted_proxies=["10.0.0.0/8"])
        app = ProxyHeadersMiddleware(get_asgi_application(), trusted_hosts="*")  # type: ignore[arg-type]

        async def run() -> int:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                r = await c.get("/items/3", headers={"X-Forwarded-For": "10.1.2.3"})
                return r.status_code

        assert asyncio.run(run()) == 200
        assert self._events(logs) == ["seawall.client.already_rewritten"]

    def test_async_test_client_port_zero_is_not_a_rewrite(
        self, seawall_settings: Any, logs: list[dict[str, Any]]
    ) -> None:
        # Django's AsyncClient gives every request client port 0, as uvicorn's
        # rewrite does; the peer is not in the chain, so it is no rewrite.
        seawall_settings(rate_limit={"default": "1000/minute"}, trusted_proxies=["127.0.0.1"])
        response = aget("/items/3", headers={"X-Forwarded-For": "198.51.100.7"})
        assert response.status_code == 200
        assert self._events(logs) == []

    def test_untrusted_forwarding_under_wsgi_is_reported(
        self, seawall_settings: Any, logs: list[dict[str, Any]]
    ) -> None:
        seawall_settings(rate_limit={"default": "1000/minute"})
        response = Client().get("/items/3", headers={"X-Forwarded-For": "198.51.100.7"})
        assert response.status_code == 200
        assert self._events(logs) == ["seawall.client.forwarding_ignored"]
