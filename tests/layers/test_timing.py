from __future__ import annotations

import pytest

from seawall import ConfigurationError, Timing
from seawall._core.layer import Outcome
from seawall._core.request import RequestView
from seawall.testing import ManualClock


def view(started: float, admitted: float) -> RequestView:
    v = RequestView.from_asgi({"type": "http", "path": "/x", "headers": []}, started=started)
    v.admitted = admitted
    return v


def outcome(
    duration: float, route: str = "/r", status: int = 200, *, templated: bool = True
) -> Outcome:
    return Outcome(status, None, duration, duration / 2, route, templated=templated)


class TestTiming:
    def test_server_timing_reports_total_and_our_share(self) -> None:
        clock = ManualClock(10.0)
        t = Timing(clock=clock, response_time_header=True)
        clock.advance(0.25)
        lines = t.add_headers(view(10.0, 10.002), 200)
        assert lines == [
            ("server-timing", "total;dur=250.000, seawall;dur=2.000"),
            ("X-Response-Time", "250.000ms"),
        ]

    def test_server_timing_alone_is_one_line(self) -> None:
        clock = ManualClock(10.0)
        t = Timing(clock=clock)
        clock.advance(0.125)
        lines = t.add_headers(view(10.0, 10.0005), 200)
        assert list(lines) == [("server-timing", "total;dur=125.000, seawall;dur=0.500")]

    def test_response_time_alone(self) -> None:
        clock = ManualClock(10.0)
        t = Timing(clock=clock, server_timing=False, response_time_header="X-Took")
        clock.advance(0.002)
        assert t.add_headers(view(10.0, 10.0), 200) == [("X-Took", "2.000ms")]

    def test_headers_can_be_turned_off(self) -> None:
        t = Timing(server_timing=False)
        assert t.add_headers is None  # no hook at all: zero cost per response

    def test_percentiles_per_route(self) -> None:
        t = Timing(slow=None)
        for ms in range(1, 101):
            t.on_complete(view(0, 0), outcome(ms / 1000.0, "/items/{id}"))
        s = t.stats()["routes"]["/items/{id}"]
        assert s["count"] == 100
        assert s["p50_ms"] == pytest.approx(50, rel=0.07)
        assert s["p99_ms"] == pytest.approx(99, rel=0.07)
        assert s["max_ms"] == 100.0

    def test_slow_requests_warn(self, logs) -> None:
        t = Timing(slow=0.5)
        t.on_complete(view(0, 0), outcome(0.2))
        t.on_complete(view(0, 0), outcome(0.7))
        slow = [e for e in logs if e["event"] == "seawall.request.slow"]
        assert len(slow) == 1
        assert slow[0]["duration_ms"] == 700.0
        assert t.stats()["slow_requests"] == 1

    def test_route_count_is_bounded(self) -> None:
        t = Timing(max_routes=3)
        for i in range(10):
            t.on_complete(view(0, 0), outcome(0.01, f"/p/{i}", templated=False))
        routes = t.stats()["routes"]
        assert len(routes) == 4
        assert routes["<other>"]["count"] == 7

    def test_unmatched_404s_share_one_bucket(self) -> None:
        t = Timing()
        for i in range(5):
            t.on_complete(view(0, 0), outcome(0.01, f"/scan/{i}", status=404, templated=False))
        assert list(t.stats()["routes"]) == ["<unmatched>"]

    def test_bad_settings(self) -> None:
        with pytest.raises(ConfigurationError):
            Timing(slow=0)
        with pytest.raises(ConfigurationError):
            Timing(max_routes=0)


def test_refused_junk_paths_do_not_push_real_routes_out() -> None:
    # A request a layer refuses never reaches the router, so it has no
    # template; keyed by its raw path, junk paths filled every route slot.
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from seawall import Seawall, Validation

    async def item(request):
        return PlainTextResponse("ok")

    timing = Timing(max_routes=5)
    app = Seawall(
        Starlette(routes=[Route("/items/{item_id}", item)]),
        layers=[timing, Validation(threats="block")],
    )
    with TestClient(app) as client:
        for i in range(20):
            assert client.get(f"/junk{i}", params={"q": "1' OR '1'='1' --"}).status_code == 403
        assert client.get("/items/7").status_code == 200
    routes = timing.stats()["routes"]
    assert routes["<refused>"]["count"] == 20
    assert routes["/items/{item_id}"]["count"] == 1
    assert "<other>" not in routes
