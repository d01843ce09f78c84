"""The CircuitBreaker and Timeout layers on both drivers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import seawall
from seawall import CircuitBreaker, ConfigurationError, Outcome, Timeout
from seawall.resilience import breakers
from seawall.testing import ManualClock
from tests.apps import Boom, client_for
from tests.breaker.apps import routed

MakeClient = Callable[..., httpx.Client]


def statuses(client: httpx.Client, *paths: str) -> list[int]:
    return [client.get(path).status_code for path in paths]


class TestGlobal:
    def test_5xx_opens_and_open_answers_503_problem_with_retry_after(
        self, make_client: MakeClient, clock: ManualClock
    ) -> None:
        """Two 500s open it; then 503 temporary-reduced-capacity, Retry-After = time left."""
        layer = CircuitBreaker(fail_max=2, wait_in_open=30, clock=clock)
        client = make_client([layer])
        assert statuses(client, "/status/500", "/status/500") == [500, 500]
        clock.advance(10)
        response = client.get("/")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "20"
        body = response.json()
        assert body["type"].endswith("temporary-reduced-capacity")
        assert body["status"] == 503
        assert body["request_id"]
        assert layer.stats()["breakers"]["global"]["rejected"] == 1

    def test_4xx_is_not_a_failure(self, make_client: MakeClient, clock: ManualClock) -> None:
        """Client errors never open the breaker."""
        layer = CircuitBreaker(fail_max=1, clock=clock)
        client = make_client([layer])
        assert statuses(client, "/status/404", "/status/429", "/") == [404, 429, 200]
        stats = layer.stats()["breakers"]["global"]
        assert stats["state"] == "closed"
        assert stats["successes"] == 3

    def test_unhandled_exception_is_a_failure(
        self, make_client: MakeClient, clock: ManualClock
    ) -> None:
        """An exception out of the app counts, whatever answered (ErrorCapture or the server)."""
        layer = CircuitBreaker(fail_max=1, clock=clock)
        client = make_client([layer, seawall.ErrorCapture()])
        assert client.get("/boom").status_code == 500
        assert client.get("/").status_code == 503

    def test_ignored_exception_types_are_not_counted(
        self, make_client: MakeClient, clock: ManualClock
    ) -> None:
        """ignore=(Boom,): the exception neither fails nor succeeds."""
        layer = CircuitBreaker(fail_max=1, ignore=(Boom,), clock=clock)
        client = make_client([layer, seawall.ErrorCapture()])
        assert statuses(client, "/boom", "/") == [500, 200]
        assert layer.stats()["breakers"]["global"]["ignored"] == 1

    def test_is_failure_overrides(self, make_client: MakeClient, clock: ManualClock) -> None:
        """A custom classifier can count 429s as failures."""

        def is_failure(outcome: Outcome) -> bool:
            return outcome.status == 429

        layer = CircuitBreaker(fail_max=1, is_failure=is_failure, clock=clock)
        client = make_client([layer])
        assert statuses(client, "/status/500", "/status/429", "/") == [500, 429, 503]

    def test_half_open_probe_success_closes(
        self, make_client: MakeClient, clock: ManualClock
    ) -> None:
        """After wait_in_open one probe passes; its success closes the breaker."""
        layer = CircuitBreaker(fail_max=1, wait_in_open=5, clock=clock)
        client = make_client([layer])
        assert statuses(client, "/status/500", "/") == [500, 503]
        clock.advance(5)
        assert statuses(client, "/", "/") == [200, 200]
        assert layer.stats()["breakers"]["global"]["transitions"] == {
            "opened": 1,
            "half_open": 1,
            "closed": 1,
        }

    def test_half_open_probe_failure_reopens(
        self, make_client: MakeClient, clock: ManualClock
    ) -> None:
        """A failed probe reopens for another wait_in_open."""
        layer = CircuitBreaker(fail_max=1, wait_in_open=5, clock=clock)
        client = make_client([layer])
        client.get("/status/500")
        clock.advance(5)
        assert statuses(client, "/status/502", "/") == [502, 503]

    def test_shadow_mode_lets_refused_requests_through(
        self, make_client: MakeClient, clock: ManualClock, logs: list[dict[str, Any]]
    ) -> None:
        """shadow=True: decides and logs, but the request reaches the app."""
        layer = CircuitBreaker(fail_max=1, shadow=True, clock=clock)
        client = make_client([layer])
        assert statuses(client, "/status/500", "/") == [500, 200]
        assert layer.stats()["shadow_refusals"] == 1
        assert any(e["event"] == "seawall.breaker.shadow_rejected" for e in logs)

    def test_manual_open_and_reset(self, make_client: MakeClient, clock: ManualClock) -> None:
        """layer.open() refuses; seawall.testing.reset closes."""
        layer = CircuitBreaker(clock=clock)
        client = make_client([layer])
        layer.open()
        assert client.get("/").status_code == 503
        layer.reset()
        assert client.get("/").status_code == 200

    def test_refusals_by_outer_layers_are_not_counted(
        self, make_client: MakeClient, clock: ManualClock
    ) -> None:
        """A request answered outside the breaker never reaches its window."""

        class Deny:
            name = "deny"
            order = 500

            def on_request(self, request: Any) -> Any:
                return seawall.Respond.problem(503, "denied") if request.path == "/x" else None

        layer = CircuitBreaker(fail_max=1, clock=clock)
        client = make_client([layer, Deny()])
        assert statuses(client, "/x", "/") == [503, 200]
        assert layer.stats()["breakers"]["global"]["calls"] == 1


class TestPer:
    def test_per_route_keeps_one_breaker_per_template(
        self, interface: str, clock: ManualClock
    ) -> None:
        """Failures on /items/{id} open that route only; /users/{id} still answers."""
        layer = CircuitBreaker(per="route", fail_max=2, clock=clock)
        client = client_for(routed(interface, [layer]))
        # The very first request, before any template is known, is keyed by its path.
        assert statuses(client, "/items/500") == [500]
        # Then paths never seen before are keyed by the learned template.
        assert statuses(client, "/items/503", "/items/502") == [503, 502]
        assert statuses(client, "/items/42", "/users/1") == [503, 200]
        assert set(layer.stats()["breakers"]) == {"/items/{id}", "/items/500", "/users/1"}

    def test_the_issue_example_per_route_over_a_time_window(
        self, interface: str, clock: ManualClock
    ) -> None:
        """failure_rate 0.5, minimum 20, 60 s time window, per="route": as the issue writes it."""
        layer = CircuitBreaker(
            failure_rate_threshold=0.5, minimum_number_of_calls=20, sliding_window_size=60,
            sliding_window_type="time", wait_in_open=30, per="route", clock=clock,
        )  # fmt: skip
        client = client_for(routed(interface, [layer]))
        statuses(client, "/items/0")  # learn the template (the first request has only its path)
        # 10 failures 61 s ago are forgotten: they never add up with the later ones.
        assert statuses(client, *["/items/500"] * 10) == [500] * 10
        clock.advance(61)
        assert statuses(client, *["/items/1"] * 10, *["/items/500"] * 9) == [200] * 10 + [500] * 9
        assert layer.breaker("/items/{id}").current_state == "closed"  # 19 calls: too few
        clock.advance(5)
        assert statuses(client, "/items/500") == [500]  # 10 of 20 failed: 50%
        response = client.get("/items/2")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        assert statuses(client, "/users/1", "/users/2") == [200, 200]  # another route
        clock.advance(30)
        assert statuses(client, "/items/3", "/items/4") == [200, 200]  # the probe closed it
        window = layer.stats()["breakers"]["/items/{id}"]
        assert window["transitions"] == {"opened": 1, "half_open": 1, "closed": 1}

    def test_request_route_set_by_an_adapter_is_used(
        self, interface: str, clock: ManualClock
    ) -> None:
        """request.route, when known before the app runs, picks the breaker."""

        class Adapter:
            name = "adapter"
            order = 150

            def on_request(self, request: Any) -> None:
                request.route = "/items/{id}"

        layer = CircuitBreaker(per="route", fail_max=1, clock=clock)
        client = client_for(routed(interface, [layer, Adapter()]))
        assert statuses(client, "/items/500", "/items/1") == [500, 503]
        assert list(layer.stats()["breakers"]) == ["/items/{id}"]

    def test_per_group(self, interface: str, clock: ManualClock) -> None:
        """Groups of patterns share a breaker; other paths are not guarded."""
        layer = CircuitBreaker(per={"shop": ["/items/*", "/users/{id}"]}, fail_max=1, clock=clock)
        client = client_for(routed(interface, [layer]))
        assert statuses(client, "/items/500", "/users/3", "/other/500", "/other/1") == [
            500,
            503,
            500,
            200,
        ]

    def test_route_breakers_are_bounded(self, interface: str, clock: ManualClock) -> None:
        """Beyond max_routes, raw paths share the "<other>" breaker."""
        layer = CircuitBreaker(per="route", max_routes=2, clock=clock)
        client = client_for(routed(interface, [layer]))
        statuses(client, "/a", "/b", "/c", "/d")
        assert set(layer.stats()["breakers"]) == {"/a", "/b", "<other>"}

    def test_named_breakers_are_shared_through_the_registry(
        self, interface: str, clock: ManualClock
    ) -> None:
        """breaker_name puts the layer's breaker in seawall.resilience.breakers."""
        layer = CircuitBreaker(breaker_name="api", fail_max=1, clock=clock)
        client = client_for(routed(interface, [layer]))
        client.get("/items/500")
        assert breakers["api"].current_state == "open"

    @pytest.mark.parametrize(
        ("kwargs", "key"),
        [
            pytest.param({"per": "user"}, "per", id="per"),
            pytest.param({"per": {}}, "per", id="empty groups"),
            pytest.param({"max_routes": 0}, "max_routes", id="max_routes"),
            pytest.param({"ignore": ["Boom"]}, "ignore", id="ignore"),
            pytest.param({"failure_rate_threshold": 150}, "failure_rate", id="rate"),
        ],
    )
    def test_bad_settings_fail_at_startup(self, kwargs: dict[str, Any], key: str) -> None:
        """Every bad setting raises ConfigurationError naming the key."""
        with pytest.raises(ConfigurationError, match=key):
            CircuitBreaker(**kwargs)


