"""Metrics: count every request and expose the wall's figures to Prometheus.

The layer counts requests in ``on_complete`` into an in-process
:class:`~seawall._observe.registry.Registry` (method, route template,
status, duration histogram, in-flight, refusals by layer) and answers
``GET /metrics`` with the Prometheus text format, adding what every other
layer reports through ``stats()`` (breakers, rate-limit decisions,
validation, error groups, shed requests) read at scrape time. Under a
pre-forking server with ``PROMETHEUS_MULTIPROC_DIR`` set (and
prometheus-client installed) request metrics are summed over every worker.
With the OpenTelemetry SDK configured, the same figures go to its meter.
"""

from __future__ import annotations

import asyncio
import hmac
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from seawall._core.decisions import Respond
from seawall._core.layer import ORDER, Outcome
from seawall._core.request import RequestView
from seawall._observe.registry import DEFAULT_BUCKETS, METHODS, Registry
from seawall.exceptions import ConfigurationError

__all__ = ["PROMETHEUS_CONTENT_TYPE", "Metrics", "Scrape", "bearer_matches"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NO_STORE = (("Cache-Control", "no-store"),)


def bearer_matches(header: str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <token>``, compared in constant time.

    The scheme is case-insensitive (RFC 9110 section 11.1); the token is not.
    """
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1", "replace"), token
    )


@dataclass(frozen=True, slots=True)
class Scrape:
    """Effect: render the exposition (multiprocess mode reads files, hence an effect)."""

    metrics: Metrics

    def run(self) -> bytes:
        """Render on this thread."""
        return self.metrics.render()

    async def arun(self) -> bytes:
        """Render; in multiprocess mode off the event loop (it reads files)."""
        if self.metrics.registry.multiprocess:
            return await asyncio.to_thread(self.metrics.render)
        return self.metrics.render()


class Metrics:
    """Count requests and serve Prometheus metrics at *path*.

    Args:
        path: where the exposition is served (``None``: not served; use
            :meth:`render` or OpenTelemetry).
        token: if set, scrapes must send ``Authorization: Bearer <token>``.
        buckets: duration histogram bounds in seconds.
        max_routes: distinct route labels; the rest count as ``<other>``.
        route_label: maps the path of an untemplated request to a label (it
            must return few distinct values); default ``<untemplated>``.
        prefix: metric name prefix.
        layer_stats: export the other layers' ``stats()`` at scrape time.
        multiprocess: write request metrics to prometheus-client's
            multiprocess files (``None``: when ``PROMETHEUS_MULTIPROC_DIR`` is set).
        opentelemetry: export through OpenTelemetry (``None``: when its SDK is
            installed and a MeterProvider is configured).
        meter_provider: the OpenTelemetry provider (default: the global one).
        max_error_groups: error fingerprints exported at most.
    """

    name: ClassVar[str] = "metrics"
    order: ClassVar[int] = ORDER["metrics"]

    def __init__(
        self,
        *,
        path: str | None = "/metrics",
        token: str | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_routes: int = 200,
        route_label: Callable[[str], str] | None = None,
        prefix: str = "seawall",
        layer_stats: bool = True,
        multiprocess: bool | None = None,
        opentelemetry: bool | None = None,
        meter_provider: Any = None,
        max_error_groups: int = 50,
    ) -> None:
        if path is not None and not path.startswith("/"):
            msg = f"path: expected a path starting with '/', got {path!r}"
            raise ConfigurationError(msg)
        if max_routes < 1:
            msg = f"max_routes: expected a whole number >= 1, got {max_routes!r}"
            raise ConfigurationError(msg)
        if not buckets or any(b <= 0 for b in buckets):
            msg = f"buckets: expected positive bounds in seconds, got {buckets!r}"
            raise ConfigurationError(msg)
        self.path = path
        self._token = token.encode() if token else None
        self.layer_stats = layer_stats
        self.registry = Registry(
            buckets=buckets,
            max_routes=max_routes,
            route_label=route_label,
            prefix=prefix,
            max_error_groups=max_error_groups,
        )
        if multiprocess is not False and not self.registry.enable_multiprocess() and multiprocess:
            msg = "multiprocess: needs prometheus-client and PROMETHEUS_MULTIPROC_DIR"
            raise ConfigurationError(msg)
        self._mp = self.registry.multiprocess
        self._wall: Any = None
        self.scrapes = 0
        self.otel: Any = None
        if opentelemetry is None:
            from seawall._observe.otel import otel_sdk_active

            opentelemetry = otel_sdk_active() or meter_provider is not None
        if opentelemetry:
            try:
                from seawall._observe.otel import OTelBridge

                self.otel = OTelBridge(self.registry, self._layer_stats, meter_provider)
            except ImportError as exc:
                msg = f"opentelemetry: the OpenTelemetry SDK is not installed ({exc})"
                raise ConfigurationError(msg) from None

    def __repr__(self) -> str:
        return (
            f"Metrics(path={self.path!r}, multiprocess={self.registry.multiprocess}, "
            f"opentelemetry={self.otel is not None})"
        )

    def bind(self, wall: Any) -> None:
        """Remember the wall, to read every layer's ``stats()`` at scrape time."""
        self._wall = wall

    def _layer_stats(self) -> dict[str, Any]:
        if not self.layer_stats or self._wall is None:
            return {}
        return dict(self._wall.stats())

    def render(self) -> bytes:
        """The Prometheus text exposition of everything the registry knows."""
        self.scrapes += 1
        return self.registry.render(self._layer_stats())

    # -- hooks ----------------------------------------------------------------

    def on_request(self, request: RequestView) -> Any:
        """Serve the exposition at *path*; count every other request in flight."""
        if request.path == self.path:
            return self._scrape(request)
        registry = self.registry
        if self._mp:
            registry.started()
        else:
            registry.in_flight += 1  # the hot path: no call
        request.state[self] = True
        return None

    def _scrape(self, request: RequestView) -> Any:
        if request.method not in ("GET", "HEAD"):
            return Respond.problem(
                405, "method-not-allowed", "Method Not Allowed",
                "The metrics endpoint answers GET and HEAD.", headers=(("Allow", "GET, HEAD"),),
            )  # fmt: skip
        if self._token is not None and not bearer_matches(
            request.header("authorization"), self._token
        ):
            return Respond.problem(
                401, "unauthorized", "Unauthorized", "A valid bearer token is required.",
                headers=(("WWW-Authenticate", 'Bearer realm="metrics"'),),
            )  # fmt: skip
        return self._render_flow()

    def _render_flow(self) -> Any:
        body = yield Scrape(self)
        return Respond(200, body, _NO_STORE, content_type=PROMETHEUS_CONTENT_TYPE)

    def on_complete(self, request: RequestView, outcome: Outcome) -> None:
        """Count the finished request."""
        if request.state.pop(self, None) is None:
            return
        registry = self.registry
        status = outcome.status
        route = outcome.route
        if not outcome.templated or route not in registry.known_routes:
            route = registry.label_route(route, outcome.templated, status)
        if self._mp or self.otel is not None or outcome.responded_by is not None:
            registry.finished()
            registry.observe(request.method, route, status, outcome.duration, outcome.responded_by)
            if self.otel is not None:
                self.otel.record(request.method, route, status, outcome.duration)
            return
        # The hot path, Registry.observe() inlined: one request costs a few
        # dict operations and a bisect.
        registry.in_flight -= 1
        method = request.method
        if method not in METHODS:
            method = "OTHER"
        key = (method, route, str(status) if status is not None else "none")
        requests = registry.requests
        requests[key] = requests.get(key, 0) + 1
        duration = outcome.duration
        hist = registry.durations.get((method, route))
        if hist is None:
            hist = registry.histogram(method, route)
        hist.counts[bisect_left(registry.buckets, duration)] += 1
        hist.count += 1
        hist.sum += duration

    def stats(self) -> dict[str, Any]:
        """Series counts and scrapes (the registry's own figures)."""
        reg = self.registry
        return {
            "requests": sum(reg.requests.values()),
            "in_flight": reg.in_flight,
            "series": len(reg.requests),
            "routes": len(reg.durations),
            "scrapes": self.scrapes,
            "multiprocess": reg.multiprocess,
        }

    def reset(self) -> None:
        """Forget every count (for tests)."""
        self.registry.reset()
        self.scrapes = 0
