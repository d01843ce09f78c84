"""The cheap hooks: ``add_headers`` and ``skip_methods``, through both drivers and Django."""

from __future__ import annotations

import re
from typing import Any

import pytest

import seawall
from seawall import ErrorCapture, Respond, Timing
from seawall._core.request import RequestIds
from seawall._core.stack import Stack
from tests.apps import client_for, lifespan


class Adds:
    """Adds one header line per response, counting the calls."""

    name = "adds"

    def __init__(self, header: str = "X-Added", fail: bool = False) -> None:
        self.header = header
        self.fail = fail
        self.calls: list[int] = []

    def add_headers(self, request: Any, status: int) -> list[tuple[str, str]]:
        self.calls.append(status)
        if self.fail:
            raise RuntimeError("broken layer")
        return [(self.header, f"{request.method} {status}")]


class Rejects:
    """Answers every request itself (a 403), as a rate limit would."""

    name = "rejects"
    order = 500

    def on_request(self, request: Any) -> Respond:
        return Respond.problem(403, "forbidden")


class Edits:
    """An on_response layer, to check add_headers lines come after its edits."""

    name = "edits"

    def on_response(self, request: Any, response: Any) -> None:
        response.add("X-Edited", "yes")


class SeesMethods:
    """Records the methods its on_request is called for."""

    name = "sees"
    skip_methods = frozenset({"GET"})

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_request(self, request: Any) -> None:
        self.seen.append(request.method)


class TestAddHeaders:
    def test_lines_reach_the_response(self, make_client) -> None:
        layer = Adds()
        r = make_client([layer]).get("/status/201")
        assert r.status_code == 201
        assert r.headers["x-added"] == "GET 201"
        assert layer.calls == [201]

    def test_lines_come_after_on_response_edits(self, make_client) -> None:
        r = make_client([Edits(), Adds()], order="as given").get("/")
        names = [name.lower() for name in r.headers]
        assert names.index("x-edited") < names.index("x-added")

    def test_a_failing_hook_is_skipped_not_a_500(self, make_client, logs) -> None:
        layer = Adds(fail=True)
        r = make_client([layer, Timing()]).get("/")
        assert r.status_code == 200
        assert "x-added" not in r.headers
        assert r.headers["server-timing"].startswith("total;dur=")
        failed = [e for e in logs if e["event"] == "seawall.layer.failed"]
        assert failed
        assert failed[0]["hook"] == "add_headers"

    def test_layers_outside_a_rejection_still_add(self, make_client) -> None:
        outer = Adds("X-Outer")
        inner = Adds("X-Inner")
        # as given: outer, the rejecting layer, then inner (which never saw the request).
        r = make_client([outer, Rejects(), inner], order="as given").get("/")
        assert r.status_code == 403
        assert r.headers["x-outer"] == "GET 403"
        assert "x-inner" not in r.headers
        assert inner.calls == []

    def test_stack_add_headers_collects_in_order(self) -> None:
        stack = Stack([Adds("A"), Adds("B")], order="as given")
        view = seawall.RequestView(method="GET", path="/")
        # Innermost first, as on_response runs.
        assert stack.add_headers(view, 200, stack.all_depth) == [("B", "GET 200"), ("A", "GET 200")]
        assert stack.add_headers(view, 200, 0) == [("A", "GET 200")]
        assert stack.has_response_hooks


class TestSkipMethods:
    @pytest.mark.parametrize("method", ["GET", "POST", "PROPFIND"])
    def test_hook_runs_only_for_methods_not_skipped(self, make_client, method: str) -> None:
        layer = SeesMethods()
        make_client([layer]).request(method, "/")
        assert layer.seen == ([] if method == "GET" else [method])

    def test_error_capture_reads_no_body_for_get(self) -> None:
        stack = Stack([ErrorCapture()])
        assert stack.request_hooks_for("GET") == ()
        assert stack.request_hooks_for("HEAD") == ()
        assert len(stack.request_hooks_for("POST")) == 1

    def test_error_capture_without_body_capture_has_no_request_hook(self) -> None:
        assert Stack([ErrorCapture(capture_body=False)]).request_hooks == ()

    def test_error_capture_still_logs_a_failed_posts_body(self, make_client, logs) -> None:
        client = make_client([ErrorCapture()], raise_server_exceptions=False)
        r = client.post("/boom", json={"item": 3, "password": "hunter2"})
        assert r.status_code == 500
        captured = [e for e in logs if e["event"] == "seawall.error.captured"]
        assert captured
        assert captured[0]["body"] == {"item": 3, "password": "[scrubbed]"}

    def test_the_per_method_table_is_bounded(self) -> None:
        stack = Stack([SeesMethods()])
        for i in range(200):
            stack.request_hooks_for(f"M{i}")
        assert len(stack._by_method) <= 64


