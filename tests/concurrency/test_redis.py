"""ConcurrencyLimit shared through the real Redis: sync and async effects, expiry, failures."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from seawall import ConcurrencyLimit, Overloaded, RequestView, Seawall
from seawall._core.layer import Outcome
from seawall._run import arun_flow, run_flow
from tests.concurrency.gate import Gate

pytestmark = pytest.mark.redis

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once

# Tests that count slots exactly: a slow call on a loaded CI box must fail
# loudly (deny, 1 s bound), not be admitted by the default "allow" policy.
EXACT: dict[str, Any] = {"storage_timeout": 1.0, "on_storage_error": "deny"}


def view(peer: str = "10.0.0.1") -> RequestView:
    return RequestView(method="GET", path="/", peer=peer, headers=[])


def admit(layer: ConcurrencyLimit, request: RequestView) -> bool:
    """Run the layer's request phase with the sync effects; True if admitted."""
    decision = layer.on_request(request)
    try:
        if decision is not None:
            run_flow(decision)
    except Overloaded:
        return False
    return True


async def aadmit(layer: ConcurrencyLimit, request: RequestView) -> bool:
    decision = layer.on_request(request)
    try:
        if decision is not None:
            await arun_flow(decision)
    except Overloaded:
        return False
    return True


def finish(layer: ConcurrencyLimit, request: RequestView) -> None:
    layer.on_complete(request, Outcome(200, None, 0.01, 0.005, "/"))


def slots_in_redis(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard(f"{{{prefix}:cc}}:all"))
    finally:
        client.close()


class TestSync:
    def test_two_workers_share_the_limit(self, redis_url: str, key_prefix: str) -> None:
        """Two layer instances (two workers) on one Redis admit 3 in all, not 3 each."""
        w1 = ConcurrencyLimit(3, storage=redis_url, key_prefix=key_prefix, **EXACT)
        w2 = ConcurrencyLimit(3, storage=redis_url, key_prefix=key_prefix, **EXACT)
        held = [view() for _ in range(6)]
        got = [admit(w1 if i % 2 else w2, r) for i, r in enumerate(held)]
        assert got.count(True) == 3
        assert slots_in_redis(redis_url, key_prefix) == 3
        for i, r in enumerate(held):
            finish(w1 if i % 2 else w2, r)
        assert w1.flush()
        assert w2.flush()
        assert slots_in_redis(redis_url, key_prefix) == 0
        assert admit(w1, view())
        w1.close()
        w2.close()

    def test_per_key_across_workers(self, redis_url: str, key_prefix: str) -> None:
        w1 = ConcurrencyLimit(10, per_key=1, storage=redis_url, key_prefix=key_prefix, **EXACT)
        w2 = ConcurrencyLimit(10, per_key=1, storage=redis_url, key_prefix=key_prefix, **EXACT)
        a = view("10.0.0.1")
        assert admit(w1, a)
        assert not admit(w2, view("10.0.0.1"))
        assert admit(w2, view("10.0.0.2"))
        w1.close()
        w2.close()

    def test_slots_of_a_dead_worker_expire(self, redis_url: str, key_prefix: str) -> None:
        """A slot never released (the worker died) frees itself after slot_ttl."""
        layer = ConcurrencyLimit(1, storage=redis_url, key_prefix=key_prefix, **EXACT, slot_ttl=0.3)
        a = view()
        assert admit(layer, a)
        a.state[layer].released = True  # the worker "dies": no release, no finalizer
        assert not admit(layer, view())
        time.sleep(0.35)
        assert admit(layer, view())
        layer.close()

    def test_waits_by_polling_until_a_slot_frees(self, redis_url: str, key_prefix: str) -> None:
        w1 = ConcurrencyLimit(1, storage=redis_url, key_prefix=key_prefix, **EXACT)
        w2 = ConcurrencyLimit(1, storage=redis_url, key_prefix=key_prefix, **EXACT, max_wait=2)
        a = view()
        assert admit(w1, a)

        def later() -> None:
            time.sleep(0.1)
            finish(w1, a)

        with ThreadPoolExecutor(1) as pool:
            pool.submit(later)
            t0 = time.perf_counter()
            assert admit(w2, view())
            assert 0.08 < time.perf_counter() - t0 < 1.5
        w1.close()
        w2.close()

    def test_wait_gives_up_after_max_wait(self, redis_url: str, key_prefix: str) -> None:
        layer = ConcurrencyLimit(1, storage=redis_url, key_prefix=key_prefix, **EXACT, max_wait=0.1)
        a = view()
        assert admit(layer, a)
        t0 = time.perf_counter()
        assert not admit(layer, view())
        assert 0.09 < time.perf_counter() - t0 < 1.0
        layer.close()


