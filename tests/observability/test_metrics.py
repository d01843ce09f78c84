"""Metrics: the registry, /metrics parsed by prometheus-client, layer stats, OTel, multiprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seawall import ErrorCapture, LoadShedding, Metrics, Seawall
from seawall._core.layer import Outcome
from seawall._observe.registry import Registry, families_from_stats, render_text
from seawall._observe.sampler import StaticSignals
from seawall.exceptions import ConfigurationError

MakeClient = Callable[..., httpx.Client]


def scrape(client: httpx.Client, **kw: Any) -> dict[str, Any]:
    """GET /metrics and parse it with prometheus-client's own parser."""
    response = client.get("/metrics", **kw)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


class OpenBreaker:
    """A stand-in CircuitBreaker whose stats() have the documented shape; 3 5xx open it."""

    name = "breaker"
    order = 700
    state: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.failures = 0
        self.transitions: dict[str, int] = {}

    def on_complete(self, request: Any, outcome: Outcome) -> None:
        if outcome.failed:
            self.failures += 1
            if self.failures == 3:
                self.transitions["open"] = self.transitions.get("open", 0) + 1

    def stats(self) -> dict[str, Any]:
        opened = self.failures >= 3
        return {
            "breakers": {
                "payments": {
                    "state": "open" if opened else "closed",
                    "failure_rate": 1.0 if self.failures else 0.0,
                    "calls": self.failures,
                    "retry_after": 30.0 if opened else None,
                    "transitions": dict(self.transitions),
                }
            }
        }


