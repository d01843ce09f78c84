"""Timing: ``Server-Timing``, response time, slow-request warnings, per-route latency.

``Server-Timing`` goes out with the response start, so it reports time up to
the first byte: ``total`` (arrival to response start) and ``seawall`` (time
spent in the layers before the app; the app's share is the difference). Time to
first byte and the full duration (last body chunk on ASGI, ``close()`` on
WSGI) are recorded per route template in bounded histograms.
"""

from __future__ import annotations

import threading
from bisect import bisect_right as _bucket
from collections.abc import Callable
from time import perf_counter
from typing import Any, ClassVar

from seawall._core.histogram import _BOUNDS, LogHistogram
from seawall._core.layer import ORDER, Outcome
from seawall._core.request import RequestView
from seawall._log import logger
from seawall.exceptions import ConfigurationError

__all__ = ["Timing"]

# One %-format renders both floats in a single C call, cheaper than an
# f-string with two format specs (same text).
_SERVER_TIMING = "total;dur=%.3f, seawall;dur=%.3f"
OTHER_ROUTES = "<other>"
UNMATCHED = "<unmatched>"
REFUSED = "<refused>"


class _RouteStats:
    __slots__ = ("duration", "errors", "slow", "ttfb")

    def __init__(self) -> None:
        self.duration = LogHistogram()
        self.ttfb = LogHistogram()
        self.errors = 0
        self.slow = 0


