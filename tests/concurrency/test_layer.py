"""ConcurrencyLimit on memory: flows by hand, then both drivers with real threads."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from seawall import (
    ConcurrencyLimit,
    ConfigurationError,
    ErrorCapture,
    Overloaded,
    RequestView,
    Seawall,
)
from seawall._concurrency.local import OK, QUEUE_FULL
from seawall._concurrency.shared import LocalWait
from seawall._core.layer import Outcome
from seawall.config import build_layer
from tests.apps import client_for
from tests.concurrency.gate import Gate


def view(
    path: str = "/", peer: str = "10.0.0.1", headers: list[tuple[bytes, bytes]] | None = None
) -> RequestView:
    return RequestView(method="GET", path=path, peer=peer, headers=headers or [])


def done(layer: ConcurrencyLimit, request: RequestView) -> None:
    layer.on_complete(request, Outcome(200, None, 0.01, 0.005, request.path))


class TestConfig:
    @pytest.mark.parametrize(
        ("kwargs", "names"),
        [
            pytest.param({"max_in_flight": 0}, "max_in_flight", id="zero slots"),
            pytest.param({"max_in_flight": 2, "per_key": 0}, "per_key", id="zero per key"),
            pytest.param({"max_in_flight": 2, "max_wait": -1}, "max_wait", id="negative wait"),
            pytest.param({"max_in_flight": 2, "queue_size": -1}, "queue_size", id="bad queue"),
            pytest.param({"max_in_flight": 2, "slot_ttl": 0}, "slot_ttl", id="zero ttl"),
            pytest.param(
                {"max_in_flight": 2, "on_storage_error": "ignore"},
                "on_storage_error",
                id="unknown policy",
            ),
            pytest.param(
                {"max_in_flight": 2, "storage": "mongodb://x"}, "storage", id="unknown storage"
            ),
            pytest.param({"max_in_flight": True}, "max_in_flight", id="bool is not a count"),
            pytest.param({"max_in_flight": 2, "key": "not callable"}, "key", id="key not callable"),
        ],
    )
    def test_bad_settings_fail_naming_the_key(self, kwargs: dict[str, Any], names: str) -> None:
        with pytest.raises(ConfigurationError, match=names):
            ConcurrencyLimit(**kwargs)

    def test_built_from_config(self) -> None:
        """The keyword names are the config keys (TOML/env friendly values)."""
        layer = build_layer("concurrency", {"max_in_flight": 4, "per_key": 2, "max_wait": 0.5})
        assert isinstance(layer, ConcurrencyLimit)
        assert (layer.max_in_flight, layer.per_key, layer.max_wait) == (4, 2, 0.5)
        assert repr(layer) == (
            "ConcurrencyLimit(4, per_key=2, max_wait=0.5, storage='memory://', shadow=False)"
        )


class TestFlows:
    def test_admits_until_full_then_refuses_with_503(self) -> None:
        layer = ConcurrencyLimit(2, retry_after=3)
        a, b, c = view(), view(), view()
        assert layer.on_request(a) is None
        assert layer.on_request(b) is None
        with pytest.raises(Overloaded) as info:
            layer.on_request(c)
        exc = info.value
        assert exc.status == 503
        assert exc.problem_type == "temporary-reduced-capacity"
        assert ("Retry-After", "3") in exc.headers
        assert exc.extensions == {"limit": 2, "scope": "global"}
        done(layer, a)
        assert layer.on_request(c) is None
        assert layer.stats()["in_flight"] == 2
        assert layer.stats()["admitted"] == 3
        assert layer.stats()["rejected"] == 1

    def test_release_is_idempotent(self) -> None:
        """A second on_complete for one request frees nothing more."""
        layer = ConcurrencyLimit(1)
        a = view()
        layer.on_request(a)
        done(layer, a)
        done(layer, a)
        assert layer.in_flight == 0

    def test_refused_request_holds_nothing(self) -> None:
        """on_complete of the request we refused must not free someone else's slot."""
        layer = ConcurrencyLimit(1)
        a, b = view(), view()
        layer.on_request(a)
        with pytest.raises(Overloaded):
            layer.on_request(b)
        done(layer, b)
        assert layer.in_flight == 1

    def test_per_key_limit_uses_the_client_identity(self) -> None:
        layer = ConcurrencyLimit(10, per_key=1)
        held = view(peer="10.0.0.1")  # kept alive: a collected request frees its slot
        layer.on_request(held)
        with pytest.raises(Overloaded) as info:
            layer.on_request(view(peer="10.0.0.1"))
        assert info.value.extensions["scope"] == "key"
        assert "client" in info.value.detail
        assert layer.on_request(view(peer="10.0.0.2")) is None

    def test_custom_key_and_none_exempts_from_per_key(self) -> None:
        layer = ConcurrencyLimit(10, per_key=1, key=lambda r: r.header("x-api-key"))
        held = [view(headers=[(b"x-api-key", b"k1")]), view(), view()]
        assert layer.on_request(held[0]) is None
        with pytest.raises(Overloaded):
            layer.on_request(view(headers=[(b"x-api-key", b"k1")]))
        # No key: only the global limit applies.
        assert layer.on_request(held[1]) is None
        assert layer.on_request(held[2]) is None
        assert layer.in_flight == 3

    def test_shadow_lets_through_logs_and_counts(self, logs: list[dict[str, Any]]) -> None:
        layer = ConcurrencyLimit(1, shadow=True)
        a, b = view(), view()
        layer.on_request(a)
        assert layer.on_request(b) is None
        assert layer.stats()["shadowed"] == 1
        assert layer.in_flight == 1
        assert [e["event"] for e in logs] == ["seawall.concurrency.shadow_rejected"]
        done(layer, b)  # held nothing
        assert layer.in_flight == 1

    def test_waiting_is_an_effect(self) -> None:
        """With max_wait the layer yields LocalWait and acts on the driver's answer."""
        layer = ConcurrencyLimit(1, max_wait=0.5, queue_size=3)
        a = view()
        layer.on_request(a)
        b = view()
        flow = layer.on_request(b)
        effect = next(flow)  # type: ignore[arg-type]
        assert isinstance(effect, LocalWait)
        assert effect.max_wait == 0.5
        with pytest.raises(StopIteration):
            flow.send(OK)  # type: ignore[union-attr]
        assert b.state[layer] is not None
        flow = layer.on_request(view())
        next(flow)  # type: ignore[arg-type]
        with pytest.raises(Overloaded):
            flow.send(QUEUE_FULL)  # type: ignore[union-attr]

    def test_lost_release_comes_back_through_the_finalizer(self) -> None:
        """A request torn down before on_complete frees its slot when collected."""
        layer = ConcurrencyLimit(1)
        a = view()
        layer.on_request(a)
        del a
        gc.collect()
        assert layer.on_request(view()) is None

    def test_reset_forgets_slots_and_counters(self) -> None:
        layer = ConcurrencyLimit(1)
        a = view()
        layer.on_request(a)
        layer.reset()
        assert layer.stats()["admitted"] == 0
        assert layer.in_flight == 0