class TestExposition:
    def test_requests_are_counted_by_method_route_and_status(
        self, make_client: MakeClient, logs: list[dict[str, Any]]
    ) -> None:
        """Counter, histogram and in-flight, parsed by prometheus-client's parser."""
        client = make_client([ErrorCapture(), Metrics()], raise_server_exceptions=False)
        for _ in range(3):
            client.get("/")
        client.post("/status/201")
        client.get("/boom")
        client.get("/secret-raw-path")  # an untemplated path is never a label
        client.get("/status/404")
        client.get("/status/404")
        families = scrape(client)
        requests = samples(families["seawall_http_requests"], "seawall_http_requests_total")
        key = (("method", "GET"), ("route", "<untemplated>"), ("status", "200"))
        assert requests[key] == 4
        assert requests[(("method", "POST"), ("route", "<untemplated>"), ("status", "201"))] == 1
        assert requests[(("method", "GET"), ("route", "<untemplated>"), ("status", "500"))] == 1
        assert requests[(("method", "GET"), ("route", "<unmatched>"), ("status", "404"))] == 2
        hist = families["seawall_http_request_duration_seconds"]
        assert hist.type == "histogram"
        counts = samples(hist, "seawall_http_request_duration_seconds_count")
        assert counts[(("method", "GET"), ("route", "<untemplated>"))] == 5
        inf = samples(hist, "seawall_http_request_duration_seconds_bucket")
        assert inf[(("le", "+Inf"), ("method", "GET"), ("route", "<untemplated>"))] == 5
        flight = families["seawall_http_requests_in_flight"]
        assert [s.value for s in flight.samples] == [0]
        assert all("secret" not in str(s.labels) for f in families.values() for s in f.samples)

    def test_shed_requests_and_refusals_are_exported(self, make_client: MakeClient) -> None:
        """Refusals by layer (counted here) and shed by reason (from the layer's stats)."""
        signals = StaticSignals(cpu=99.0)
        client = make_client([Metrics(), LoadShedding(signals=signals, rng=lambda: 0.0)])
        client.get("/")
        client.get("/")
        families = scrape(client)
        rejected = samples(families["seawall_rejections"], "seawall_rejections_total")
        assert rejected[(("layer", "shedding"), ("status", "503"))] == 2
        shed = samples(families["seawall_shed_requests"], "seawall_shed_requests_total")
        assert shed[(("layer", "shedding"), ("reason", "cpu"))] == 2
        limit = samples(families["seawall_concurrency_limit"])
        assert limit[(("layer", "shedding"),)] == 20
        generic = samples(families["seawall_layer_stat"])
        assert generic[(("layer", "shedding"), ("stat", "shed_total"))] == 2

    def test_breakers_and_error_groups_are_exported(
        self, make_client: MakeClient, logs: list[dict[str, Any]]
    ) -> None:
        """Breaker state one-hot, transitions, and captured errors by fingerprint."""
        client = make_client([ErrorCapture(), Metrics(), OpenBreaker()],
                             raise_server_exceptions=False)  # fmt: skip
        for _ in range(3):
            client.get("/boom")
        families = scrape(client)
        state = samples(families["seawall_breaker_state"])
        assert state[(("breaker", "payments"), ("state", "open"))] == 1
        assert state[(("breaker", "payments"), ("state", "closed"))] == 0
        moves = samples(
            families["seawall_breaker_transitions"], "seawall_breaker_transitions_total"
        )
        assert moves[(("breaker", "payments"), ("to", "open"))] == 1
        errors = families["seawall_errors_captured"]
        [sample] = [s for s in errors.samples if s.name == "seawall_errors_captured_total"]
        assert sample.value == 3
        assert sample.labels["type"] == "tests.apps.Boom"
        assert len(sample.labels["fingerprint"]) == 12

    def test_the_real_circuit_breaker_is_read(
        self, make_client: MakeClient, logs: list[dict[str, Any]]
    ) -> None:
        """CircuitBreaker's own stats() shape gives the state and transition series."""
        from seawall import CircuitBreaker

        client = make_client([ErrorCapture(), Metrics(), CircuitBreaker(fail_max=2)],
                             raise_server_exceptions=False)  # fmt: skip
        for _ in range(3):
            client.get("/boom")
        families = scrape(client)
        state = samples(families["seawall_breaker_state"])
        assert state[(("breaker", "global"), ("state", "open"))] == 1
        moves = samples(
            families["seawall_breaker_transitions"], "seawall_breaker_transitions_total"
        )
        assert sum(moves.values()) == 1
        rejected = samples(families["seawall_rejections"], "seawall_rejections_total")
        assert rejected[(("layer", "breaker"), ("status", "503"))] == 1

    def test_rate_limit_decisions_and_validation_are_exported(
        self, make_client: MakeClient, logs: list[dict[str, Any]]
    ) -> None:
        """The real RateLimit and Validation layers' stats give their families."""
        from seawall import RateLimit, Validation

        client = make_client([
            Metrics(),
            RateLimit(rules={"/status/*": "1/minute"}),
            Validation(max_url=100, threats="block", routes={"/echo": {"threats": "monitor"}}),
        ])  # fmt: skip
        assert client.get("/status/200").status_code == 200
        assert client.get("/status/200").status_code == 429
        assert client.get("/", params={"q": "a" * 200}).status_code == 414
        assert client.get("/", params={"q": "<script>alert(1)</script>"}).status_code == 403
        assert client.get("/echo", params={"q": "<script>alert(1)</script>"}).status_code == 200
        families = scrape(client)
        decisions = samples(
            families["seawall_ratelimit_decisions"], "seawall_ratelimit_decisions_total"
        )
        rule = (("layer", "ratelimit"), ("rule", "/status/*"))
        assert decisions[(("decision", "allowed"), *rule)] == 1
        assert decisions[(("decision", "limited"), *rule)] == 1
        rejections = samples(
            families["seawall_validation_rejections"], "seawall_validation_rejections_total"
        )
        assert rejections == {
            (("layer", "validation"), ("reason", "uri_too_long")): 1,
            (("layer", "validation"), ("reason", "threat")): 1,
        }
        detections = samples(
            families["seawall_validation_detections"], "seawall_validation_detections_total"
        )
        by_mode: dict[str, set[str]] = {}
        for labels in detections:
            by_mode.setdefault(dict(labels)["mode"], set()).add(dict(labels)["rule"])
        assert "xss-script-tag" in by_mode["block"]
        assert by_mode["monitor"] == by_mode["block"]  # the same request, once of each
        assert all(v == 1 for v in detections.values())

    def test_the_scrape_itself_is_not_counted(self, make_client: MakeClient) -> None:
        """/metrics answers from the layer; it is neither a request series nor in flight."""
        client = make_client([Metrics()])
        scrape(client)
        families = scrape(client)
        assert samples(families["seawall_http_requests"]) == {}

    def test_a_token_protects_the_endpoint(self, make_client: MakeClient) -> None:
        """With token=..., scrapes need the bearer token."""
        client = make_client([Metrics(token="s3cret-scrape-token")])
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        scrape(client, headers={"Authorization": "Bearer s3cret-scrape-token"})

    def test_invalid_settings_are_refused(self) -> None:
        """Bad paths, caps and buckets fail at startup."""
        for kw in ({"path": "metrics"}, {"max_routes": 0}, {"buckets": ()}, {"buckets": (0,)}):
            with pytest.raises(ConfigurationError):
                Metrics(**kw)