class TestRequestIds:
    def test_generated_ids_are_20_hex_digits_and_unique(self, make_client) -> None:
        client = make_client([])
        ids = [client.get("/").headers["x-request-id"] for _ in range(50)]
        assert all(re.fullmatch(r"[0-9a-f]{20}", rid) for rid in ids)
        assert len(set(ids)) == 50

    def test_reseed_changes_the_prefix(self) -> None:
        ids = RequestIds()
        first = ids.new()
        ids._reseed()
        second = ids.new()
        assert first[:12] != second[:12]  # a fresh random prefix (odds of a clash: 2**-47)
        assert second.endswith("00000001")
        assert len(first) == len(second) == 20


class Completes:
    """Records each outcome's status in on_complete, or fails there."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.statuses: list[int | None] = []

    def on_complete(self, request: Any, outcome: Any) -> None:
        self.statuses.append(outcome.status)
        if self.fail:
            raise RuntimeError("broken on_complete")


class TestOnComplete:
    def test_a_failing_hook_is_logged_and_the_others_still_run(self, make_client, logs) -> None:
        outer, broken, inner = (
            Completes("outer"),
            Completes("broken", fail=True),
            Completes("inner"),
        )
        r = make_client([outer, broken, inner], order="as given").get("/status/201")
        assert r.status_code == 201
        assert outer.statuses == broken.statuses == inner.statuses == [201]
        failed = [e for e in logs if e["event"] == "seawall.layer.failed"]
        assert [(e["hook"], e["layer"]) for e in failed] == [("on_complete", "broken")]

    def test_layers_inside_a_rejection_are_not_told(self, make_client) -> None:
        outer, inner = Completes("outer"), Completes("inner")
        r = make_client([outer, Rejects(), inner], order="as given").get("/")
        assert r.status_code == 403
        assert outer.statuses == [403]
        assert inner.statuses == []


class TestAfterResponse:
    """RequestView.after_response: code outside the stack hears how its request ended."""

    @staticmethod
    def wall(interface: str, layers: list[Any], seen: list[Any]) -> Any:
        def remember(request: Any, outcome: Any) -> None:
            seen.append((request.path, outcome.status, outcome.duration))

        def ask() -> None:
            request = seawall.current_request()
            assert request is not None
            request.after_response(remember)
            request.after_response(remember)  # two callbacks: both run, once each

        if interface == "asgi":

            async def app(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "lifespan":
                    await lifespan(receive, send)
                    return
                ask()
                await send({"type": "http.response.start", "status": 202, "headers": []})
                await send({"type": "http.response.body", "body": b"x"})

            return seawall.Seawall(app, layers=layers)

        def wsgi(environ: Any, start_response: Any) -> Any:
            ask()
            start_response("202 Accepted", [])
            return [b"x"]

        return seawall.Seawall(wsgi, layers=layers)

    @pytest.mark.parametrize("layers", [[], [Timing()]], ids=["no layers", "with Timing"])
    def test_callbacks_run_once_after_the_response(self, interface: str, layers: Any) -> None:

        seen: list[Any] = []
        with client_for(self.wall(interface, layers, seen)) as client:
            assert client.get("/a").status_code == 202
            assert client.get("/b").status_code == 202
        assert [(path, status) for path, status, _ in seen] == [
            ("/a", 202),
            ("/a", 202),
            ("/b", 202),
            ("/b", 202),
        ]
        assert all(duration > 0 for _, _, duration in seen)