class TestTimeout:
    def test_deadline_overrun_counts_as_a_breaker_failure(
        self, make_client: MakeClient, interface: str, logs: list[dict[str, Any]]
    ) -> None:
        """ASGI answers 504 problem+json; WSGI lets the response out; both log and count."""
        layer = CircuitBreaker(fail_max=1)
        timeout = Timeout(0.05)
        client = make_client([layer, timeout])
        response = client.get("/slow/0.3")
        if interface == "asgi":
            assert response.status_code == 504
            assert response.headers["content-type"] == "application/problem+json"
            assert json.loads(response.text)["timeout"] == 0.05
        else:
            assert response.status_code == 200
        assert client.get("/").status_code == 503
        exceeded = [e for e in logs if e["event"] == "seawall.timeout.exceeded"]
        assert len(exceeded) == 1
        assert exceeded[0]["cancelled"] is (interface == "asgi")
        assert timeout.stats()["exceeded"] == 1

    def test_rules_pick_the_deadline(self) -> None:
        """First matching rule wins; None exempts; the default covers the rest."""
        timeout = Timeout(10, rules={"/reports/*": 60, "/items/{id}": 2, "/events": None})
        assert timeout.deadline_for("/reports/2026/q1") == 60
        assert timeout.deadline_for("/items/7") == 2
        assert timeout.deadline_for("/items/7/parts") == 10
        assert timeout.deadline_for("/events") is None
        assert timeout.deadline_for("/") == 10

    def test_a_rule_extends_the_deadline(self, make_client: MakeClient) -> None:
        """/slow/* has 2 s, so a 0.1 s handler is not cut."""
        client = make_client([Timeout(0.05, rules={"/slow/*": 2})])
        assert client.get("/slow/0.1").status_code == 200

    @pytest.mark.parametrize("reverse", [False, True], ids=["tight first", "tight last"])
    def test_two_timeouts_keep_the_tighter_deadline(self, reverse: bool) -> None:
        """A second Timeout never loosens the first one's deadline, nor clears it with None."""
        from seawall._core.request import RequestView

        layers = [Timeout(2), Timeout(30, rules={"/events": None})]
        for path in ("/items", "/events"):
            view = RequestView.from_asgi({"type": "http", "path": path, "headers": []})
            for layer in reversed(layers) if reverse else layers:
                layer.on_request(view)
            assert view.deadline == 2

    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({"seconds": 0}, id="zero"),
            pytest.param({"seconds": "10"}, id="string"),
            pytest.param({"rules": {"/a": -1}}, id="negative rule"),
        ],
    )
    def test_bad_settings(self, kwargs: dict[str, Any]) -> None:
        """Deadlines must be positive numbers of seconds."""
        with pytest.raises(ConfigurationError):
            Timeout(**kwargs)