class TestAsync:
    def test_async_path_shares_the_limit_with_sync(self, redis_url: str, key_prefix: str) -> None:
        """An ASGI worker (redis.asyncio) and a WSGI worker (sync) count in one place."""
        sync = ConcurrencyLimit(2, storage=redis_url, key_prefix=key_prefix, **EXACT)
        a = view()
        assert admit(sync, a)

        async def main() -> list[bool]:
            layer = ConcurrencyLimit(
                2, storage=redis_url, key_prefix=key_prefix, **EXACT, max_wait=0.05
            )
            held = [view() for _ in range(3)]
            got = [await aadmit(layer, r) for r in held]
            for r in held:
                finish(layer, r)  # fire-and-forget tasks on this loop
            await layer.aclose()  # waits for them
            return got

        assert asyncio.run(main()) == [True, False, False]
        assert slots_in_redis(redis_url, key_prefix) == 1
        sync.close()

    def test_async_wait_is_admitted_when_freed(self, redis_url: str, key_prefix: str) -> None:
        async def main() -> float:
            layer = ConcurrencyLimit(
                1, storage=redis_url, key_prefix=key_prefix, **EXACT, max_wait=2
            )
            a = view()
            assert await aadmit(layer, a)

            async def later() -> None:
                await asyncio.sleep(0.1)
                finish(layer, a)

            task = asyncio.ensure_future(later())
            t0 = time.perf_counter()
            b = view()
            assert await aadmit(layer, b)
            waited = time.perf_counter() - t0
            await task
            finish(layer, b)
            await layer.aclose()
            return waited

        assert 0.08 < asyncio.run(main()) < 1.5
        assert slots_in_redis(redis_url, key_prefix) == 0


class TestStorageFailure:
    def test_allow_admits_and_logs_one_transition(self, logs: list[dict[str, Any]]) -> None:
        layer = ConcurrencyLimit(1, storage=DEAD_REDIS, on_storage_error="allow")
        held = [view() for _ in range(20)]
        assert all(admit(layer, r) for r in held)
        downs = [e for e in logs if e["event"] == "seawall.concurrency.storage_down"]
        assert len(downs) == 1
        stats = layer.stats()
        assert stats["storage_down"] is True
        assert stats["fallback"] == 20
        # The breaker: one real attempt, the other 19 failed fast.
        assert layer._shared is not None
        assert layer._shared.errors == 1
        layer.close()

    def test_deny_refuses_with_503(self) -> None:
        layer = ConcurrencyLimit(5, storage=DEAD_REDIS, on_storage_error="deny")
        with pytest.raises(Overloaded):
            run_flow(layer.on_request(view()))
        layer.close()

    def test_local_applies_each_workers_share(self) -> None:
        layer = ConcurrencyLimit(4, storage=DEAD_REDIS, on_storage_error="local", workers=2)
        held = [view() for _ in range(3)]
        assert [admit(layer, r) for r in held] == [True, True, False]
        for r in held:
            finish(layer, r)
        assert layer.in_flight == 0
        layer.close()

    def test_probe_after_interval_and_recovery(
        self, redis_url: str, key_prefix: str, logs: list[dict[str, Any]]
    ) -> None:
        """After probe_interval one request probes; success closes the breaker (one log)."""
        layer = ConcurrencyLimit(
            1, storage=redis_url, key_prefix=key_prefix, storage_timeout=1.0, storage_probe=0.05
        )
        shared = layer._shared
        assert shared is not None
        shared.failed(ConnectionError("simulated"))
        a = view()
        assert admit(layer, a)  # fails fast, allowed
        assert slots_in_redis(redis_url, key_prefix) == 0
        time.sleep(0.06)
        b = view()
        assert admit(layer, b)  # the probe: a real slot
        assert slots_in_redis(redis_url, key_prefix) == 1
        assert [
            e["event"] for e in logs if e["event"].startswith("seawall.concurrency.storage")
        ] == ["seawall.concurrency.storage_down", "seawall.concurrency.storage_up"]
        layer.close()


def test_through_both_drivers(interface: str, redis_url: str, key_prefix: str) -> None:
    """A full app over Redis: 2 held, the 3rd refused, then everything released."""
    gate = Gate()
    layer = ConcurrencyLimit(2, storage=redis_url, key_prefix=key_prefix, **EXACT)
    app = gate.asgi() if interface == "asgi" else gate.wsgi()
    wall = Seawall(app, layers=[layer])
    if interface == "asgi":
        from starlette.testclient import TestClient

        client: httpx.Client = TestClient(wall)
        client.__enter__()  # one event loop for the whole test
    else:
        client = httpx.Client(transport=httpx.WSGITransport(app=wall), base_url="http://testserver")
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(client.get, "/hold") for _ in range(2)]
        gate.wait_entered(2)
        refused = client.get("/")
        gate.open()
        assert [f.result().status_code for f in futures] == [200, 200]
    assert refused.status_code == 503
    assert refused.json()["scope"] == "global"
    assert client.get("/").status_code == 200
    if interface == "asgi":
        client.portal.call(layer.aclose)  # type: ignore[attr-defined]
        client.__exit__(None, None, None)
    else:
        layer.flush()
        client.close()
    layer.close()
    assert slots_in_redis(redis_url, key_prefix) == 0