def _wrapped(interface: str, gate: Gate, layer: ConcurrencyLimit) -> httpx.Client:
    app = gate.asgi() if interface == "asgi" else gate.wsgi()
    wall = Seawall(app, layers=[ErrorCapture(), layer])
    return client_for(wall, raise_server_exceptions=False)


def _parallel(client: httpx.Client, paths: list[str]) -> tuple[ThreadPoolExecutor, list[Any]]:
    pool = ThreadPoolExecutor(len(paths))
    return pool, [pool.submit(client.get, p) for p in paths]


class TestDrivers:
    def test_in_flight_never_exceeds_the_limit(self, interface: str) -> None:
        """8 parallel requests against 3 slots: 3 reach the app, 5 get a 503 problem."""
        gate, layer = Gate(), ConcurrencyLimit(3)
        client = _wrapped(interface, gate, layer)
        pool, futures = _parallel(client, ["/hold"] * 3)
        gate.wait_entered(3)
        refused = [client.get("/hold") for _ in range(5)]
        gate.open()
        answers = [f.result() for f in futures]
        pool.shutdown()
        assert [r.status_code for r in answers] == [200] * 3
        for r in refused:
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "1"
            doc = r.json()
            assert doc["type"].endswith("temporary-reduced-capacity")
            assert doc["request_id"] == r.headers["x-request-id"]
            assert doc["scope"] == "global"
        assert gate.peak == 3
        assert layer.in_flight == 0

    def test_slots_come_back_after_completion_and_exceptions(self, interface: str) -> None:
        gate, layer = Gate(), ConcurrencyLimit(1)
        client = _wrapped(interface, gate, layer)
        assert [client.get("/").status_code for _ in range(3)] == [200] * 3
        assert [client.get("/boom").status_code for _ in range(3)] == [500] * 3
        assert layer.in_flight == 0
        assert layer.stats()["rejected"] == 0

    def test_queued_request_gets_the_freed_slot(self, interface: str) -> None:
        gate, layer = Gate(), ConcurrencyLimit(1, max_wait=5)
        client = _wrapped(interface, gate, layer)
        pool, futures = _parallel(client, ["/hold", "/hold"])
        gate.wait_entered(1)
        deadline = time.monotonic() + 5
        while layer.stats()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        assert layer.stats()["waiting"] == 1
        assert gate.now == 1
        gate.open()
        assert [f.result().status_code for f in futures] == [200, 200]
        pool.shutdown()
        assert gate.peak == 1
        assert layer.stats()["waited"] == 1
        assert layer.in_flight == 0

    def test_wait_times_out_then_503(self, interface: str) -> None:
        gate, layer = Gate(), ConcurrencyLimit(1, max_wait=0.05)
        client = _wrapped(interface, gate, layer)
        pool, futures = _parallel(client, ["/hold"])
        gate.wait_entered(1)
        t0 = time.perf_counter()
        r = client.get("/hold")
        waited = time.perf_counter() - t0
        gate.open()
        futures[0].result()
        pool.shutdown()
        assert r.status_code == 503
        assert 0.04 <= waited < 2.0
        assert layer.stats()["waiting"] == 0
        assert layer.in_flight == 0

    def test_full_queue_refuses_at_once(self, interface: str) -> None:
        gate, layer = Gate(), ConcurrencyLimit(1, max_wait=5, queue_size=1)
        client = _wrapped(interface, gate, layer)
        pool, futures = _parallel(client, ["/hold", "/hold"])
        gate.wait_entered(1)
        deadline = time.monotonic() + 5
        while layer.stats()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        t0 = time.perf_counter()
        r = client.get("/hold")
        assert r.status_code == 503
        assert time.perf_counter() - t0 < 1.0
        gate.open()
        assert [f.result().status_code for f in futures] == [200, 200]
        pool.shutdown()

    def test_per_key_through_the_driver(self, interface: str) -> None:
        """One client's held request blocks that client only; no key means global only."""
        gate = Gate()
        layer = ConcurrencyLimit(10, per_key=1, key=lambda r: r.header("x-key"))
        client = _wrapped(interface, gate, layer)
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(client.get, "/hold", headers={"x-key": "k"})
            unkeyed = pool.submit(client.get, "/hold")
            gate.wait_entered(2)
            refused = client.get("/", headers={"x-key": "k"})
            fine = client.get("/", headers={"x-key": "j"})
            gate.open()
            assert held.result().status_code == 200
            assert unkeyed.result().status_code == 200
        assert refused.status_code == 503
        assert refused.json()["scope"] == "key"
        assert refused.json()["limit"] == 1
        assert fine.status_code == 200
        assert layer.in_flight == 0