class TestHandlerDecorator:
    def test_sync_handler(self, clock: ManualClock) -> None:
        """@seawall.breaker on a sync handler: a 5xx response counts; open raises CircuitOpen."""

        class Response:
            def __init__(self, status_code: int) -> None:
                self.status_code = status_code

        @seawall.breaker("handler", fail_max=2, clock=clock)
        def view(status: int) -> Response:
            return Response(status)

        view(500)
        view(503)
        with pytest.raises(seawall.CircuitOpen) as info:
            view(200)
        assert info.value.status == 503
        assert breakers["handler"].current_state == "open"

    def test_async_handler(self, clock: ManualClock) -> None:
        """@seawall.breaker on an async handler: exceptions count."""
        import asyncio

        @seawall.breaker(fail_max=1, clock=clock)
        async def view() -> None:
            raise Boom

        async def main() -> None:
            with pytest.raises(Boom):
                await view()
            with pytest.raises(seawall.CircuitOpen):
                await view()

        asyncio.run(main())

    def test_conflicting_settings_for_one_name_fail(self) -> None:
        """Two places configuring one named breaker differently is an error."""
        seawall.breaker("x", fail_max=1)(lambda: None)
        with pytest.raises(ConfigurationError, match="already exists"):
            seawall.breaker("x", fail_max=2)(lambda: None)


