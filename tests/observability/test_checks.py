"""Health checks: thresholds, trends, custom callables, timeouts, Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tests.observability.conftest import PausableRedis, make_sampler

from seawall._observe.checks import (
    CheckResult,
    CustomCheck,
    RedisCheck,
    TrendCheck,
    arun_checks,
    forecast,
    redact_url,
    resource_checks,
    run_checks,
    worst,
)
from seawall._observe.sampler import ResourceSampler, Sample, take_sample

GIB = 1 << 30


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


class TestThresholds:
    @pytest.mark.parametrize(
        ("values", "name", "expected"),
        [
            pytest.param({"cpu": 50.0}, "cpu:utilization", "pass", id="cpu pass"),
            pytest.param({"cpu": 92.0}, "cpu:utilization", "warn", id="cpu warn"),
            pytest.param({"cpu": 99.0}, "cpu:utilization", "fail", id="cpu fail"),
            pytest.param({"memory": 10.0}, "memory:utilization", "pass", id="memory pass"),
            pytest.param({"memory": 90.0}, "memory:utilization", "warn", id="memory warn"),
            pytest.param({"memory": 96.0}, "memory:utilization", "fail", id="memory fail"),
            pytest.param({"disk_used": 50, "disk_total": 100}, "disk:utilization", "pass",
                         id="disk pass"),
            pytest.param({"disk_used": 93, "disk_total": 100}, "disk:utilization", "warn",
                         id="disk warn"),
            pytest.param({"disk_used": 99, "disk_total": 100}, "disk:utilization", "fail",
                         id="disk fail"),
            pytest.param({"open_files": 10, "open_files_limit": 1024}, "open-files:utilization",
                         "pass", id="fds pass"),
            pytest.param({"open_files": 850, "open_files_limit": 1000},
                         "open-files:utilization", "warn", id="fds warn"),
            pytest.param({"open_files": 990, "open_files_limit": 1000},
                         "open-files:utilization", "fail", id="fds fail"),
        ],
    )  # fmt: skip
    def test_each_resource_passes_warns_and_fails_at_its_thresholds(
        self, values: dict[str, Any], name: str, expected: str
    ) -> None:
        """Each resource check compares the latest reading with injected thresholds."""
        sampler = make_sampler(**values)
        checks = resource_checks(
            sampler, cpu=(90, 98), memory=(85, 95), disk=(90, 98), open_files=(80, 95)
        )
        result = by_name(run_checks(checks))[name]
        assert result.status == expected
        assert result.observed_unit == "%"
        assert result.observed_value is not None
        assert (result.output is None) == (expected == "pass")

    def test_unmeasurable_figures_pass_with_a_note(self) -> None:
        """A figure the platform cannot give (no fd limit) does not fail the service."""
        result = by_name(run_checks(resource_checks(make_sampler())))["open-files:utilization"]
        assert result.status == "pass"
        assert result.output == "not measurable here"

    def test_a_real_reading_has_every_figure(self) -> None:
        """take_sample reads memory, disk and file descriptors from psutil."""
        sample = take_sample()
        assert sample.memory is not None
        assert 0 < sample.memory <= 100
        assert sample.disk_total
        assert sample.disk_used is not None
        assert sample.open_files
        assert sample.open_files_limit

    def test_without_a_recent_reading_the_check_reads_now(self) -> None:
        """A sampler that never ran is read on the spot (inside the effect)."""
        sampler = ResourceSampler()
        results = by_name(run_checks(resource_checks(sampler)))
        assert results["memory:utilization"].observed_value is not None
        assert sampler.latest is not None


class TestTrend:
    @staticmethod
    def series(n: int, step: float, **fields: Any) -> list[Sample]:
        out = []
        for i in range(n):
            values = {k: (f(i) if callable(f) else f) for k, f in fields.items()}
            out.append(Sample(time=1000.0 + i * step, **values))
        return out

    def test_disk_filling_up_warns_with_the_hours_left(self) -> None:
        """1 GiB per 10 min with 10 GiB free: full in about 100 min, under the 24 h horizon."""
        samples = self.series(20, 60.0, disk_used=lambda i: 90 * GIB + i * GIB // 10,
                              disk_total=100 * GIB)  # fmt: skip
        result = TrendCheck(ResourceSampler()).evaluate(samples)
        assert result.status == "warn"
        assert "disk full in" in (result.output or "")
        assert result.observed_unit == "h"
        assert 1.0 < result.observed_value < 2.0

    def test_a_steady_disk_passes(self) -> None:
        """No growth, no forecast."""
        samples = self.series(20, 60.0, disk_used=50 * GIB, disk_total=100 * GIB)
        assert TrendCheck(ResourceSampler()).evaluate(samples).status == "pass"

    def test_memory_growing_steadily_warns(self) -> None:
        """A straight climb that reaches the limit within the horizon is a leak warning."""
        samples = self.series(30, 60.0, memory_used=lambda i: GIB + i * 50 * (1 << 20),
                              memory_limit=4 * GIB)  # fmt: skip
        result = TrendCheck(ResourceSampler(), memory_hours=6).evaluate(samples)
        assert result.status == "warn"
        assert "memory growing steadily" in (result.output or "")

    def test_noisy_memory_is_not_a_trend(self) -> None:
        """Sawtooth use (garbage collection) fits no line: no warning."""
        samples = self.series(30, 60.0, memory_used=lambda i: GIB + (i % 2) * GIB,
                              memory_limit=4 * GIB)  # fmt: skip
        assert TrendCheck(ResourceSampler()).evaluate(samples).status == "pass"

    def test_too_little_history_passes(self) -> None:
        """Forecasts wait for min_span seconds of readings."""
        samples = self.series(5, 1.0, disk_used=lambda i: i * GIB, disk_total=10 * GIB)
        result = TrendCheck(ResourceSampler()).evaluate(samples)
        assert result.status == "pass"
        assert result.output == "not enough history yet"

    def test_forecast_fits_a_line(self) -> None:
        """Least squares: slope per second and r squared."""
        slope, r2 = forecast([(0, 1.0), (1, 3.0), (2, 5.0)])
        assert slope == pytest.approx(2.0)
        assert r2 == pytest.approx(1.0)
        assert forecast([(0, 1.0)]) == (0.0, 0.0)

    def test_the_sampler_keeps_one_trend_reading_per_interval(self) -> None:
        """Recent readings are kept at full rate, trend readings every trend_every seconds."""
        sampler = ResourceSampler(trend_every=30.0)
        for i in range(100):
            sampler.record(Sample(time=float(i)))
        assert len(sampler.recent) == 100
        assert [s.time for s in sampler.trend] == [0.0, 30.0, 60.0, 90.0]


class TestCustom:
    @pytest.mark.parametrize(
        ("value", "status"),
        [(True, "pass"), (None, "pass"), (False, "fail"), ("warn", "warn"),
         ({"status": "warn", "output": "lagging", "observed_value": 3}, "warn"), (42, "fail")],
    )  # fmt: skip
    def test_results_are_normalised(self, value: Any, status: str) -> None:
        """Booleans, status strings and dicts all become check results."""
        [result] = run_checks([CustomCheck("db:query", lambda: value)])
        assert result.status == status
        assert result.name == "db:query"

    def test_an_async_check_runs_in_the_sync_runner(self) -> None:
        """Coroutine functions work under WSGI too."""

        async def ping() -> str:
            await asyncio.sleep(0)
            return "warn"

        assert run_checks([CustomCheck("a", ping)])[0].status == "warn"
        assert asyncio.run(arun_checks([CustomCheck("a", ping)]))[0].status == "warn"

    def test_an_exception_fails_without_leaking_its_message(self) -> None:
        """The output names the exception type only: messages may hold connection strings."""

        def broken() -> None:
            raise ConnectionError("postgres://admin:hunter2@db/prod refused")

        for results in (run_checks([CustomCheck("db", broken)]),
                        asyncio.run(arun_checks([CustomCheck("db", broken)]))):  # fmt: skip
            assert results[0].status == "fail"
            assert results[0].output == "ConnectionError"

    @pytest.mark.parametrize("runner", ["sync", "async"])
    def test_a_slow_check_fails_at_its_timeout(self, runner: str) -> None:
        """A hung dependency costs the check's timeout, not the hang."""

        def slow_sync() -> bool:
            time.sleep(1.0)
            return True

        async def slow_async() -> bool:
            await asyncio.sleep(1.0)
            return True

        checks = [
            CustomCheck("s", slow_sync, timeout=0.1),
            CustomCheck("a", slow_async, timeout=0.1),
        ]

        async def timed() -> tuple[list[CheckResult], float]:
            # Timed inside the loop: asyncio.run() itself waits for the
            # abandoned worker thread when it shuts its executor down.
            start = time.perf_counter()
            results = await arun_checks(checks)
            return results, time.perf_counter() - start

        if runner == "sync":
            start = time.perf_counter()
            results = run_checks(checks)
            elapsed = time.perf_counter() - start
        else:
            results, elapsed = asyncio.run(timed())
        assert [r.status for r in results] == ["fail", "fail"]
        assert all("timed out after 0.1 s" in (r.output or "") for r in results)
        assert elapsed < 0.6

    def test_checks_run_concurrently(self) -> None:
        """Three 0.2 s checks take about 0.2 s, not 0.6 s."""

        def nap() -> bool:
            time.sleep(0.2)
            return True

        start = time.perf_counter()
        results = run_checks([CustomCheck(f"n{i}", nap) for i in range(3)])
        assert all(r.status == "pass" for r in results)
        assert time.perf_counter() - start < 0.5

    def test_a_non_critical_failure_only_warns(self) -> None:
        """critical=False: the dependency is optional, its failure a warning."""

        async def down() -> bool:
            return False

        assert run_checks([CustomCheck("c", lambda: False, critical=False)])[0].status == "warn"
        assert (
            asyncio.run(arun_checks([CustomCheck("c", down, critical=False)]))[0].status == "warn"
        )

    def test_worst_status_wins(self) -> None:
        """fail > warn > pass; nothing is a pass."""
        assert worst(["pass", "warn"]) == "warn"
        assert worst(["warn", "fail", "pass"]) == "fail"
        assert worst([]) == "pass"


