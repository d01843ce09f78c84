"""LoadShedding: resource signals, the adaptive limit, priorities, shadow mode, draining."""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from seawall import LoadShedding, Outcome, RequestView, Respond
from seawall._observe.adaptive import Gradient2
from seawall._observe.sampler import StaticSignals
from seawall.exceptions import ConfigurationError
from seawall.testing import ManualClock

MakeClient = Callable[..., httpx.Client]


def view(path: str = "/") -> RequestView:
    return RequestView(method="GET", path=path, request_id="rid-1")


def done(layer: LoadShedding, request: RequestView, duration: float = 0.01, **kw: Any) -> None:
    layer.on_complete(request, Outcome(200, None, duration, duration, request.path, **kw))


def never() -> float:
    """An rng that never draws a shed (1.0 is never below a share)."""
    return 1.0


def always() -> float:
    return 0.0


class TestSignals:
    def test_cpu_over_its_threshold_sheds_and_recovers(self, make_client: MakeClient) -> None:
        """Injected CPU readings: 503 problem+json with Retry-After, then admitted again."""
        signals = StaticSignals(cpu=20.0, memory=30.0)
        client = make_client([LoadShedding(signals=signals, cpu_threshold=80, retry_after=3,
                                           rng=always)])  # fmt: skip
        assert client.get("/").status_code == 200
        signals.cpu = 95.0
        response = client.get("/")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"].endswith("#temporary-reduced-capacity")
        assert body["reason"] == "cpu"
        assert body["request_id"] == response.headers["x-request-id"]
        signals.cpu = 40.0
        assert client.get("/").status_code == 200

    def test_memory_over_its_threshold_sheds(self) -> None:
        """Memory pressure sheds like CPU pressure."""
        signals = StaticSignals(memory=99.0)
        layer = LoadShedding(signals=signals, memory_threshold=90, rng=always)
        assert isinstance(layer.on_request(view()), Respond)
        assert layer.stats()["shed"]["memory"] == 1
        signals.memory = 50.0
        assert layer.on_request(view()) is None

    def test_the_shed_share_rises_with_the_overload(self) -> None:
        """From 0 at the threshold to all at threshold + ramp, with an injected rng."""
        signals = StaticSignals(cpu=81.0)
        layer = LoadShedding(signals=signals, cpu_threshold=80, ramp=5, rng=lambda: 0.5)
        assert layer.on_request(view()) is None  # share 0.2 < 0.5
        signals.cpu = 84.0
        assert isinstance(layer.on_request(view()), Respond)  # share 0.8 > 0.5
        signals.cpu = 80.0
        assert layer.on_request(view()) is None  # at the threshold: nothing shed

    def test_no_readings_yet_sheds_nothing(self) -> None:
        """Before the sampler's first reading, signals are None: admit."""
        layer = LoadShedding(signals=StaticSignals(), rng=always)
        assert layer.on_request(view()) is None

    def test_the_default_sampler_starts_lazily(self) -> None:
        """No thread at construction (pre-fork safe); the first request starts it."""
        from seawall._observe.sampler import default_sampler

        sampler = default_sampler()
        layer = LoadShedding()
        layer.on_request(view())
        assert sampler.running


class TestPriorities:
    def test_critical_routes_pass_while_others_are_shed(self, make_client: MakeClient) -> None:
        """CPU overload sheds /search but not /login or /pay/*."""
        layer = LoadShedding(signals=StaticSignals(cpu=99.0), critical=("/login", "/pay/*"),
                             rng=always)  # fmt: skip
        client = make_client([layer])
        assert client.get("/search").status_code == 503
        assert client.get("/login").status_code == 200
        assert client.get("/pay/card").status_code == 200
        assert layer.is_critical("/pay/card")
        assert not layer.is_critical("/payment")
        assert layer.stats()["shed"]["cpu"] == 1

    def test_the_reserved_share_is_kept_for_critical_requests(self) -> None:
        """Limit 10, 20% reserved: others stop at 8 in flight, critical ones at 10."""
        layer = LoadShedding(signals=StaticSignals(), adaptive=False, max_concurrency=10,
                             reserved=0.2, critical=("/login",))  # fmt: skip
        held = [view() for _ in range(8)]
        assert all(layer.on_request(r) is None for r in held)
        refused = layer.on_request(view())
        assert isinstance(refused, Respond)
        assert json.loads(refused.body)["reason"] == "concurrency"
        logins = [view("/login") for _ in range(2)]
        assert all(layer.on_request(r) is None for r in logins)
        assert isinstance(layer.on_request(view("/login")), Respond)
        assert layer.stats()["shed_critical"] == 1
        done(layer, held[0])
        assert layer.on_request(view("/login")) is None
        assert layer.in_flight == 10

    def test_in_flight_never_drifts(
        self, make_client: MakeClient, logs: list[dict[str, Any]]
    ) -> None:
        """Every admitted request releases its slot, errors and refusals included."""
        from seawall import ErrorCapture

        layer = LoadShedding(signals=StaticSignals(cpu=10.0))
        client = make_client([ErrorCapture(), layer], raise_server_exceptions=False)
        for path in ("/", "/status/500", "/boom", "/stream", "/status/404") * 3:
            client.get(path)
        assert layer.in_flight == 0
        assert layer.admitted == 15