class TestStorageDownAndSettings:
    def test_layer_keeps_working_when_redis_is_unreachable(
        self, make_client: MakeClient, clock: ManualClock, logs: list[dict[str, Any]]
    ) -> None:
        """Nothing listens on port 1: the layer falls back to local state and still opens."""
        layer = CircuitBreaker(
            fail_max=1, storage="redis://127.0.0.1:1/0", storage_timeout=0.2, clock=clock
        )
        client = make_client([layer])
        assert statuses(client, "/status/500", "/", "/") == [500, 503, 503]
        assert [e["event"] for e in logs].count("seawall.breaker.storage_down") == 1

    def test_built_from_settings(self) -> None:
        """The layers build from a settings mapping (TOML / env spellings)."""
        from seawall.config import build_layer

        layer = build_layer(
            "circuit_breaker",
            {"per": {"pay": ["/pay/*"]}, "fail_max": 3, "ignore": ["tests.apps:Boom"]},
        )
        assert isinstance(layer, CircuitBreaker)
        assert layer._options["exclude"] == (Boom,)
        timeout = build_layer("timeout", 5)
        assert isinstance(timeout, Timeout)
        assert timeout.seconds == 5.0
        with pytest.raises(ConfigurationError, match="fail_maxx"):
            build_layer("circuit_breaker", {"fail_maxx": 3})
        with pytest.raises(ConfigurationError, match="cannot import"):
            build_layer("circuit_breaker", {"ignore": ["nope:X"]})

    def test_stats_reach_seawall_stats(self, interface: str, clock: ManualClock) -> None:
        """seawall.stats(app) shows the breaker's state and window, and the timeout's."""
        from tests.apps import wrap

        wall = wrap(interface, [CircuitBreaker(fail_max=5, clock=clock), Timeout(10)])
        client_for(wall, raise_server_exceptions=False).get("/status/500")
        snapshot = seawall.stats(wall)
        breaker = snapshot["breaker"]["breakers"]["global"]
        assert breaker["state"] == "closed"
        assert breaker["window"]["failures"] == 1
        assert breaker["consecutive_failures"] == 1
        assert snapshot["timeout"]["exceeded"] == 0


def test_handler_decorator_refusal_is_rendered_by_both_drivers(
    interface: str, clock: ManualClock
) -> None:
    """A handler guarded by @seawall.breaker raises CircuitOpen; the driver answers 503."""
    from seawall import Seawall

    @seawall.breaker("upstream", fail_max=1, wait_in_open=20, clock=clock)
    def fetch(fail: bool) -> bytes:
        if fail:
            raise ConnectionError("upstream down")
        return b"fresh"

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body = fetch(scope["path"] == "/fail")
        except ConnectionError:
            body = b"stale"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            body = fetch(environ["PATH_INFO"] == "/fail")
        except ConnectionError:
            body = b"stale"
        start_response("200 OK", [])
        return [body]

    wall = Seawall(asgi_app if interface == "asgi" else wsgi_app, layers=[])
    client = client_for(wall)
    assert client.get("/fail").text == "stale"
    response = client.get("/")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "20"
    assert response.json()["breaker"] == "upstream"