class TestCardinality:
    def test_route_templates_are_labels_never_raw_paths(self) -> None:
        """A Starlette route template is the label, whatever the ids in the path."""
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient

        async def item(request: Any) -> PlainTextResponse:
            return PlainTextResponse("item")

        app = Starlette(routes=[Route("/items/{item_id}", item)])
        client = TestClient(Seawall(app, layers=[Metrics()]))
        for i in range(25):
            assert client.get(f"/items/{i}").status_code == 200
        families = scrape(client)
        requests = samples(families["seawall_http_requests"], "seawall_http_requests_total")
        assert requests == {
            (("method", "GET"), ("route", "/items/{item_id}"), ("status", "200")): 25
        }

    def test_distinct_routes_are_capped(self) -> None:
        """Past max_routes, routes count as <other>: memory stays bounded."""
        registry = Registry(max_routes=3)
        labels = {registry.label_route(f"/r/{i}", True, 200) for i in range(10)}
        assert labels == {"/r/0", "/r/1", "/r/2", "<other>"}

    def test_route_label_maps_untemplated_paths(self) -> None:
        """A user function may group raw paths (and is capped like templates)."""
        registry = Registry(route_label=lambda p: "/" + p.split("/")[1], max_routes=2)
        assert registry.label_route("/users/42", False, 200) == "/users"
        assert registry.label_route("/x/y", False, 404) == "<unmatched>"

    def test_odd_methods_share_one_label(self) -> None:
        """Methods outside the standard ones never mint new series."""
        registry = Registry()
        registry.observe("BREW", "/", 418, 0.01)
        assert list(registry.requests) == [("OTHER", "/", "418")]

    def test_client_keys_in_stats_never_become_labels(self) -> None:
        """Top-level numbers and small dicts of names are exported; keyed request data is not."""
        stats = {
            "ratelimit": {
                "allowed": 5,
                "rejected": 2,
                "decisions": {"allow": 5, "deny": 2},
                "top_keys": {"10.0.0.1": 9},
                "by_client": {"192.0.2.7": 1},
            }
        }
        text = render_text(families_from_stats(stats)).decode()
        assert 'stat="rejected"' in text
        assert 'stat="decisions.deny"' in text
        assert "10.0.0.1" not in text
        assert "192.0.2.7" not in text
        parsed = {f.name for f in text_string_to_metric_families(text)}
        assert parsed == {"seawall_layer_stat"}

    def test_label_values_are_escaped(self) -> None:
        """Quotes, backslashes and newlines in a label value keep the text parseable."""
        registry = Registry()
        registry.observe("GET", 'we"ird\\route\n', 200, 0.2)
        text = registry.render({}).decode()
        [fam] = [
            f for f in text_string_to_metric_families(text) if f.name == "seawall_http_requests"
        ]
        assert fam.samples[0].labels["route"] == 'we"ird\\route\n'


class TestOpenTelemetry:
    def test_figures_reach_an_otel_reader(self, make_client: MakeClient) -> None:
        """With a MeterProvider, requests and durations are OTel metrics too."""
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        client = make_client([Metrics(meter_provider=provider), OpenBreaker()])
        client.get("/")
        client.get("/status/503")
        data = reader.get_metrics_data()
        metrics = {
            m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }
        points = list(metrics["seawall.http.requests"].data.data_points)
        by_status = {p.attributes["http.response.status_code"]: p.value for p in points}
        assert by_status == {"200": 1, "503": 1}
        durations = list(metrics["seawall.http.request.duration"].data.data_points)
        assert sum(p.count for p in durations) == 2
        state = {
            p.attributes["state"]: p.value
            for p in metrics["seawall.breaker.state"].data.data_points
        }
        assert state["closed"] == 1
        provider.shutdown()


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    """Under PROMETHEUS_MULTIPROC_DIR, two worker processes' requests are summed on scrape."""
    worker = textwrap.dedent(
        """
        import sys
        from seawall import Seawall, Metrics
        from tests.apps import wsgi_app, client_for
        metrics = Metrics()
        assert metrics.registry.multiprocess
        client = client_for(Seawall(wsgi_app, layers=[metrics]))
        for _ in range(int(sys.argv[1])):
            client.get("/")
        if sys.argv[2] == "scrape":
            sys.stdout.write(client.get("/metrics").text)
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    workers = [
        subprocess.Popen([sys.executable, "-c", worker, str(n), "no"], env=env, cwd=root)
        for n in (3, 4)
    ]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    out = subprocess.run([sys.executable, "-c", worker, "1", "scrape"], env=env, cwd=root,
                         check=True, timeout=60, capture_output=True, text=True).stdout  # fmt: skip
    families = {f.name: f for f in text_string_to_metric_families(out)}
    requests = samples(families["seawall_http_requests"], "seawall_http_requests_total")
    assert requests[(("method", "GET"), ("route", "<untemplated>"), ("status", "200"))] == 8
    # The answering worker's layer figures carry its pid.
    assert all("pid" in s.labels for s in families["seawall_layer_stat"].samples)