class TestModes:
    def test_shadow_mode_counts_but_admits(self, logs: list[dict[str, Any]]) -> None:
        """Shadow: decided and counted, never refused; logged once, not per request."""
        layer = LoadShedding(signals=StaticSignals(cpu=99.0), shadow=True, rng=always)
        for _ in range(5):
            assert layer.on_request(view()) is None
        stats = layer.stats()
        assert stats["shadow_shed"] == 5
        assert stats["shed"]["cpu"] == 5
        assert layer.in_flight == 5
        started = [e for e in logs if e["event"] == "seawall.shedding.started"]
        assert len(started) == 1
        assert started[0]["shadow"] is True

    def test_drain_refuses_everything_and_shutdown_asks_for_time(self) -> None:
        """drain(): even critical requests get 503; on_shutdown returns drain_timeout."""
        layer = LoadShedding(signals=StaticSignals(), critical=("/login",), drain_timeout=7)
        assert layer.on_shutdown() == 7
        refused = layer.on_request(view("/login"))
        assert isinstance(refused, Respond)
        assert refused.status == 503
        assert layer.stats()["shed"]["draining"] == 1
        layer.on_startup()
        assert layer.on_request(view("/login")) is None

    def test_shedding_logs_start_and_stop_once(self, logs: list[dict[str, Any]]) -> None:
        """One line when shedding starts, one when a window passes without any."""
        clock = ManualClock()
        signals = StaticSignals(cpu=99.0)
        layer = LoadShedding(signals=signals, rng=always, clock=clock, window=1.0)
        for _ in range(20):
            layer.on_request(view())
        signals.cpu = 10.0
        for _ in range(3):
            for _ in range(12):
                request = view()
                layer.on_request(request)
                done(layer, request)
            clock.advance(1.1)
        events = [e["event"] for e in logs if e["event"].startswith("seawall.shedding")]
        assert events == ["seawall.shedding.started", "seawall.shedding.stopped"]

    def test_a_fixed_limit_logs_the_stop_too(self, logs: list[dict[str, Any]]) -> None:
        """Without an adaptive limit, a window without refusals still ends the episode."""
        clock = ManualClock()
        layer = LoadShedding(signals=StaticSignals(), adaptive=False, max_concurrency=1,
                             reserved=0.0, clock=clock, window=1.0)  # fmt: skip
        held = view()
        assert layer.on_request(held) is None
        assert isinstance(layer.on_request(view()), Respond)
        done(layer, held)
        clock.advance(0.5)
        request = view()
        assert layer.on_request(request) is None  # admitted, but too soon to call it over
        done(layer, request)
        clock.advance(0.6)
        assert layer.on_request(view()) is None
        events = [e["event"] for e in logs if e["event"].startswith("seawall.shedding")]
        assert events == ["seawall.shedding.started", "seawall.shedding.stopped"]
        assert layer.stats()["shedding"] is False

    def test_invalid_settings_are_refused(self) -> None:
        """Out-of-range thresholds and shares fail at startup."""
        for kw in ({"cpu_threshold": 0}, {"memory_threshold": 120}, {"reserved": 1.0},
                   {"ramp": 0}, {"max_concurrency": 0}, {"critical": ("login",)},
                   {"min_limit": 10, "initial_limit": 5}, {"tolerance": 0.5}):  # fmt: skip
            with pytest.raises(ConfigurationError):
                LoadShedding(**kw)