class TestTimeoutOnASGI:
    """What the ASGI driver does with a Timeout deadline, seen from the app's side."""

    @staticmethod
    def _call(wall: Any, path: str = "/") -> tuple[list[dict[str, Any]], BaseException | None]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": [], "client": ("1.2.3.4", 1),
            "server": ("t", 80),
        }  # fmt: skip
        error: BaseException | None = None
        try:
            asyncio.run(wall(scope, receive, send))
        except Exception as exc:
            error = exc
        return sent, error

    def test_the_handler_is_cancelled_and_504_sent(self, logs: list[dict[str, Any]]) -> None:
        """The app stops at its await: code after it never runs; 504 problem+json."""
        reached: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            reached.append("started")
            try:
                await asyncio.sleep(5)
                reached.append("after the sleep")
            except asyncio.CancelledError:
                reached.append("cancelled")
                raise

        layer = CircuitBreaker(fail_max=1)
        wall = seawall.Seawall(app, layers=[layer, Timeout(0.05)], interface="asgi")
        sent, error = self._call(wall)
        assert error is None
        assert reached == ["started", "cancelled"]
        assert sent[0]["status"] == 504
        headers = dict(sent[0]["headers"])
        assert headers[b"content-type"] == b"application/problem+json"
        assert json.loads(sent[1]["body"])["type"].endswith("timeout")
        assert layer.breaker().current_state == "open"  # the overrun was a failure
        event = next(e for e in logs if e["event"] == "seawall.timeout.exceeded")
        assert event["cancelled"] is True

    def test_a_started_response_is_cut_short_not_restarted(self) -> None:
        """Past the deadline after the response started: no second start, no 504."""

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            await asyncio.sleep(5)
            await send({"type": "http.response.body", "body": b"rest"})

        layer = CircuitBreaker(fail_max=1)
        timeout = Timeout(0.05)
        wall = seawall.Seawall(app, layers=[layer, timeout], interface="asgi")
        sent, _ = self._call(wall)
        starts = [m for m in sent if m["type"] == "http.response.start"]
        assert [m["status"] for m in starts] == [200]
        assert b"rest" not in b"".join(m.get("body", b"") for m in sent)
        assert timeout.stats()["exceeded"] == 1
        assert layer.breaker().current_state == "open"


class TestPatterns:
    @pytest.mark.parametrize(
        ("template", "path", "matches"),
        [
            ("/items/{id}", "/items/7", True),
            ("/items/{id}", "/items/7/parts", False),
            ("/items/{id:int}", "/items/7", True),
            ("/items/{id:int}", "/items/x", False),
            ("/files/{rest:path}", "/files/a/b", True),
            ("/items/<int:id>", "/items/12", True),
            ("/items/<int:id>", "/items/new", False),
            ("/users/<name>", "/users/ada", True),
            ("/users/<name>", "/users/ada/posts", False),
            ("/users/<str:name>", "/users/ada", True),
            ("/files/<path:rest>", "/files/a/b/c", True),
            ("/pick/<any(a, b):kind>", "/pick/a", True),
            ("/reports/*", "/reports/2026/q1", True),
        ],
    )
    def test_templates_of_every_framework(self, template: str, path: str, matches: bool) -> None:
        """Starlette {id}, Flask and Django <int:id>, globs: one parameter is one segment."""
        from seawall._breaker.patterns import compile_pattern

        assert bool(compile_pattern(template).fullmatch(path)) is matches

    def test_per_route_learns_flask_and_django_templates(
        self, interface: str, clock: ManualClock
    ) -> None:
        """A learned /orders/<int:id> keys /orders/9 before that path was ever seen."""
        from tests.breaker import apps

        apps.TEMPLATES["orders"] = "/orders/<int:id>"
        try:
            layer = CircuitBreaker(per="route", fail_max=2, clock=clock)
            client = client_for(routed(interface, [layer]))
            assert statuses(client, "/orders/1", "/orders/500", "/orders/502") == [200, 500, 502]
            assert statuses(client, "/orders/9") == [503]
            assert "/orders/<int:id>" in layer.stats()["breakers"]
        finally:
            del apps.TEMPLATES["orders"]
