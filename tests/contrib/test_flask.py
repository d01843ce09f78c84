"""The Flask extension, through Flask's own test client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Blueprint, Flask, abort, request

from seawall.exceptions import ConfigurationError, RateLimited
from seawall.flask import Seawall
from seawall.layers import ErrorCapture, Timing
from tests.contrib.layers import Deny, Outcomes, Upper


def make_app(*, testing: bool = True, layers: list[Any] | None = None, **config: Any) -> Flask:
    app = Flask(__name__)
    app.testing = testing
    if config:
        app.config["SEAWALL"] = config
    Seawall(app, layers=layers)

    @app.get("/items/<int:id>")
    def item(id: int) -> Any:
        return {"id": id, "rid": request.environ.get("seawall.request_id")}

    @app.get("/aitems/<int:id>")
    async def aitem(id: int) -> Any:
        return {"id": id}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom with secret hunter2")

    @app.get("/forbid")
    def forbid() -> Any:
        abort(403)

    @app.get("/rejected")
    def rejected() -> Any:
        raise RateLimited("slow down", retry_after=7)

    @app.post("/echo")
    def echo() -> Any:
        return request.get_data()

    @app.get("/free")
    @Seawall.exempt
    def free() -> Any:
        return "free"

    return app


def get(app: Flask, path: str, **kw: Any) -> Any:
    return app.test_client().get(path, buffered=True, **kw)


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/problem+json"
    return json.loads(response.data)  # type: ignore[no-any-return]


class TestWiring:
    def test_config_from_app_config(self) -> None:
        """app.config["SEAWALL"] builds the layers, in the config schema."""
        app = make_app(timing={"response_time_header": True}, error_capture=True)
        wall = app.extensions["seawall"]._wall
        assert [type(layer) for layer in wall.layers] == [Timing, ErrorCapture]
        response = get(app, "/items/3")
        assert response.status_code == 200
        assert "X-Response-Time" in response.headers
        assert response.headers["X-Request-ID"] == response.json["rid"]

    def test_init_app_later(self) -> None:
        """guard = Seawall(); guard.init_app(app) works like Seawall(app)."""
        guard = Seawall(layers=[Timing()])
        app = Flask(__name__)
        app.get("/")(lambda: "hi")
        guard.init_app(app)
        assert "Server-Timing" in get(app, "/").headers
        assert guard.wall is app.extensions["seawall"]._wall

    def test_one_extension_two_apps(self, logs: list[dict[str, Any]]) -> None:
        """init_app on two apps: each keeps its own wall and captures its own errors."""
        guard = Seawall(layers=None, error_capture=True)
        apps = [Flask(f"app{i}") for i in (1, 2)]
        for app in apps:
            app.get("/boom")(lambda: 1 / 0)
            guard.init_app(app)
        walls = [app.extensions["seawall"]._wall for app in apps]
        assert walls[0] is not walls[1]
        for app in apps:
            response = get(app, "/boom")
            assert response.status_code == 500
            assert problem(response)["type"].endswith("internal-error")
        assert [w.stats()["errors"]["captured"] for w in walls] == [1, 1]

    def test_unknown_key_names_it(self) -> None:
        """A typo in app.config["SEAWALL"] fails at init naming the key."""
        with pytest.raises(ConfigurationError, match="timming"):
            make_app(timming=True)

    def test_route_template_in_stats(self) -> None:
        """Statistics key by the rule, not the raw path."""
        outcomes = Outcomes()
        app = make_app(layers=[Timing(), outcomes])
        for n in (1, 2, 3):
            assert get(app, f"/items/{n}").status_code == 200
        assert get(app, "/nowhere").status_code == 404
        routes = [(o.route, o.templated) for o in outcomes.outcomes]
        assert routes[:3] == [("/items/<int:id>", True)] * 3
        assert routes[3] == ("/nowhere", False)
        timing = app.extensions["seawall"]._wall.stats()["timing"]
        assert timing["routes"]["/items/<int:id>"]["count"] == 3

    def test_route_template_of_a_view_with_several_rules(self) -> None:
        """One view under two rules (and a blueprint's) keys by the rule that matched."""
        outcomes = Outcomes()
        app = Flask(__name__)
        Seawall(app, layers=[outcomes])

        @app.get("/old/<int:id>")
        @app.get("/new/<int:id>")
        def moved(id: int) -> Any:
            return {"id": id}

        shop = Blueprint("shop", __name__, url_prefix="/shop")
        shop.get("/cart/<name>")(lambda name: name)
        app.register_blueprint(shop)
        for path in ("/old/1", "/new/2", "/old/3", "/shop/cart/x"):
            assert get(app, path).status_code == 200
        assert [o.route for o in outcomes.outcomes] == [
            "/old/<int:id>",
            "/new/<int:id>",
            "/old/<int:id>",
            "/shop/cart/<name>",
        ]

    def test_async_view(self) -> None:
        """Async views run under the wall too."""
        app = make_app(layers=[Timing(), Deny()])
        response = get(app, "/aitems/5")
        assert response.json == {"id": 5}
        assert response.headers["X-Deny-Checked"] == "1"
        assert get(app, "/aitems/5", headers={"x-deny": "1"}).status_code == 429


class TestErrors:
    def test_propagating_app_raises_on_to_the_test(self, logs: list[dict[str, Any]]) -> None:
        """TESTING (or debug, PROPAGATE_EXCEPTIONS): the test gets the exception, logged once."""
        app = make_app(testing=True, layers=[ErrorCapture()])
        with pytest.raises(RuntimeError):
            get(app, "/boom")
        captured = [e for e in logs if e["event"] == "seawall.error.captured"]
        assert len(captured) == 1
        assert captured[0]["route"] == "/boom"

    def test_the_debugger_sees_the_exception(self) -> None:
        """flask run --debug wraps the app in werkzeug's debugger: its page is served."""
        from werkzeug.debug import DebuggedApplication

        app = make_app(testing=False, layers=[ErrorCapture()])
        app.debug = True
        debugged = DebuggedApplication(app, evalex=False)
        from werkzeug.test import Client

        response = Client(debugged).get("/boom", buffered=True)
        assert response.status_code == 500
        assert "Werkzeug Debugger" in response.get_data(as_text=True)

    def test_unhandled_exception_captured_once(self, logs: list[dict[str, Any]]) -> None:
        """A view's exception becomes one captured error and a problem+json 500."""
        app = make_app(testing=False, layers=[ErrorCapture()])
        response = get(app, "/boom")
        assert response.status_code == 500
        body = problem(response)
        assert body["type"] == "urn:seawall:problem:internal-error"
        assert "hunter2" not in response.get_data(as_text=True)
        assert body["request_id"] == response.headers["X-Request-ID"]
        captured = [e for e in logs if e["event"] == "seawall.error.captured"]
        assert len(captured) == 1
        assert captured[0]["route"] == "/boom"

    def test_flask_does_not_log_the_captured_error_again(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Flask's own "Exception on /boom" traceback would log the error a second time."""
        app = make_app(testing=False, layers=[ErrorCapture()])
        with caplog.at_level("ERROR", logger=app.logger.name):
            assert get(app, "/boom").status_code == 500
        assert not [r for r in caplog.records if "Exception on" in r.getMessage()]
        # Without ErrorCapture, Flask logs it as it always has.
        plain = make_app(testing=False, layers=[])
        with caplog.at_level("ERROR", logger=plain.logger.name):
            assert get(plain, "/boom").status_code == 500
        assert [r for r in caplog.records if "Exception on" in r.getMessage()]

    @pytest.mark.parametrize(("path", "status"), [("/forbid", 403), ("/nowhere", 404)])
    def test_http_errors_on_purpose_not_captured(
        self, path: str, status: int, logs: list[dict[str, Any]]
    ) -> None:
        """abort(403) and 404 keep Flask's answer and are not errors."""
        app = make_app(testing=False, layers=[ErrorCapture()])
        response = get(app, path)
        assert response.status_code == status
        assert response.headers["Content-Type"].startswith("text/html")
        assert not [e for e in logs if e["event"] == "seawall.error.captured"]

    def test_abort_500_on_purpose_keeps_flask_page(self, logs: list[dict[str, Any]]) -> None:
        """abort(500) is an HTTP error the app chose: Flask's page, nothing captured."""
        app = make_app(testing=False, layers=[ErrorCapture()])
        app.get("/abort500")(lambda: abort(500))
        response = get(app, "/abort500")
        assert response.status_code == 500
        assert response.headers["Content-Type"].startswith("text/html")
        assert not [e for e in logs if e["event"] == "seawall.error.captured"]

    def test_app_500_handler_wins_but_error_is_captured(self, logs: list[dict[str, Any]]) -> None:
        """The app's own 500 handler renders; ErrorCapture still logs the error."""
        app = Flask(__name__)
        app.register_error_handler(500, lambda e: ("custom", 500))
        Seawall(app, layers=[ErrorCapture()])

        @app.get("/boom")
        def boom() -> Any:
            raise RuntimeError("x")

        response = get(app, "/boom")
        assert response.status_code == 500
        assert response.data == b"custom"
        assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1

    def test_rejected_rendered_as_problem(self) -> None:
        """A Rejected raised in a view is a problem+json with its headers."""
        app = make_app(layers=[Timing()])
        response = get(app, "/rejected")
        assert response.status_code == 429
        body = problem(response)
        assert body["type"].endswith("quota-exceeded")
        assert body["request_id"] == response.headers["X-Request-ID"]
        assert response.headers["Retry-After"] == "7"
        assert "Server-Timing" in response.headers

    @pytest.mark.parametrize("when", ["before", "after"])
    def test_app_handler_for_rejected_wins(self, when: str) -> None:
        """An error handler the app registers for our exceptions is used instead."""
        app = Flask(__name__)

        def mine(exc: RateLimited) -> Any:
            return {"mine": exc.detail}, 429

        if when == "before":
            app.register_error_handler(RateLimited, mine)
        Seawall(app, layers=[Timing()])
        if when == "after":
            app.register_error_handler(RateLimited, mine)

        @app.get("/r")
        def r() -> Any:
            raise RateLimited("slow down")

        response = get(app, "/r")
        assert response.status_code == 429
        assert response.json == {"mine": "slow down"}


class TestLayers:
    def test_layer_rejection(self) -> None:
        """A layer's Respond is sent before Flask runs, with layer headers."""
        deny = Deny()
        app = make_app(layers=[Timing(), deny])
        response = get(app, "/items/1", headers={"x-deny": "1"})
        assert response.status_code == 429
        assert problem(response)["detail"] == "Slow down."
        assert response.headers["Retry-After"] == "7"
        assert response.headers["X-Deny-Policy"] == "test"
        ok = get(app, "/items/1")
        assert ok.headers["X-Deny-Policy"] == "test"
        assert ok.headers["X-Deny-Checked"] == "1"

    def test_body_effects(self) -> None:
        """A layer reading and replacing the body: the view sees the new body."""
        app = make_app(layers=[Upper(limit=16)])
        response = app.test_client().post("/echo", data=b"hello", buffered=True)
        assert response.data == b"HELLO"
        big = app.test_client().post("/echo", data=b"x" * 17, buffered=True)
        assert big.status_code == 413


@pytest.mark.parametrize(
    "decorate",
    [
        lambda guard: guard.limit("5/minute"),
        lambda guard: guard.validate(sanitize=["bio"]),
        lambda guard: guard.breaker("order-check", fail_max=3),
    ],
    ids=["limit", "validate", "breaker"],
)
def test_a_guard_above_the_route_decorator_is_refused(decorate: Any) -> None:
    """Above @app.route a guard wraps a function Flask never calls: say so, not run unguarded."""
    app = Flask(__name__)
    guard = Seawall(app, layers=[])
    with pytest.raises(ConfigurationError, match=r"above the route decorator"):

        @decorate(guard)
        @app.get("/x")
        def x() -> str:  # pragma: no cover - never registered guarded
            return "ok"

    @app.get("/y")
    @decorate(guard)
    def y() -> str:
        return "ok"

    assert app.test_client().get("/y", buffered=True).status_code == 200


@pytest.mark.parametrize("layout", ["blueprint", "factory"])
def test_a_guard_above_a_deferred_route_decorator_is_refused_at_the_first_request(
    layout: str,
) -> None:
    """Blueprints and factories register views later: the first request says so."""
    from flask import Blueprint

    guard = Seawall(layers=[])
    if layout == "blueprint":
        app = Flask(__name__)
        guard.init_app(app)
        bp = Blueprint("orders", __name__)

        @guard.limit("1/minute")
        @bp.get("/x")
        def x() -> str:  # pragma: no cover - never registered guarded
            return "ok"

        app.register_blueprint(bp)
    else:
        first = Flask(__name__)

        @guard.limit("1/minute")
        @first.get("/x")
        def x2() -> str:  # pragma: no cover - never registered guarded
            return "ok"

        guard.init_app(first)
        app = first
    with pytest.raises(ConfigurationError, match=r"above the route decorator"):
        app.test_client().get("/x", buffered=True)


class TestExempt:
    def test_exempt_view_skips_rejecting_layers(self) -> None:
        """@exempt views skip Deny but keep the observing layers."""
        outcomes = Outcomes()
        deny = Deny()
        app = make_app(layers=[Timing(), outcomes, deny])
        response = get(app, "/free", headers={"x-deny": "1"})
        assert response.status_code == 200
        assert "Server-Timing" in response.headers
        assert "X-Deny-Checked" not in response.headers
        assert outcomes.outcomes[-1].route == "/free"
        assert get(app, "/items/1", headers={"x-deny": "1"}).status_code == 429

    def test_marks_on_a_method_views_handlers(self) -> None:
        """@guard.exempt on MethodView.get, override_defaults on its post: per method."""
        from flask.views import MethodView

        from seawall import RateLimit

        app = Flask(__name__)
        guard = Seawall(app, layers=[RateLimit("2/minute")])

        class Items(MethodView):
            @guard.exempt
            def get(self) -> str:
                return "list"

            @guard.limit("100/minute", override_defaults=True)
            def post(self) -> str:
                return "made"

            def put(self) -> str:
                return "put"

        app.add_url_rule("/items", view_func=Items.as_view("items"))
        client = app.test_client()
        for method in ("get", "post"):
            statuses = [
                getattr(client, method)("/items", buffered=True).status_code for _ in range(4)
            ]
            assert statuses == [200, 200, 200, 200], method
        assert [client.put("/items", buffered=True).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]

    def test_exempt_blueprint(self) -> None:
        """Marking a blueprint exempts every view in it (nested ones too)."""
        app = Flask(__name__)
        guard = Seawall(app, layers=[Deny()])
        outer = Blueprint("outer", __name__, url_prefix="/outer")
        inner = Blueprint("inner", __name__, url_prefix="/inner")
        inner.get("/x")(lambda: "inner")
        outer.get("/y")(lambda: "outer")
        outer.register_blueprint(inner)
        guard.exempt(outer)
        app.register_blueprint(outer)
        app.get("/z")(lambda: "z")
        headers = {"x-deny": "1"}
        assert get(app, "/outer/y", headers=headers).status_code == 200
        assert get(app, "/outer/inner/x", headers=headers).status_code == 200
        assert get(app, "/z", headers=headers).status_code == 429
        assert get(app, "/unknown", headers=headers).status_code == 429