class Timing:
    """Measure each request and say how long it took.

    Args:
        server_timing: add a ``Server-Timing`` header (``total`` and ``seawall``).
        response_time_header: also add ``X-Response-Time: 12.345ms`` (give a
            header name to use another one; ``False`` for none).
        slow: log ``seawall.request.slow`` for requests slower than this many
            seconds (``None`` to never warn).
        max_routes: at most this many routes get their own statistics; the
            rest are counted under ``"<other>"`` (bounded memory whatever the
            paths clients invent).
        clock: ``perf_counter``-like clock (injected in tests).
    """

    name: ClassVar[str] = "timing"
    order: ClassVar[int] = ORDER["timing"]

    def __init__(
        self,
        *,
        server_timing: bool = True,
        response_time_header: bool | str = False,
        slow: float | None = 1.0,
        max_routes: int = 500,
        clock: Callable[[], float] = perf_counter,
    ) -> None:
        if slow is not None and slow <= 0:
            msg = f"slow: expected a positive number of seconds or None, got {slow!r}"
            raise ConfigurationError(msg)
        if max_routes < 1:
            msg = f"max_routes: expected a whole number >= 1, got {max_routes!r}"
            raise ConfigurationError(msg)
        self.server_timing = server_timing
        if response_time_header is True:
            response_time_header = "X-Response-Time"
        self.response_time_header = response_time_header or None
        self.slow = slow
        self.max_routes = max_routes
        self._clock = clock
        self._routes: dict[str, _RouteStats] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.slow_requests = 0
        if not server_timing and not self.response_time_header:
            # Nothing to add to the response: skip the hook entirely.
            self.add_headers = None  # type: ignore[method-assign,assignment]
        elif not self.response_time_header:
            self.add_headers = self._server_timing_only  # type: ignore[method-assign,assignment]

    def __repr__(self) -> str:
        return (
            f"Timing(server_timing={self.server_timing}, "
            f"response_time_header={self.response_time_header!r}, slow={self.slow})"
        )

    def add_headers(self, request: RequestView, status: int) -> list[tuple[str, str]] | None:
        """The ``Server-Timing`` (and ``X-Response-Time``) lines for the response start."""
        started = request.started
        total = (self._clock() - started) * 1000.0
        lines = []
        if self.server_timing:
            ours = (request.admitted - started) * 1000.0
            lines.append(("server-timing", _SERVER_TIMING % (total, ours)))
        if self.response_time_header:
            lines.append((self.response_time_header, f"{total:.3f}ms"))
        return lines

    def _server_timing_only(self, request: RequestView, status: int) -> tuple[tuple[str, str]]:
        # The default configuration: one line, no list built, no flag tested.
        started = request.started
        return (
            (
                "server-timing",
                _SERVER_TIMING
                % ((self._clock() - started) * 1000.0, (request.admitted - started) * 1000.0),
            ),
        )

    def on_complete(self, request: RequestView, outcome: Outcome) -> None:
        """Record the request's duration and time to first byte; warn if slow."""
        status = outcome.status
        route = outcome.route
        if not outcome.templated:
            # No router named the route: a 404, or a request a layer refused
            # before routing, gives a client-chosen path; keyed by it, a
            # client could fill every route slot.
            if status == 404:
                route = UNMATCHED
            elif outcome.responded_by is not None:
                route = REFUSED
        stats = self._routes.get(route)
        if stats is None:
            stats = self._add_route(route)
        duration = outcome.duration
        # LogHistogram.record, inline (keep the two in step): two calls
        # fewer on every request.
        histogram = stats.duration
        histogram._counts[_bucket(_BOUNDS, duration)] += 1
        histogram.total += duration
        if duration > histogram.max:
            histogram.max = duration
        ttfb = outcome.ttfb
        if ttfb is not None:
            histogram = stats.ttfb
            histogram._counts[_bucket(_BOUNDS, ttfb)] += 1
            histogram.total += ttfb
            if ttfb > histogram.max:
                histogram.max = ttfb
        if outcome.exception is not None or outcome.timed_out or (status or 0) >= 500:
            stats.errors += 1
        self.requests += 1
        slow = self.slow
        if slow is not None and duration > slow:
            self._slow(request, outcome, route, stats, slow)

    def _add_route(self, route: str) -> _RouteStats:
        # Lock only to add a route: the per-request counters are plain
        # increments under the GIL (a rare lost count under heavy thread
        # contention is the price of no lock per request).
        with self._lock:
            if len(self._routes) >= self.max_routes and route not in self._routes:
                route = OTHER_ROUTES
            return self._routes.setdefault(route, _RouteStats())

    def _slow(
        self, request: RequestView, outcome: Outcome, route: str, stats: _RouteStats, slow: float
    ) -> None:
        stats.slow += 1
        self.slow_requests += 1
        logger.warning(
            "seawall.request.slow",
            request_id=request.request_id,
            method=request.method,
            route=route,
            status=outcome.status,
            duration_ms=round(outcome.duration * 1000.0, 3),
            ttfb_ms=None if outcome.ttfb is None else round(outcome.ttfb * 1000.0, 3),
            threshold_ms=round(slow * 1000.0, 3),
        )

    def route_stats(self, route: str) -> dict[str, Any] | None:
        """Statistics of one route template, or ``None`` if it was never seen."""
        with self._lock:
            stats = self._routes.get(route)
            return None if stats is None else self._snapshot(stats)

    @staticmethod
    def _snapshot(stats: _RouteStats) -> dict[str, Any]:
        d, t = stats.duration, stats.ttfb

        def ms(seconds: float) -> float:
            return round(seconds * 1000.0, 3)

        return {
            "count": d.count,
            "errors": stats.errors,
            "slow": stats.slow,
            "mean_ms": ms(d.mean()),
            "p50_ms": ms(d.percentile(50)),
            "p95_ms": ms(d.percentile(95)),
            "p99_ms": ms(d.percentile(99)),
            "max_ms": ms(d.max),
            "ttfb_p50_ms": ms(t.percentile(50)),
            "ttfb_p99_ms": ms(t.percentile(99)),
        }

    def stats(self) -> dict[str, Any]:
        """Requests, slow requests and per-route latency percentiles (milliseconds)."""
        with self._lock:
            routes = {name: self._snapshot(s) for name, s in self._routes.items()}
            return {
                "requests": self.requests,
                "slow_requests": self.slow_requests,
                "slow_threshold_ms": None if self.slow is None else self.slow * 1000.0,
                "routes": routes,
            }

    def reset(self) -> None:
        """Forget every statistic (for tests)."""
        with self._lock:
            self._routes.clear()
            self.requests = 0
            self.slow_requests = 0
