"""The Health layer: liveness, readiness, the report, caching, storages, draining."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.apps import asgi_app, client_for
from tests.observability.conftest import PausableRedis, free_port, make_sampler

from seawall import Health, LoadShedding, Seawall
from seawall._observe.sampler import StaticSignals
from seawall.exceptions import ConfigurationError
from seawall.testing import ManualClock

MakeClient = Callable[..., httpx.Client]


def quiet_health(**kw: Any) -> Health:
    """Health on a made-up, healthy sampler (no real machine figures in assertions)."""
    kw.setdefault("sampler", make_sampler(cpu=5.0, memory=20.0, disk_used=1, disk_total=10))
    return Health(**kw)


class FakeStorageLayer:
    """A layer that keeps its state in a store, the way RateLimit does."""

    name = "ratelimit"
    order = 500

    def __init__(self, storage_uri: str, on_storage_error: str = "allow") -> None:
        self.storage_uri = storage_uri
        self.on_storage_error = on_storage_error


class TestProbes:
    def test_liveness_passes_whatever_the_checks_say(self, make_client: MakeClient) -> None:
        """Liveness never depends on external services."""
        client = make_client([quiet_health(checks={"db": lambda: False})])
        response = client.get("/health/live")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/health+json"
        assert response.json() == {"status": "pass"}
        assert client.get("/health/ready").status_code == 503

    def test_readiness_names_the_failing_checks(self, make_client: MakeClient) -> None:
        """503 and the names of failing critical checks, nothing more."""
        client = make_client([quiet_health(checks={"db:query": lambda: False, "ok": lambda: True})])
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json() == {"status": "fail", "failing": ["db:query"]}

    def test_the_report_shows_every_check_with_timings(self, make_client: MakeClient) -> None:
        """health+json: status per check, observed values and units, duration."""
        client = make_client([quiet_health(checks={"cache": lambda: "warn"})])
        response = client.get("/health")
        assert response.status_code == 200
        doc = response.json()
        assert doc["status"] == "warn"
        checks = doc["checks"]
        assert set(checks) >= {"cpu:utilization", "memory:utilization", "disk:utilization",
                               "open-files:utilization", "resources:trend", "cache"}  # fmt: skip
        memory = checks["memory:utilization"][0]
        assert memory["status"] == "pass"
        assert memory["observedValue"] == 20.0
        assert memory["observedUnit"] == "%"
        assert memory["componentType"] == "system"
        assert all("duration_ms" in item and "time" in item for v in checks.values() for item in v)
        assert checks["cache"][0]["status"] == "warn"
        assert response.headers["cache-control"] == "no-store"

    def test_a_warning_keeps_the_service_ready(self, make_client: MakeClient) -> None:
        """Warn answers 200: only failures take an instance out of rotation."""
        sampler = make_sampler(cpu=95.0, memory=20.0)
        client = make_client([Health(sampler=sampler, trend=False)])
        response = client.get("/health/ready")
        assert response.status_code == 200
        assert response.json() == {"status": "warn"}

    def test_memory_over_its_fail_threshold_makes_the_service_unready(
        self, make_client: MakeClient
    ) -> None:
        """Injected thresholds decide readiness."""
        sampler = make_sampler(cpu=5.0, memory=70.0)
        client = make_client([Health(sampler=sampler, memory_warn=50, memory_fail=60)])
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["failing"] == ["memory:utilization"]

    def test_paths_are_configurable_and_others_pass_through(self, make_client: MakeClient) -> None:
        """Custom paths answer; the defaults and other paths reach the app."""
        client = make_client([quiet_health(live_path="/livez", ready_path="/readyz",
                                           report_path=None)])  # fmt: skip
        assert client.get("/livez").json() == {"status": "pass"}
        assert client.get("/readyz").status_code == 200
        assert client.get("/health").text == "ok"
        assert client.get("/").text == "ok"

    def test_other_methods_are_refused(self, make_client: MakeClient) -> None:
        """POST to a probe: 405 problem+json with Allow."""
        response = make_client([quiet_health()]).post("/health/ready")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"
        assert response.headers["content-type"] == "application/problem+json"

    def test_async_checks_run_under_both_drivers(self, make_client: MakeClient) -> None:
        """A coroutine check runs on the loop (ASGI) or in a thread (WSGI)."""

        async def replica() -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"status": "warn", "output": "replica lag 3 s", "observed_value": 3}

        doc = make_client([quiet_health(checks={"replica": replica})]).get("/health").json()
        assert doc["checks"]["replica"][0]["output"] == "replica lag 3 s"

    def test_a_hanging_check_fails_at_its_timeout(self, make_client: MakeClient) -> None:
        """A custom check that hangs costs its timeout, then fails readiness."""

        async def hangs() -> bool:
            await asyncio.sleep(30)
            return True

        client = make_client([quiet_health(checks={"slow": hangs}, check_timeout=0.1)])
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["failing"] == ["slow"]


class TestCache:
    def test_results_are_reused_for_cache_for_seconds(self, make_client: MakeClient) -> None:
        """Probes within the interval reuse the last run; the dependency is called once."""
        calls: list[int] = []
        clock = ManualClock()
        health = quiet_health(checks={"db": lambda: calls.append(1)}, cache_for=5.0, clock=clock)
        client = make_client([health])
        for _ in range(10):
            assert client.get("/health/ready").status_code == 200
            client.get("/health")
        assert len(calls) == 1
        clock.advance(5.1)
        client.get("/health/ready")
        assert len(calls) == 2
        assert health.stats()["runs"] == 2
        assert health.stats()["probes"] == 21

    def test_invalid_settings_are_refused(self) -> None:
        """Bad paths and inverted thresholds fail at startup."""
        with pytest.raises(ConfigurationError, match="must start with"):
            Health(live_path="health")
        with pytest.raises(ConfigurationError, match="must differ"):
            Health(live_path="/h", ready_path="/h")
        with pytest.raises(ConfigurationError, match="memory_warn"):
            Health(memory_warn=99, memory_fail=90)
        with pytest.raises(ConfigurationError, match="checks"):
            Health(checks={"x": 3})  # type: ignore[dict-item]


class TestStorages:
    @pytest.mark.redis
    def test_the_other_layers_redis_is_pinged(
        self, make_client: MakeClient, redis_url: str
    ) -> None:
        """A layer's storage_uri becomes a redis:ping check, found through the wall."""
        client = make_client([quiet_health(), FakeStorageLayer(redis_url)])
        checks = client.get("/health").json()["checks"]
        assert checks["redis:ping"][0]["status"] == "pass"
        assert checks["redis:ping"][0]["componentId"] == "127.0.0.1:6379/0"

    def test_a_fail_open_layer_store_down_only_warns(self, make_client: MakeClient) -> None:
        """The rate limiter fails open: its Redis down must not take the service out."""
        url = f"redis://127.0.0.1:{free_port()}/0"
        client = make_client([quiet_health(), FakeStorageLayer(url)])
        response = client.get("/health/ready")
        assert response.status_code == 200
        assert response.json() == {"status": "warn"}

    def test_a_fail_closed_layer_store_down_fails_readiness(self, make_client: MakeClient) -> None:
        """on_storage_error="deny": without its store the service refuses everything."""
        url = f"async+redis://127.0.0.1:{free_port()}/0"
        client = make_client([quiet_health(), FakeStorageLayer(url, on_storage_error="deny")])
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["failing"] == ["redis:ping"]

    def test_probes_answer_while_redis_is_paused(
        self, make_client: MakeClient, pausable_redis: PausableRedis
    ) -> None:
        """Health answers within the storage timeout even when Redis hangs."""
        import time

        client = make_client([quiet_health(redis=[pausable_redis.url], storage_timeout=0.2),
                              FakeStorageLayer(pausable_redis.url)])  # fmt: skip
        assert client.get("/health/ready").status_code == 200
        pausable_redis.pause()
        client.get("/health/ready")  # fresh results were cached: clear them
        health = next(layer for layer in client_layers(client) if isinstance(layer, Health))
        health.reset()
        start = time.perf_counter()
        response = client.get("/health/ready")
        assert time.perf_counter() - start < 1.0
        assert response.status_code == 503
        assert client.get("/health/live").status_code == 200
        pausable_redis.resume()

    def test_a_storage_object_with_check_is_asked(self, make_client: MakeClient) -> None:
        """limits storages have check(); a layer holding one is checked through it."""

        class Store:
            def check(self) -> bool:
                return False

        layer = FakeStorageLayer("")
        layer.storage_uri = None  # type: ignore[assignment]
        layer.storage = Store()  # type: ignore[attr-defined]
        doc = make_client([quiet_health(), layer]).get("/health").json()
        assert doc["checks"]["ratelimit:storage"][0]["status"] == "warn"