def simulate(
    capacity: int, base: float, offered: int, seconds: float, limiter: Gradient2
) -> tuple[list[float], list[float]]:
    """A service that runs *capacity* requests at once at *base* latency, queueing the rest.

    *offered* requests arrive per 10 ms; each is admitted while in-flight is
    under the limit, else shed. Returns the limits over time and the latencies.
    """
    now = 0.0
    inflight = 0
    running: list[tuple[float, float, int]] = []  # (finish time, latency, in-flight seen)
    limits: list[float] = []
    latencies: list[float] = []
    step = 0.01
    while now < seconds:
        now += step
        while running and running[0][0] <= now:
            _, latency, seen = heapq.heappop(running)
            inflight -= 1
            limiter.sample(latency, seen, now)
        for _ in range(offered):
            if inflight >= int(limiter.limit):
                continue
            inflight += 1
            # Past the capacity, requests queue: latency grows with the backlog.
            latency = base * max(1.0, inflight / capacity)
            heapq.heappush(running, (now + latency, latency, inflight))
            latencies.append(latency)
        limits.append(limiter.limit)
    return limits, latencies


class TestAdaptive:
    def test_the_limit_converges_near_what_the_service_handles(self) -> None:
        """Offered far more than capacity 50: the limit settles within [capacity, 2.5x]."""
        limiter = Gradient2(initial_limit=20, min_limit=4, max_limit=1000, window=0.5,
                            min_samples=10)  # fmt: skip
        limits, latencies = simulate(
            capacity=50, base=0.05, offered=40, seconds=120, limiter=limiter
        )
        tail = limits[-2000:]
        assert min(tail) >= 50, min(tail)
        assert max(tail) <= 125, max(tail)
        # Admitted requests stay within the tolerance band of the usual latency.
        late = sorted(latencies[-5000:])
        assert late[int(len(late) * 0.99)] <= 0.05 * 2.5

    def test_the_limit_grows_when_latency_stays_flat(self) -> None:
        """No queueing: the limit climbs toward what the load needs."""
        limiter = Gradient2(initial_limit=10, window=0.5)
        limits, _ = simulate(capacity=10_000, base=0.02, offered=30, seconds=30, limiter=limiter)
        assert limits[-1] > 30

    def test_the_limit_is_not_raised_by_an_idle_service(self) -> None:
        """App-limited: with in-flight under half the limit nothing is learned upward."""
        limiter = Gradient2(initial_limit=100)
        for _i in range(100):
            limiter.update(0.01, inflight=3)
        assert limiter.limit == 100

    def test_the_layer_learns_from_on_complete_durations(self) -> None:
        """Durations reported to on_complete move the layer's limit, clock injected."""
        clock = ManualClock()
        layer = LoadShedding(signals=StaticSignals(), initial_limit=20, window=1.0, clock=clock)
        # Phase 1: 20 in flight at 10 ms: the usual latency is learned.
        for _ in range(30):
            batch = [view() for _ in range(20)]
            for r in batch:
                layer.on_request(r)
            for r in batch:
                done(layer, r, 0.010)
            clock.advance(1.0)
        learned = layer.limit
        assert learned > 20
        # Phase 2: latency quadruples under the same load: the limit falls.
        for _ in range(20):
            batch = [view() for _ in range(layer.stats()["limit_for_normal"])]
            for r in batch:
                layer.on_request(r)
            for r in batch:
                done(layer, r, 0.040)
            clock.advance(1.0)
        assert layer.limit < learned
        stats = layer.stats()
        assert stats["latency_ms"]["short"] == pytest.approx(40.0)
        assert stats["in_flight"] == 0

    def test_refusals_inside_do_not_teach_the_limit(self) -> None:
        """A request a rate limiter inside answered says nothing of the app's latency."""
        clock = ManualClock()
        layer = LoadShedding(signals=StaticSignals(), window=0.001, clock=clock)
        assert layer.limiter is not None
        for answered_by in ("ratelimit", None):
            for _ in range(10):
                request = view()
                layer.on_request(request)
                clock.advance(0.01)
                done(layer, request, 5.0, responded_by=answered_by)
            if answered_by is not None:
                assert layer.limiter.updates == 0
        assert layer.limiter.updates == 1
        assert layer.in_flight == 0