class TestRedis:
    @pytest.mark.redis
    def test_a_live_redis_passes_with_its_latency(self, redis_url: str) -> None:
        """PING answers: pass, with the round trip in ms and no credentials in the id."""
        [result] = run_checks([RedisCheck(redis_url)])
        assert result.status == "pass"
        assert result.observed_unit == "ms"
        assert result.component_id == "127.0.0.1:6379/0"

    def test_a_paused_redis_fails_within_its_timeout(self, pausable_redis: PausableRedis) -> None:
        """SIGSTOPped server: TCP still connects, no reply comes; the check fails on time."""
        check = RedisCheck(pausable_redis.url, timeout=0.2)
        assert run_checks([check])[0].status == "pass"
        pausable_redis.pause()
        for runner in (run_checks, lambda c: asyncio.run(arun_checks(c))):
            start = time.perf_counter()
            [result] = runner([check])
            elapsed = time.perf_counter() - start
            assert result.status == "fail"
            assert elapsed < 0.6, elapsed
        pausable_redis.resume()
        assert run_checks([check])[0].status == "pass"

    def test_nothing_listening_fails_fast(self) -> None:
        """A refused connection is a failure named by its exception type."""
        from tests.observability.conftest import free_port

        [result] = run_checks([RedisCheck(f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)])
        assert result.status == "fail"
        assert result.output == "ConnectionError"

    def test_urls_are_redacted(self) -> None:
        """Passwords and schemes never reach the report."""
        assert redact_url("redis://:s3cret@cache.internal:6380/2") == "cache.internal:6380/2"
        assert RedisCheck("async+redis://u:p@h:1/0").component_id == "h:1/0"


