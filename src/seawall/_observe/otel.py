"""Export the registry through OpenTelemetry metrics (when its SDK is installed).

Request counts, in-flight and refusals are observable instruments read from
the registry at collection time; durations go to a histogram recorded per
request (the only per-request cost, paid only when this bridge is on). Layer
figures are observable gauges built from ``wall.stats()`` at collection time,
computed once per collection and shared by every callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from seawall._observe.registry import Family, Registry, families_from_stats

__all__ = ["OTelBridge", "otel_sdk_active"]


def otel_sdk_active() -> bool:
    """Whether the OpenTelemetry SDK is installed and a real MeterProvider is set."""
    try:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
    except ImportError:
        return False
    return isinstance(metrics.get_meter_provider(), MeterProvider)


class OTelBridge:
    """Instruments on an OpenTelemetry meter that read a :class:`Registry`.

    Args:
        registry: the registry the Metrics layer feeds.
        stats: returns ``wall.stats()`` (the layer figures).
        meter_provider: the provider (default: the global one).
    """

    def __init__(
        self,
        registry: Registry,
        stats: Callable[[], Mapping[str, Any]],
        meter_provider: Any = None,
    ) -> None:
        from opentelemetry import metrics
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self.registry = registry
        self._stats = stats
        self._cache: tuple[float, dict[str, Family]] | None = None
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("seawall")
        meter.create_observable_counter(
            "seawall.http.requests", callbacks=[self._requests], unit="{request}",
            description="Requests by method, route and status.",
        )  # fmt: skip
        meter.create_observable_up_down_counter(
            "seawall.http.requests.in_flight", callbacks=[self._in_flight], unit="{request}",
            description="Requests being handled now.",
        )  # fmt: skip
        meter.create_observable_counter(
            "seawall.rejections", callbacks=[self._rejections], unit="{request}",
            description="Requests answered by a layer instead of the app.",
        )  # fmt: skip
        self.duration = meter.create_histogram(
            "seawall.http.request.duration", unit="s",
            description="Request duration from arrival to the last body byte.",
        )  # fmt: skip
        for name in ("breaker_state", "breaker_transitions", "errors_captured",
                     "shed_requests", "concurrency_limit", "ratelimit_decisions",
                     "validation_rejections", "validation_detections", "layer_stat"):  # fmt: skip
            meter.create_observable_gauge(
                f"seawall.{name.replace('_', '.')}", callbacks=[self._family(name)]
            )

    def __repr__(self) -> str:
        return f"OTelBridge(registry={self.registry!r})"

    def record(self, method: str, route: str, status: int | None, duration: float) -> None:
        """Record one request's duration."""
        self.duration.record(
            duration,
            {
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status or 0,
            },
        )

    def _requests(self, options: Any) -> Iterable[Any]:
        obs = self._observation
        return [
            obs(n, {"http.request.method": m, "http.route": r, "http.response.status_code": s})
            for (m, r, s), n in list(self.registry.requests.items())
        ]

    def _in_flight(self, options: Any) -> Iterable[Any]:
        return [self._observation(self.registry.in_flight)]

    def _rejections(self, options: Any) -> Iterable[Any]:
        obs = self._observation
        return [
            obs(n, {"seawall.layer": layer, "http.response.status_code": code})
            for (layer, code), n in list(self.registry.rejections.items())
        ]

    def _families(self) -> dict[str, Family]:
        now = time.monotonic()
        cached = self._cache
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        prefix = self.registry.prefix + "_"
        fams = {
            f.name[len(prefix) :]: f
            for f in families_from_stats(self._stats(), self.registry.prefix)
        }
        self._cache = (now, fams)
        return fams

    def _family(self, name: str) -> Callable[[Any], Iterable[Any]]:
        def callback(options: Any) -> Iterable[Any]:
            fam = self._families().get(name)
            if fam is None:
                return []
            return [self._observation(value, labels) for _, labels, value in fam.samples]

        return callback