def test_wsgi_threads_release_in_batches(redis_url: str, key_prefix: str) -> None:
    """32 threads x 15 requests (global + per-key sets): after flush no slot is left."""
    from concurrent.futures import wait

    layer = ConcurrencyLimit(
        6,
        per_key=2,
        storage=redis_url,
        key_prefix=key_prefix,
        storage_timeout=1.0,
        on_storage_error="deny",
    )
    admitted = 0

    def worker(i: int) -> None:
        nonlocal admitted
        for _ in range(15):
            r = view(f"10.0.0.{i % 5}")
            if admit(layer, r):
                admitted += 1
                finish(layer, r)

    with ThreadPoolExecutor(32) as pool:
        wait([pool.submit(worker, i) for i in range(32)])
    assert layer.flush(5.0)
    client = redis.Redis.from_url(redis_url)
    try:
        left = [client.zcard(k) for k in client.scan_iter(match=f"{{{key_prefix}:cc}}*")]
    finally:
        client.close()
    stats = layer.stats()
    assert admitted > 0
    assert stats["storage_errors"] == 0
    assert stats["release_errors"] == 0
    assert sum(left) == 0
    layer.close()


class TestKeptConnections:
    """Script calls go out on kept connections (seawall._wire), sync and async."""

    def test_a_connection_the_server_closed_and_a_flushed_script(
        self, redis_url: str, key_prefix: str
    ) -> None:
        """CLIENT KILL closes the kept connection and SCRIPT FLUSH makes the server
        forget the script: the next acquires still count exactly, with no storage error."""
        layer = ConcurrencyLimit(2, storage=redis_url, key_prefix=key_prefix, **EXACT)
        admin = redis.Redis.from_url(redis_url)
        a = view()
        assert admit(layer, a)
        slots = layer._shared
        assert slots is not None
        assert slots._sync_fast is not None
        assert len(slots._sync_fast.free) == 1  # kept after its reply was read
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        b = view()
        assert admit(layer, b)
        admin.script_flush()
        assert not admit(layer, view())  # two held: full, counted right after both
        assert slots_in_redis(redis_url, key_prefix) == 2
        assert slots.errors == 0
        finish(layer, a)
        finish(layer, b)
        assert layer.flush()
        assert slots_in_redis(redis_url, key_prefix) == 0
        layer.close()

    def test_async_calls_use_kept_connections_and_one_deadline(
        self, redis_url: str, key_prefix: str
    ) -> None:
        """On the event loop the slots are taken on kept connections too, and the
        asyncio client has no socket timeout of its own (the call's deadline
        bounds it: see the SIGSTOP runs in tests/faults)."""

        async def main() -> tuple[list[bool], int, Any]:
            layer = ConcurrencyLimit(2, storage=redis_url, key_prefix=key_prefix, **EXACT)
            held = [view() for _ in range(3)]
            got = [await aadmit(layer, r) for r in held]
            slots = layer._shared
            assert slots is not None
            client, fast = slots._aclients()
            assert fast is not None
            kept = len(fast.free)
            timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
            for r in held:
                finish(layer, r)
            await layer.aclose()
            return got, kept, timeout

        got, kept, timeout = asyncio.run(main())
        assert got == [True, True, False]
        assert kept == 1
        assert timeout is None
        assert slots_in_redis(redis_url, key_prefix) == 0


def test_a_worker_exiting_cleanly_gives_its_last_slots_back(
    redis_url: str, key_prefix: str
) -> None:
    """gunicorn's max_requests, a restart: the process exits before the flusher ran."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        from seawall import ConcurrencyLimit, Seawall

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"ok"]

        wall = Seawall(
            app,
            layers=[ConcurrencyLimit(5, storage={redis_url!r}, key_prefix={key_prefix!r})],
        )
        for _ in range(3):
            environ = {{
                "REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "10.0.0.1",
                "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "80",
            }}
            body = wall(environ, lambda status, headers, exc_info=None: None)
            b"".join(body)
            body.close()
        # Exit at once, as a recycled worker does: no flush, no close().
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert slots_in_redis(redis_url, key_prefix) == 0