class TestAHungCheck:
    """A check that never returns keeps one thread, never readiness's others.

    Each run used to take a thread of a shared pool (8) or of the loop's
    default executor: a hung non-critical check took them all in a few
    probes, and then a healthy critical check timed out for want of one.
    """

    def test_sync_probes_keep_the_healthy_check_passing(self) -> None:
        import threading

        release = threading.Event()
        hung = CustomCheck("optional:hangs", release.wait, timeout=0.05, critical=False)
        quick = CustomCheck("db:quick", lambda: True, timeout=0.5)
        threads = threading.active_count()
        try:
            for _ in range(12):
                results = by_name(run_checks([hung, quick]))
                assert results["db:quick"].status == "pass"
                assert results["optional:hangs"].status == "warn"
            # One run of the hung check in flight, not one per probe.
            assert threading.active_count() - threads <= 2
        finally:
            release.set()

    def test_async_probes_keep_the_healthy_check_passing(self) -> None:
        import threading

        release = threading.Event()
        hung = CustomCheck("optional:hangs", release.wait, timeout=0.05, critical=False)
        quick = CustomCheck("db:quick", lambda: True, timeout=0.5)
        threads = threading.active_count()

        async def probes() -> list[dict[str, CheckResult]]:
            return [by_name(await arun_checks([hung, quick])) for _ in range(12)]

        try:
            for results in asyncio.run(probes()):
                assert results["db:quick"].status == "pass"
                assert results["optional:hangs"].status == "warn"
            assert threading.active_count() - threads <= 2
        finally:
            release.set()


def test_a_forked_child_runs_a_check_its_parent_left_running() -> None:
    """The parent's run lives on a thread the child does not have."""
    import os
    import threading

    release = threading.Event()
    hung = CustomCheck("optional:hangs", release.wait, timeout=0.05, critical=False)
    try:
        assert run_checks([hung])[0].status == "warn"  # its run is now in flight
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            result = run_checks([hung])[0]
            os.write(write, result.output.encode() if result.output else b"ran")
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        said = os.read(read, 1000).decode()
        os.close(read)
        # The child started a run of its own (it timed out, as the check hangs):
        # not "its last run has not returned", the parent's run.
        assert "last run" not in said
    finally:
        release.set()
