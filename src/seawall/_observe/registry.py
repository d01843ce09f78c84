"""The in-process metrics registry and its Prometheus text exposition.

Theory of operation:

1. **Request metrics are counted here**, by :class:`~seawall.layers.Metrics`
   in ``on_complete``: requests by method, route template and status, a
   duration histogram per method and route, requests in flight, and
   refusals by the layer that answered. A request costs a few dict updates
   and one ``bisect``; no lock (under WSGI threads a rare lost increment is
   the price of none, as in Timing).
2. **Layer figures are pulled at scrape time** from ``wall.stats()``: every
   layer's ``stats()`` already counts what it did, so no layer needs to know
   this registry exists. Known shapes get their own families (breaker
   states and transitions, rate-limit decisions by rule, validation
   rejections and detections, error groups by fingerprint, shed requests by
   reason, the adaptive limit); every other top-level number becomes
   ``seawall_layer_stat{layer, stat}``.
3. **Cardinality is bounded**: routes are templates (never raw paths: an
   untemplated request counts as ``<untemplated>``, a 404 as
   ``<unmatched>``), at most *max_routes* of them (then ``<other>``);
   methods outside the standard ones count as ``OTHER``; error groups are
   capped at the *max_error_groups* most frequent.
4. **Exposition** is the Prometheus text format 0.0.4, written here (no
   dependency). With prometheus-client installed and
   ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn and friends), request metrics
   are also written to its multiprocess files, and a scrape returns them
   summed over every worker, followed by the answering worker's layer
   figures labelled with its ``pid``.
"""

from __future__ import annotations

import math
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

__all__ = [
    "DEFAULT_BUCKETS",
    "Family",
    "Registry",
    "families_from_stats",
    "render_text",
]

#: Duration buckets in seconds (Prometheus client defaults, plus 30 s).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0,
)  # fmt: skip
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
UNTEMPLATED = "<untemplated>"
UNMATCHED = "<unmatched>"
OTHER = "<other>"
_BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
_NAME_OK = re.compile(r"[^a-zA-Z0-9_:]")
# Keys of a nested stats dict exported as stat names: identifiers only, so
# client addresses (digits, colons) and other request data never become labels.
_STAT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,40}")
_PRIVATE_DICTS = ("top", "keys", "clients", "routes", "groups", "paths")