def client_layers(client: httpx.Client) -> tuple[object, ...]:
    app = getattr(client, "app", None)
    if app is None:
        app = client._transport.app  # type: ignore[attr-defined]
    return tuple(app.stack.layers)


class TestDraining:
    def test_readiness_fails_while_the_wall_drains(self, make_client: MakeClient) -> None:
        """wall.draining (lifespan shutdown) makes readiness fail; liveness still passes."""
        client = make_client([quiet_health()])
        assert client.get("/health/ready").status_code == 200
        wall: Any = getattr(client, "app", None) or client._transport.app  # type: ignore[attr-defined]
        wall.draining = True
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["failing"] == ["draining"]
        assert client.get("/health").json()["checks"]["process:draining"][0]["status"] == "fail"
        assert client.get("/health/live").status_code == 200

    def test_lifespan_shutdown_drains_and_fails_readiness(self) -> None:
        """ASGI lifespan shutdown: shedding stops admitting, readiness fails."""
        from starlette.testclient import TestClient

        shedding = LoadShedding(signals=StaticSignals(), drain_timeout=0.2)
        wall = Seawall(asgi_app, layers=[quiet_health(), shedding])
        with TestClient(wall) as client:
            assert client.get("/").status_code == 200
            assert client.get("/health/ready").status_code == 200
        assert shedding.draining
        assert wall.draining
        after = client_for(wall)
        response = after.get("/")
        assert response.status_code == 503
        assert response.json()["reason"] == "draining"
        ready = after.get("/health/ready")
        assert ready.status_code == 503
        body = json.loads(ready.text)
        assert "draining" in body["failing"]
