"""The Health layer: liveness, readiness, the report, caching, storages, draining."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.apps import asgi_app, client_for
from tests.observability.conftest import PausableRedis, free_port, make_sampler
from tests.redis_topologies.conftest import (  # noqa: F401  (fixtures)
    redis_cluster,
    redis_sentinel,
    topology_uri,
)

from seawall import Health, LoadShedding, Seawall
from seawall._observe.checks import run_checks
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

    def test_concurrent_probes_share_one_run(self) -> None:
        """While a check run is under way, other probes get the previous report."""
        calls: list[int] = []

        async def db() -> bool:
            calls.append(1)
            await asyncio.sleep(0.1)
            return True

        clock = ManualClock()
        wall = Seawall(asgi_app, layers=[quiet_health(checks={"db": db}, cache_for=1.0,
                                                       clock=clock)])  # fmt: skip

        async def main() -> list[tuple[int, bytes]]:
            await call(wall, "/health/ready")
            clock.advance(2.0)
            return await asyncio.gather(*(call(wall, "/health/ready") for _ in range(5)))

        results = asyncio.run(main())
        assert len(calls) == 2
        assert [status for status, _ in results] == [200] * 5

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


class TestRealLayersStorages:
    @pytest.mark.redis
    def test_every_real_layers_redis_is_checked(self, make_client: MakeClient) -> None:
        """RateLimit, ConcurrencyLimit and CircuitBreaker on Redis: one check per storage."""
        from seawall import CircuitBreaker, ConcurrencyLimit, RateLimit

        layers = [
            quiet_health(),
            RateLimit("100/minute", storage="redis://127.0.0.1:6379/0"),
            ConcurrencyLimit(10, storage="redis://127.0.0.1:6379/1", on_storage_error="deny"),
            CircuitBreaker(storage="redis://127.0.0.1:6379/2"),
        ]
        client = make_client(layers)
        response = client.get("/health")
        assert response.status_code == 200, response.text
        pings = response.json()["checks"]["redis:ping"]
        assert sorted(p["componentId"] for p in pings) == [
            "127.0.0.1:6379/0", "127.0.0.1:6379/1", "127.0.0.1:6379/2",
        ]  # fmt: skip
        assert all(p["status"] == "pass" for p in pings)

    def test_a_real_fail_closed_layer_with_its_redis_down_fails_readiness(
        self, make_client: MakeClient
    ) -> None:
        """RateLimit(on_storage_error="deny") on a dead Redis: unready; fail-open: a warning."""
        from seawall import ConcurrencyLimit, RateLimit

        dead = f"redis://127.0.0.1:{free_port()}/0"
        also_dead = f"redis://127.0.0.1:{free_port()}/0"
        client = make_client([
            quiet_health(),
            RateLimit("100/minute", storage=dead, on_storage_error="deny"),
            ConcurrencyLimit(10, storage=also_dead),
        ])  # fmt: skip
        response = client.get("/health")
        assert response.status_code == 503
        statuses = {p["componentId"]: p["status"] for p in response.json()["checks"]["redis:ping"]}
        assert statuses == {dead[len("redis://") :]: "fail", also_dead[len("redis://") :]: "warn"}

    def test_memory_storages_get_no_check(self, make_client: MakeClient) -> None:
        """memory:// is this process: nothing to ping."""
        from seawall import RateLimit

        doc = make_client([quiet_health(), RateLimit("100/minute")]).get("/health").json()
        assert not any(name.startswith("redis") for name in doc["checks"])

    @pytest.mark.redis
    def test_valkey_and_async_aliases_are_pinged(self) -> None:
        """valkey:// and async+ prefixes name the same server redis-py can ping."""
        health = quiet_health(redis=["valkey://127.0.0.1:6379/0", "async+redis://127.0.0.1:6379/3"])
        results = run_checks([c for c in health.checks if "redis" in c.name])
        assert [(r.component_id, r.status) for r in results] == [
            ("127.0.0.1:6379/0", "pass"), ("127.0.0.1:6379/3", "pass"),
        ]  # fmt: skip

    def test_sentinel_and_cluster_urls_down_fail_within_the_timeout(self) -> None:
        """Topologies a PING cannot reach are asked through limits' check(), bounded."""
        urls = [
            f"redis+sentinel://127.0.0.1:{free_port()}/mymaster",
            f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
        ]
        health = quiet_health(redis=urls, storage_timeout=0.2)
        checks = [c for c in health.checks if c.name == "redis:ping"]
        assert len(checks) == 2
        start = time.perf_counter()
        results = run_checks(checks)
        assert time.perf_counter() - start < 1.5
        assert [r.status for r in results] == ["fail", "fail"]
        assert all(r.output for r in results)
        assert [r.component_id for r in results] == [u.split("://")[1] for u in urls]

    def test_a_storage_url_must_look_like_one(self) -> None:
        """redis=["localhost"] is a configuration error, not a silently skipped check."""
        with pytest.raises(ConfigurationError, match="redis"):
            Health(redis=["localhost"])