@dataclass(slots=True)
class Family:
    """One metric family: name, type, help and samples ``(suffix, labels, value)``."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        """Append one sample."""
        self.samples.append((suffix, labels, float(value)))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render_text(families: Iterable[Family]) -> bytes:
    """Serialise *families* in the Prometheus text format 0.0.4."""
    lines: list[str] = []
    for fam in families:
        # Text format 0.0.4 names a counter by its sample name, ``_total`` included.
        head = fam.name + "_total" if fam.type == "counter" else fam.name
        lines.append(f"# HELP {head} {fam.help.replace(chr(92), chr(92) * 2)}")
        lines.append(f"# TYPE {head} {fam.type}")
        for suffix, labels, value in fam.samples:
            if labels:
                text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                lines.append(f"{fam.name}{suffix}{{{text}}} {_number(value)}")
            else:
                lines.append(f"{fam.name}{suffix} {_number(value)}")
    lines.append("")
    return "\n".join(lines).encode()


class _Hist:
    __slots__ = ("count", "counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)
        self.count = 0
        self.sum = 0.0


class Registry:
    """Request counters and histograms, plus the families pulled from layer stats.

    Args:
        buckets: histogram bucket bounds in seconds (sorted, ``+Inf`` implied).
        max_routes: distinct route labels kept; the rest count as ``<other>``.
        route_label: maps an untemplated path to a label (default: ``<untemplated>``).
        prefix: metric name prefix.
        max_error_groups: at most this many error fingerprints are exported.
    """

    def __init__(
        self,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_routes: int = 200,
        route_label: Callable[[str], str] | None = None,
        prefix: str = "seawall",
        max_error_groups: int = 50,
    ) -> None:
        self.buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self.max_routes = max_routes
        self.route_label = route_label
        self.prefix = _NAME_OK.sub("_", prefix)
        self.max_error_groups = max_error_groups
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], _Hist] = {}
        self.rejections: dict[tuple[str, str], int] = {}
        self.in_flight = 0
        #: Route labels handed out so far (bounded by *max_routes*).
        self.known_routes: set[str] = set()
        self._mp: _Multiprocess | None = None

    def enable_multiprocess(self) -> bool:
        """Also write request metrics to prometheus-client multiprocess files, if possible."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return False
        try:
            self._mp = _Multiprocess(self)
        except ImportError:
            return False
        return True

    @property
    def multiprocess(self) -> bool:
        """Whether request metrics go to prometheus-client's multiprocess files."""
        return self._mp is not None

    def label_route(self, route: str, templated: bool, status: int | None) -> str:
        """The bounded route label of a request."""
        if not templated:
            if status == 404:
                return UNMATCHED
            if self.route_label is None:
                return UNTEMPLATED
            route = self.route_label(route)
        if route not in self.known_routes:
            if len(self.known_routes) >= self.max_routes:
                return OTHER
            self.known_routes.add(route)
        return route

    def observe(
        self,
        method: str,
        route: str,
        status: int | None,
        duration: float,
        responded_by: str | None = None,
    ) -> None:
        """Count one finished request (called from ``on_complete``)."""
        if method not in METHODS:
            method = "OTHER"
        code = str(status) if status is not None else "none"
        key = (method, route, code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        hist = self.durations.get((method, route))
        if hist is None:
            hist = self.histogram(method, route)
        hist.counts[bisect_left(self.buckets, duration)] += 1
        hist.count += 1
        hist.sum += duration
        if responded_by is not None:
            rkey = (responded_by, code)
            self.rejections[rkey] = self.rejections.get(rkey, 0) + 1
        if self._mp is not None:
            self._mp.observe(method, route, code, duration, responded_by)

    def histogram(self, method: str, route: str) -> _Hist:
        """The duration histogram of *method* and *route* (created on first use)."""
        return self.durations.setdefault((method, route), _Hist(len(self.buckets)))

    def started(self) -> None:
        """One more request in flight."""
        self.in_flight += 1
        if self._mp is not None:
            self._mp.in_flight.inc()

    def finished(self) -> None:
        """One request fewer in flight."""
        self.in_flight -= 1
        if self._mp is not None:
            self._mp.in_flight.dec()

    def request_families(self) -> list[Family]:
        """The families of request metrics counted in this process."""
        p = self.prefix
        total = Family(f"{p}_http_requests", "counter", "Requests by method, route and status.")
        for (method, route, code), n in sorted(self.requests.items()):
            total.add(n, "_total", method=method, route=route, status=code)
        hist = Family(
            f"{p}_http_request_duration_seconds",
            "histogram",
            "Request duration from arrival to the last body byte.",
        )
        bounds = [*(_number(b) for b in self.buckets), "+Inf"]
        for (method, route), h in sorted(self.durations.items()):
            cumulative = 0
            for bound, n in zip(bounds, h.counts, strict=True):
                cumulative += n
                hist.add(cumulative, "_bucket", method=method, route=route, le=bound)
            hist.add(h.count, "_count", method=method, route=route)
            hist.add(h.sum, "_sum", method=method, route=route)
        flight = Family(f"{p}_http_requests_in_flight", "gauge", "Requests being handled now.")
        flight.add(self.in_flight)
        rejected = Family(
            f"{p}_rejections", "counter", "Requests answered by a layer instead of the app."
        )
        for (layer, code), n in sorted(self.rejections.items()):
            rejected.add(n, "_total", layer=layer, status=code)
        return [total, hist, flight, rejected]

    def families(self, stats: Mapping[str, Any], *, pid: bool = False) -> list[Family]:
        """Every family: request metrics, then those pulled from layer *stats*."""
        fams = [] if self._mp is not None else self.request_families()
        fams.extend(families_from_stats(stats, self.prefix, self.max_error_groups))
        if pid:
            label = str(os.getpid())
            for fam in fams:
                fam.samples = [(s, {**labels, "pid": label}, v) for s, labels, v in fam.samples]
        return fams

    def render(self, stats: Mapping[str, Any]) -> bytes:
        """The ``/metrics`` body."""
        if self._mp is not None:
            return self._mp.render() + render_text(self.families(stats, pid=True))
        return render_text(self.families(stats))

    def reset(self) -> None:
        """Forget every count (for tests; in-flight is kept)."""
        self.requests.clear()
        self.durations.clear()
        self.rejections.clear()
        self.known_routes.clear()


class _Multiprocess:
    """Request metrics mirrored into prometheus-client's multiprocess files."""

    def __init__(self, registry: Registry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        p = registry.prefix
        self.requests = Counter(
            f"{p}_http_requests", "Requests by method, route and status.",
            ["method", "route", "status"], registry=None,
        )  # fmt: skip
        self.duration = Histogram(
            f"{p}_http_request_duration_seconds",
            "Request duration from arrival to the last body byte.",
            ["method", "route"],
            buckets=registry.buckets,
            registry=None,
        )
        self.in_flight = Gauge(
            f"{p}_http_requests_in_flight", "Requests being handled now.",
            multiprocess_mode="livesum", registry=None,
        )  # fmt: skip
        self.rejections = Counter(
            f"{p}_rejections", "Requests answered by a layer instead of the app.",
            ["layer", "status"], registry=None,
        )  # fmt: skip

    def observe(
        self, method: str, route: str, code: str, duration: float, responded_by: str | None
    ) -> None:
        self.requests.labels(method, route, code).inc()
        self.duration.labels(method, route).observe(duration)
        if responded_by is not None:
            self.rejections.labels(responded_by, code).inc()

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))