class TestReleasePaths:
    """The slot comes back however the request ends (drivers call on_complete)."""

    def test_wsgi_slot_is_held_until_close(self) -> None:
        layer = ConcurrencyLimit(1)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"a", b"b"])

        wall = Seawall(app, layers=[layer])
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "REMOTE_ADDR": "1.2.3.4",
            "wsgi.input": None,
        }
        body = wall(environ, lambda status, headers, exc_info=None: None)
        assert next(iter(body)) == b"a"
        assert layer.in_flight == 1  # streaming: still in flight
        body.close()  # type: ignore[attr-defined]  # the client went away mid-body
        assert layer.in_flight == 0

    def test_asgi_client_disconnect_releases(self) -> None:
        layer = ConcurrencyLimit(1)
        wall = Seawall(Gate().asgi(), layers=[layer])
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/disconnect",
            "headers": [],
            "client": ("1.2.3.4", 1),
            "query_string": b"",
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            raise AssertionError("nothing should be sent")

        asyncio.run(wall(scope, receive, send))
        assert layer.in_flight == 0

    def test_asgi_cancellation_releases(self) -> None:
        """A request task cancelled in the app (server shutdown) gives its slot back."""
        layer = ConcurrencyLimit(1)
        gate = Gate()
        wall = Seawall(gate.asgi(), layers=[layer])
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/hold",
            "headers": [],
            "client": ("1.2.3.4", 1),
            "query_string": b"",
        }

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(10)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        async def main() -> None:
            task = asyncio.ensure_future(wall(scope, receive, send))
            while gate.now < 1:
                await asyncio.sleep(0.001)
            assert layer.in_flight == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert layer.in_flight == 0

    def test_asgi_cancelled_while_queued_keeps_no_slot(self) -> None:
        layer = ConcurrencyLimit(1, max_wait=10)
        gate = Gate()
        wall = Seawall(gate.asgi(), layers=[layer])

        def scope() -> dict[str, Any]:
            return {
                "type": "http",
                "method": "GET",
                "path": "/hold",
                "headers": [],
                "client": ("1.2.3.4", 1),
                "query_string": b"",
            }

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(10)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        async def main() -> None:
            first = asyncio.ensure_future(wall(scope(), receive, send))
            while gate.now < 1:
                await asyncio.sleep(0.001)
            queued = asyncio.ensure_future(wall(scope(), receive, send))
            while layer.stats()["waiting"] < 1:
                await asyncio.sleep(0.001)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            gate.open()
            await first

        asyncio.run(main())
        gc.collect()
        assert layer.in_flight == 0
        assert layer.stats()["waiting"] == 0
        assert layer.on_request(view()) is None


