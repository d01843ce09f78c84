"""Edges of the Django and Flask adapters, each found wrong once.

A whole async class-based view under ``@limit``/``@breaker`` answered a
``TypeError`` 500; ``method_decorator(exempt)`` on one method did nothing;
guards on ``as_view()`` functions and on Flask ``MethodView``\\ s were all
named ``View.as_view.<locals>.view``, so unrelated views shared one bucket or
breaker; a Flask app's own ``RateLimited`` handler turned every other refusal
into a 500.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View
from flask import Flask
from flask.views import MethodView

from seawall.exceptions import RateLimited
from seawall.layers import RateLimit
from seawall.resilience import breakers

urlpatterns: list[Any] = []


def _serve(patterns: list[Any], **seawall: Any) -> Any:
    global urlpatterns
    urlpatterns = patterns
    return override_settings(ROOT_URLCONF=__name__, SEAWALL=seawall or {"timing": True})


def test_django_async_class_views_under_limit_and_breaker() -> None:
    from seawall.django import breaker, limit

    name = f"cbv-{uuid.uuid4().hex[:8]}"

    @limit("1/minute")
    class Report(View):
        async def get(self, request: Any) -> HttpResponse:
            return HttpResponse(b"report")

    @breaker(name, fail_max=2)
    class Pay(View):
        async def get(self, request: Any) -> HttpResponse:
            return HttpResponse(b"down", status=503)

    async def run() -> list[int]:
        client = AsyncClient()
        report = [(await client.get("/report/")).status_code for _ in range(2)]
        pay = [(await client.get("/pay/")).status_code for _ in range(3)]
        return report + pay

    with _serve([path("report/", Report.as_view()), path("pay/", Pay.as_view())]):
        statuses = asyncio.run(run())
    assert statuses[:2] == [200, 429]
    assert statuses[2:] == [503, 503, 503]
    assert breakers[name].current_state == "open"


def test_django_method_decorator_exempt_on_one_method() -> None:
    from seawall.django import exempt

    class Free(View):
        @method_decorator(exempt)
        def get(self, request: Any) -> HttpResponse:
            return HttpResponse(b"ok")

    with _serve([path("free/", Free.as_view())], layers=[RateLimit("1/minute")]):
        client = Client()
        assert [client.get("/free/").status_code for _ in range(3)] == [200, 200, 200]


def test_django_guards_on_as_view_functions_keep_apart() -> None:
    from seawall.django import breaker

    class Orders(View):
        def get(self, request: Any) -> HttpResponse:
            return HttpResponse(b"down", status=503)

    class Invoices(View):
        def get(self, request: Any) -> HttpResponse:
            return HttpResponse(b"ok")

    options = {"failure_rate_threshold": 0.5, "minimum_number_of_calls": 2}
    patterns = [
        path("orders/", breaker(**options)(Orders.as_view())),
        path("invoices/", breaker(**options)(Invoices.as_view())),
    ]
    with _serve(patterns):
        client = Client()
        for _ in range(3):
            client.get("/orders/")
        assert client.get("/invoices/").status_code == 200


def test_flask_method_views_keep_their_own_breakers() -> None:
    from seawall.flask import Seawall

    app = Flask(__name__)
    guard = Seawall(app, layers=[])
    options = {"failure_rate_threshold": 0.5, "minimum_number_of_calls": 2}

    class Orders(MethodView):
        decorators: ClassVar[list[Any]] = [guard.breaker(**options)]

        def get(self) -> Any:
            return "down", 503

    class Invoices(MethodView):
        decorators: ClassVar[list[Any]] = [guard.breaker(**options)]

        def get(self) -> Any:
            return "ok"

    app.add_url_rule(f"/o-{id(app)}", view_func=Orders.as_view(f"orders{id(app)}"))
    app.add_url_rule(f"/i-{id(app)}", view_func=Invoices.as_view(f"invoices{id(app)}"))
    client = app.test_client()
    for _ in range(3):
        client.get(f"/o-{id(app)}", buffered=True)
    assert client.get(f"/i-{id(app)}", buffered=True).status_code == 200


def test_flask_apps_own_handler_for_one_refusal_keeps_the_others() -> None:
    from seawall.flask import Seawall

    app = Flask(__name__)

    @app.errorhandler(RateLimited)
    def mine(exc: RateLimited) -> Any:
        return {"error": "slow down"}, 429

    guard = Seawall(app, layers=[])
    name = f"own-handler-{uuid.uuid4().hex[:8]}"

    @app.get("/login")
    @guard.limit("1/minute")
    def login() -> str:
        return "ok"

    @app.get("/pay")
    @guard.breaker(name, fail_max=1)
    def pay() -> Any:
        return "down", 503

    client = app.test_client()
    assert client.get("/login", buffered=True).status_code == 200
    assert client.get("/login", buffered=True).get_json() == {"error": "slow down"}
    client.get("/pay", buffered=True)
    refused = client.get("/pay", buffered=True)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"


def test_django_view_errors_still_send_got_request_exception() -> None:
    """Sentry's Django integration, ADMINS mails and the test client listen to it."""
    from django.core.signals import got_request_exception

    def boom(request: Any) -> HttpResponse:
        raise RuntimeError("boom")

    heard: list[Any] = []

    def listen(sender: Any, request: Any, **kwargs: Any) -> None:
        heard.append(request.path)

    got_request_exception.connect(listen)
    try:
        with _serve([path("boom/", boom)], error_capture=True):
            response = Client(raise_request_exception=False).get("/boom/")
    finally:
        got_request_exception.disconnect(listen)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    assert heard == ["/boom/"]


def test_layers_that_are_no_layers_are_refused() -> None:
    import pytest
    from django.core.exceptions import ImproperlyConfigured

    from seawall import ConfigurationError, Seawall, Timing
    from seawall.django import SeawallMiddleware

    def app(environ: Any, start_response: Any) -> list[bytes]:  # pragma: no cover
        return []

    for wrong in (Timing(), "timing"):
        with pytest.raises(ConfigurationError, match="expected a list"):
            Seawall(app, layers=wrong)  # type: ignore[arg-type]
    for layers in (Timing(), "timing"):
        with (
            override_settings(SEAWALL={"layers": layers}),
            pytest.raises(ImproperlyConfigured, match="SEAWALL: layers"),
        ):
            SeawallMiddleware(lambda request: HttpResponse(b"ok"))


def test_flask_exempt_reaches_subdomain_routes() -> None:
    from seawall.flask import Seawall

    app = Flask(__name__, subdomain_matching=True)
    app.config["SERVER_NAME"] = "example.com"
    guard = Seawall(app, rate_limit="1/minute")

    @app.get("/status", subdomain="api")
    @guard.exempt
    def status() -> str:
        return "ok"

    client = app.test_client()
    statuses = [
        client.get("/status", base_url="http://api.example.com", buffered=True).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