# -- families pulled from layer stats -------------------------------------------


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _breakers(layer_stats: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Breakers described by a layer's stats: ``breakers: {name: {...}}`` or a top-level state."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    many = layer_stats.get("breakers")
    if isinstance(many, Mapping):
        for name, item in many.items():
            if isinstance(item, Mapping) and isinstance(item.get("state"), str):
                found.append((str(name), item))
    elif isinstance(many, list):
        for item in many:
            if isinstance(item, Mapping) and isinstance(item.get("state"), str):
                found.append((str(item.get("name", "default")), item))
    elif isinstance(layer_stats.get("state"), str):
        found.append((str(layer_stats.get("name", "default")), layer_stats))
    return found


def families_from_stats(
    stats: Mapping[str, Any], prefix: str = "seawall", max_error_groups: int = 50
) -> list[Family]:
    """Families from ``wall.stats()``: breakers, errors, shedding, and generic numbers.

    Reads defensively: a layer whose stats do not have the documented shape
    only contributes its top-level numbers to ``<prefix>_layer_stat``.
    """
    p = prefix
    state = Family(f"{p}_breaker_state", "gauge", "1 for the state each breaker is in.")
    transitions = Family(
        f"{p}_breaker_transitions", "counter", "Breaker state changes, by target state."
    )
    errors = Family(f"{p}_errors_captured", "counter", "Captured exceptions by fingerprint.")
    shed = Family(f"{p}_shed_requests", "counter", "Requests refused by load shedding, by reason.")
    limit = Family(f"{p}_concurrency_limit", "gauge", "The current (adaptive) concurrency limit.")
    decisions = Family(
        f"{p}_ratelimit_decisions", "counter", "Rate-limit decisions by rule and decision."
    )
    vrejects = Family(
        f"{p}_validation_rejections", "counter", "Requests validation refused, by reason."
    )
    detections = Family(f"{p}_validation_detections", "counter", "Threat rules that matched.")
    generic = Family(f"{p}_layer_stat", "gauge", "Top-level numbers of each layer's stats().")
    for layer, layer_stats in stats.items():
        if not isinstance(layer_stats, Mapping):
            continue
        for bname, item in _breakers(layer_stats):
            current = str(item["state"]).lower().replace("-", "_").replace(" ", "_")
            states = _BREAKER_STATES if current in _BREAKER_STATES else (*_BREAKER_STATES, current)
            for s in states:
                state.add(1 if s == current else 0, breaker=bname, state=s)
            moves = item.get("transitions")
            if isinstance(moves, Mapping):
                for target, n in moves.items():
                    if _is_number(n):
                        transitions.add(n, "_total", breaker=bname, to=str(target))
            elif _is_number(moves):
                transitions.add(moves, "_total", breaker=bname, to="any")
        groups = layer_stats.get("groups")
        if isinstance(groups, list):
            ranked = sorted(
                (g for g in groups if isinstance(g, Mapping) and _is_number(g.get("count"))),
                key=lambda g: -g["count"],
            )
            for g in ranked[:max_error_groups]:
                errors.add(
                    g["count"],
                    "_total",
                    fingerprint=str(g.get("fingerprint", "")),
                    type=str(g.get("type", "")),
                )
        rules = layer_stats.get("rules")
        if isinstance(rules, Mapping):
            for rule, counts in rules.items():
                if isinstance(counts, Mapping):
                    for decision, n in counts.items():
                        if _is_number(n):
                            decisions.add(n, "_total", layer=str(layer), rule=str(rule),
                                          decision=str(decision))  # fmt: skip
        found = layer_stats.get("rejected_by_reason")
        if isinstance(found, Mapping):
            for name, n in found.items():
                if _is_number(n):
                    vrejects.add(n, "_total", layer=str(layer), reason=str(name))
        # Threat rules that matched: counted as detections in monitor mode and
        # as rejections by rule in block mode; both are detections.
        for key, mode in (("detections", "monitor"), ("rejected_by_rule", "block")):
            found = layer_stats.get(key)
            if isinstance(found, Mapping):
                for name, n in found.items():
                    if _is_number(n):
                        detections.add(n, "_total", layer=str(layer), rule=str(name), mode=mode)
        reasons = layer_stats.get("shed")
        if isinstance(reasons, Mapping):
            for reason, n in reasons.items():
                if _is_number(n):
                    shed.add(n, "_total", layer=str(layer), reason=str(reason))
            cap = layer_stats.get("limit")
            if _is_number(cap):
                limit.add(float(cap), layer=str(layer))
        for key, value in layer_stats.items():
            if _is_number(value):
                generic.add(value, layer=str(layer), stat=str(key))
            elif (
                isinstance(value, Mapping)
                and 0 < len(value) <= 20
                and not str(key).startswith(_PRIVATE_DICTS)
            ):
                # Small dicts of counters (decisions by kind, shed by reason):
                # their keys are names the layer chose, not request data.
                for sub, n in value.items():
                    if _is_number(n) and _STAT_KEY.fullmatch(str(sub)):
                        generic.add(n, layer=str(layer), stat=f"{key}.{sub}")
    fams = (state, transitions, errors, shed, limit, decisions, vrejects, detections, generic)
    return [f for f in fams if f.samples]