def test_threads_hammering_one_pool_stay_exact() -> None:
    """64 threads acquiring and releasing through the layer never see more than the limit."""
    layer = ConcurrencyLimit(5, max_wait=1.0, queue_size=64)
    lock = threading.Lock()
    now = peak = 0

    def worker() -> None:
        nonlocal now, peak
        from seawall._run import run_flow

        for _ in range(30):
            request = view()
            decision = layer.on_request(request)
            if decision is not None:
                try:
                    run_flow(decision)
                except Overloaded:
                    continue
            with lock:
                now += 1
                peak = max(peak, now)
            time.sleep(0.0005)
            with lock:
                now -= 1
            done(layer, request)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 5
    assert layer.in_flight == 0


class TestKeysAndStorageUris:
    def test_key_spec_strings_as_in_settings_files(self) -> None:
        layer = ConcurrencyLimit(10, per_key=1, key="header:X-Key")
        held = view(headers=[(b"x-key", b"a")])
        assert layer.on_request(held) is None
        with pytest.raises(Overloaded):
            layer.on_request(view(headers=[(b"x-key", b"a")]))

    def test_async_key_functions_are_refused(self) -> None:
        async def key(request: RequestView) -> str:
            return "k"

        with pytest.raises(ConfigurationError, match="sync key"):
            ConcurrencyLimit(10, per_key=1, key=key)

    @pytest.mark.parametrize(
        ("uri", "scheme"),
        [
            pytest.param("memory://", None, id="memory"),
            pytest.param("redis://h:6379/0", "redis", id="redis"),
            pytest.param("rediss://h:6380/0", "rediss", id="tls"),
            pytest.param("redis+unix:///tmp/r.sock", "redis+unix", id="unix"),
            pytest.param("redis+cluster://a:7000,b:7001", "redis+cluster", id="cluster"),
            pytest.param("redis+sentinel://a:26379/mymaster", "redis+sentinel", id="sentinel"),
            pytest.param("valkey://h:6379", "valkey", id="valkey"),
        ],
    )
    def test_storage_uris(self, uri: str, scheme: str | None) -> None:
        from seawall._concurrency.shared import parse_storage

        assert parse_storage(uri) == scheme

    def test_cluster_hosts_and_password_are_parsed(self) -> None:
        from seawall._concurrency.shared import _hosts, _password

        assert _hosts(":s3cret@a:7000,b", 7000) == [("a", 7000), ("b", 7000)]
        assert _password(":s3cret@a:7000,b") == "s3cret"
        assert _password("a:1") is None

    def test_piggybacked_release_arguments(self) -> None:
        """An acquire carries pending releases: each per-key set appears once in KEYS."""
        from seawall._concurrency.shared import _script_args

        keys, pairs = _script_args(
            ["G", "K:a"],
            [(["G", "K:a"], "s1"), (["G"], "s2"), (["G", "K:b"], "s3"), (["G", "K:b"], "s4")],
        )
        assert keys == ["G", "K:a", "K:b"]
        assert pairs == ["s1", "2", "s2", "0", "s3", "3", "s4", "3"]

    def test_long_keys_are_hashed(self) -> None:
        """A key function returning a huge header value cannot make huge Redis keys."""
        from seawall._concurrency.shared import RedisSlots

        slots = RedisSlots(
            "redis://127.0.0.1:1/0",
            key_prefix="p",
            max_in_flight=1,
            per_key=1,
            slot_ttl=1,
            timeout=0.01,
        )
        names = slots.keys_for("x" * 10_000)
        assert names[0] == "{p:cc}:all"
        assert len(names[1]) < 100
        assert slots.keys_for(None) == ["{p:cc}:all"]