class TestTopologies:
    """Sentinel and Cluster, started by the topology fixtures on free ports."""

    @pytest.mark.redis
    def test_a_live_sentinel_and_cluster_pass(self, topology_uri: str) -> None:  # noqa: F811
        """limits' check() reaches the master behind the Sentinel, and every Cluster node."""
        health = quiet_health(redis=[topology_uri], storage_timeout=1.0)
        [check] = [c for c in health.checks if c.name == "redis:ping"]
        [result] = run_checks([check])
        assert result.status == "pass", result.output


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


def http_scope(path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": [(b"host", b"t")], "client": ("127.0.0.1", 9),
            "server": ("127.0.0.1", 80)}  # fmt: skip


async def call(wall: Any, path: str) -> tuple[int, bytes]:
    """One request straight through the ASGI wall: its status and body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await wall(http_scope(path), receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


class TestGracefulShutdown:
    @staticmethod
    def gated_app(release: asyncio.Event) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"finished"})

        return app

    @staticmethod
    async def start_lifespan(wall: Any) -> tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[Any]]:
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        done: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            done.append(message)

        await messages.put({"type": "lifespan.startup"})
        task = asyncio.create_task(wall({"type": "lifespan"}, messages.get, send))
        while not done:
            await asyncio.sleep(0.005)
        assert done == [{"type": "lifespan.startup.complete"}]
        return messages, task

    def test_shutdown_waits_for_in_flight_requests_while_readiness_fails(self) -> None:
        """Lifespan shutdown: the in-flight request finishes; meanwhile probes say draining."""

        async def main() -> dict[str, Any]:
            release = asyncio.Event()
            shedding = LoadShedding(signals=StaticSignals(), drain_timeout=5.0,
                                    critical=("/login",))  # fmt: skip
            wall = Seawall(self.gated_app(release), layers=[quiet_health(), shedding])
            messages, lifespan = await self.start_lifespan(wall)
            assert (await call(wall, "/health/ready"))[0] == 200
            slow = asyncio.create_task(call(wall, "/slow"))
            while shedding.in_flight < 1:
                await asyncio.sleep(0.005)
            await messages.put({"type": "lifespan.shutdown"})
            await asyncio.sleep(0.1)
            seen: dict[str, Any] = {"lifespan_done_while_in_flight": lifespan.done()}
            seen["ready"] = await call(wall, "/health/ready")
            seen["live"] = (await call(wall, "/health/live"))[0]
            seen["new"] = await call(wall, "/")
            seen["critical"] = (await call(wall, "/login"))[0]
            release.set()
            seen["slow"] = await slow
            await asyncio.wait_for(lifespan, 5.0)
            seen["in_flight_after"] = shedding.in_flight
            return seen

        seen = asyncio.run(main())
        assert seen["lifespan_done_while_in_flight"] is False
        status, body = seen["ready"]
        assert status == 503
        assert json.loads(body)["failing"] == ["draining"]
        assert seen["live"] == 200
        assert seen["new"][0] == 503
        assert json.loads(seen["new"][1])["reason"] == "draining"
        assert seen["critical"] == 503
        assert seen["slow"] == (200, b"finished")
        assert seen["in_flight_after"] == 0

    def test_the_wait_is_bounded_by_drain_timeout(self) -> None:
        """A request that never finishes holds shutdown up to drain_timeout, no longer."""

        async def main() -> float:
            release = asyncio.Event()
            shedding = LoadShedding(signals=StaticSignals(), drain_timeout=0.3)
            wall = Seawall(self.gated_app(release), layers=[quiet_health(), shedding])
            messages, lifespan = await self.start_lifespan(wall)
            stuck = asyncio.create_task(call(wall, "/stuck"))
            while shedding.in_flight < 1:
                await asyncio.sleep(0.005)
            start = time.perf_counter()
            await messages.put({"type": "lifespan.shutdown"})
            await asyncio.wait_for(lifespan, 5.0)
            took = time.perf_counter() - start
            release.set()
            await stuck
            return took

        took = asyncio.run(main())
        assert 0.25 <= took < 2.0, took
