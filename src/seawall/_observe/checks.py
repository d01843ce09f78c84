"""Health checks: resource thresholds, Redis pings, trends and custom callables.

A check is an object with a ``name``, a ``timeout`` (seconds), ``local``
(``True`` when it reads only this process's own figures) and a
``__call__`` that is either a plain function or a coroutine function. What
it returns becomes a :class:`CheckResult`: a ``CheckResult`` as is, ``True``
/ ``None`` pass, ``False`` fail, ``"pass" | "warn" | "fail"``, or a dict
with ``status`` and optionally ``output``, ``observed_value``,
``observed_unit``. An exception or a timeout is a failure whose output names
the exception type only (messages may carry connection strings).

:func:`run_checks` / :func:`arun_checks` run a list of checks concurrently,
each under its own timeout: the sync one in a small thread pool, the async
one on the event loop (sync callables go to a thread there too, so a slow
check never blocks the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from seawall._observe.sampler import ResourceSampler, Sample

__all__ = [
    "Check",
    "CheckResult",
    "CustomCheck",
    "RedisCheck",
    "Status",
    "StorageURICheck",
    "ThresholdCheck",
    "TrendCheck",
    "arun_checks",
    "forecast",
    "resource_checks",
    "run_checks",
    "worst",
]

Status = Literal["pass", "warn", "fail"]
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}


def worst(statuses: Iterable[str]) -> Status:
    """The worst of *statuses* (``"pass"`` when empty)."""
    rank = max((_RANK.get(s, 2) for s in statuses), default=0)
    statuses_: tuple[Status, ...] = ("pass", "warn", "fail")
    return statuses_[rank]


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class CheckResult:
    """The outcome of one check, in ``application/health+json`` terms.

    Attributes:
        name: ``component:measurement`` (``"redis:ping"``, ``"memory:utilization"``).
        status: ``"pass"``, ``"warn"`` or ``"fail"``.
        observed_value: the figure measured, if any.
        observed_unit: its unit (``"%"``, ``"ms"``, ``"h"``).
        output: why it is not passing (never a secret: no URLs with passwords).
        duration: seconds the check took.
        component_id: which instance (``"127.0.0.1:6379/0"``).
        component_type: ``"system"``, ``"datastore"`` or ``"component"``.
        time: when it ran (ISO 8601, UTC).
    """

    name: str
    status: Status
    observed_value: Any = None
    observed_unit: str | None = None
    output: str | None = None
    duration: float = 0.0
    component_id: str | None = None
    component_type: str | None = None
    time: str = ""

    def as_json(self) -> dict[str, Any]:
        """Render as one entry of a health+json ``checks`` list."""
        out: dict[str, Any] = {"status": self.status}
        if self.component_id is not None:
            out["componentId"] = self.component_id
        if self.component_type is not None:
            out["componentType"] = self.component_type
        if self.observed_value is not None:
            out["observedValue"] = self.observed_value
        if self.observed_unit is not None:
            out["observedUnit"] = self.observed_unit
        if self.output:
            out["output"] = self.output
        out["time"] = self.time or _now_iso()
        out["duration_ms"] = round(self.duration * 1000.0, 3)
        return out


class Check:
    """Base of the built-in checks: a name, a timeout, and whether it is local."""

    name: str = "check"
    timeout: float = 1.0
    #: Local checks read only this process's figures: cheap, run inline.
    local: bool = False
    component_type: str | None = "component"

    def __call__(self) -> Any:
        """Run the check; see the module docstring for what it may return."""
        raise NotImplementedError


def _normalise(check: Any, value: Any, duration: float) -> CheckResult:
    name = str(getattr(check, "name", "custom"))
    ctype = getattr(check, "component_type", "component")
    if isinstance(value, CheckResult):
        value.duration = duration
        value.time = value.time or _now_iso()
        return value
    if value is None or value is True:
        return CheckResult(name, "pass", duration=duration, component_type=ctype, time=_now_iso())
    if value is False:
        return CheckResult(
            name, "fail", output="check returned False", duration=duration,
            component_type=ctype, time=_now_iso(),
        )  # fmt: skip
    if isinstance(value, str) and value in _RANK:
        return CheckResult(name, value, duration=duration, component_type=ctype, time=_now_iso())  # type: ignore[arg-type]
    if isinstance(value, dict):
        status = value.get("status", "pass")
        if status not in _RANK:
            status = "fail"
        return CheckResult(
            name,
            status,
            observed_value=value.get("observed_value"),
            observed_unit=value.get("observed_unit"),
            output=None if value.get("output") is None else str(value["output"])[:500],
            duration=duration,
            component_type=ctype,
            time=_now_iso(),
        )
    return CheckResult(
        name, "fail", output=f"unexpected check result of type {type(value).__name__}",
        duration=duration, component_type=ctype, time=_now_iso(),
    )  # fmt: skip


def _failed(check: Any, output: str, duration: float) -> CheckResult:
    # An optional dependency (critical=False) only warns, whatever went wrong.
    return CheckResult(
        str(getattr(check, "name", "custom")),
        "fail" if getattr(check, "critical", True) else "warn",
        output=output,
        duration=duration,
        component_id=getattr(check, "component_id", None),
        component_type=getattr(check, "component_type", "component"),
        time=_now_iso(),
    )


def _is_async(check: Any) -> bool:
    fn = getattr(check, "func", check)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


# -- running ------------------------------------------------------------------


class _Run:
    """One run of a sync check, on a daemon thread of its own.

    Not a pool: a check that hangs keeps its thread, and in a pool the hung
    runs of one non-critical check would take every thread in turn, until a
    healthy critical check found none and timed out (readiness 503 on a
    healthy instance). Here a check has at most one run in flight (see
    :func:`_start`), so hung threads are bounded by the checks, and daemon
    threads never hold up the process's exit.
    """

    __slots__ = ("_loop", "_waiter", "done", "error", "value")

    def __init__(self, check: Any) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        name = f"seawall-health:{getattr(check, 'name', '?')}"
        threading.Thread(target=self._go, args=(check,), name=name, daemon=True).start()

    def _go(self, check: Any) -> None:
        try:
            self.value = _call_sync(check)
        except BaseException as exc:  # reported as the check's failure
            self.error = exc
        finally:
            self.done.set()
            loop, waiter = self._loop, self._waiter
            if loop is not None and waiter is not None:
                # A loop that has closed since: nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_wake, waiter)

    async def wait(self, timeout: float) -> bool:
        """Wait on the event loop up to *timeout* s; whether the run ended."""
        loop = asyncio.get_running_loop()
        self._loop, self._waiter = loop, loop.create_future()
        if self.done.is_set():
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return self.done.is_set()
        return True


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


#: The run of each sync check still in flight, by check.
_RUNNING: dict[int, tuple[Any, _Run]] = {}
_RUNNING_LOCK = threading.Lock()


def _forget_runs() -> None:
    # A forked child has none of its parent's threads: runs in flight there
    # would never end here, and their checks would never run again.
    global _RUNNING_LOCK
    _RUNNING.clear()
    _RUNNING_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runs)


def _start(check: Any) -> _Run | None:
    """A new run of *check*, or ``None`` while its last run has not returned."""
    with _RUNNING_LOCK:
        held = _RUNNING.get(id(check))
        if held is not None and held[0] is check and not held[1].done.is_set():
            return None
        run = _Run(check)
        _RUNNING[id(check)] = (check, run)
        return run


def _still_running(check: Any) -> CheckResult:
    timeout = float(getattr(check, "timeout", 1.0))
    return _failed(check, f"timed out after {timeout:g} s (its last run has not returned)", 0.0)


def _call_sync(check: Any) -> Any:
    if _is_async(check):
        return asyncio.run(check())
    return check()


def run_checks(checks: Sequence[Any]) -> list[CheckResult]:
    """Run *checks* concurrently in threads, each under its own timeout."""
    results: list[CheckResult | None] = [None] * len(checks)
    runs: list[tuple[int, Any, _Run, float]] = []
    for i, check in enumerate(checks):
        start = time.perf_counter()
        if getattr(check, "local", False) and not _is_async(check):
            try:
                value = check()
            except Exception as exc:
                results[i] = _failed(check, type(exc).__name__, time.perf_counter() - start)
            else:
                results[i] = _normalise(check, value, time.perf_counter() - start)
            continue
        run = _start(check)
        if run is None:
            results[i] = _still_running(check)
            continue
        runs.append((i, check, run, start))
    for i, check, run, start in runs:
        timeout = float(getattr(check, "timeout", 1.0))
        remaining = max(0.0, start + timeout - time.perf_counter())
        if not run.done.wait(remaining):
            results[i] = _failed(check, f"timed out after {timeout:g} s", timeout)
        elif run.error is not None:
            results[i] = _failed(check, type(run.error).__name__, time.perf_counter() - start)
        else:
            results[i] = _normalise(check, run.value, time.perf_counter() - start)
    return [r for r in results if r is not None]


async def _arun_one(check: Any) -> CheckResult:
    timeout = float(getattr(check, "timeout", 1.0))
    start = time.perf_counter()
    try:
        if _is_async(check):
            value = await asyncio.wait_for(check(), timeout)
        elif getattr(check, "local", False):
            value = check()
        else:
            run = _start(check)
            if run is None:
                return _still_running(check)
            if not await run.wait(timeout):
                raise TimeoutError
            if run.error is not None:
                raise run.error
            value = run.value
    except (asyncio.TimeoutError, TimeoutError):
        return _failed(check, f"timed out after {timeout:g} s", time.perf_counter() - start)
    except Exception as exc:
        return _failed(check, type(exc).__name__, time.perf_counter() - start)
    return _normalise(check, value, time.perf_counter() - start)


async def arun_checks(checks: Sequence[Any]) -> list[CheckResult]:
    """Run *checks* concurrently on the event loop, each under its own timeout."""
    return list(await asyncio.gather(*(_arun_one(c) for c in checks)))


# -- built-in checks ------------------------------------------------------------


class CustomCheck(Check):
    """Wrap a user callable (sync or async) as a check.

    Args:
        name: the check's name in the report (``"db:query"``).
        func: a callable taking no argument; see the module docstring for its result.
        timeout: seconds before it counts as failed.
        critical: a failure fails readiness (``False``: it only warns).
    """

    component_type = "component"

    def __init__(
        self, name: str, func: Callable[[], Any], *, timeout: float = 1.0, critical: bool = True
    ) -> None:
        self.name = name
        self.func = func
        self.timeout = timeout
        self.critical = critical

    def __call__(self) -> Any:
        """Call the user's function."""
        result = self.func()
        if not self.critical and inspect.isawaitable(result):
            return self._soften(result)
        if not self.critical:
            res = _normalise(self, result, 0.0)
            if res.status == "fail":
                res.status = "warn"
            return res
        return result

    async def _soften(self, awaitable: Awaitable[Any]) -> CheckResult:
        res = _normalise(self, await awaitable, 0.0)
        if res.status == "fail":
            res.status = "warn"
        return res

    def __repr__(self) -> str:
        return f"CustomCheck({self.name!r}, timeout={self.timeout}, critical={self.critical})"


class ThresholdCheck(Check):
    """Warn or fail when a sampled resource crosses a threshold.

    Args:
        name: ``"cpu:utilization"`` and so on.
        read: gets the figure (percent) from a :class:`Sample`.
        warn: warn at or above this figure (``None``: never).
        fail: fail at or above this figure (``None``: never).
        sampler: where readings come from.
        unit: the figure's unit.
    """

    local = True
    component_type = "system"

    def __init__(
        self,
        name: str,
        read: Callable[[Sample], float | None],
        *,
        warn: float | None,
        fail: float | None,
        sampler: ResourceSampler,
        unit: str = "%",
    ) -> None:
        self.name = name
        self.read = read
        self.warn = warn
        self.fail = fail
        self.sampler = sampler
        self.unit = unit

    def __repr__(self) -> str:
        return f"ThresholdCheck({self.name!r}, warn={self.warn}, fail={self.fail})"

    def __call__(self) -> CheckResult:
        """Compare the latest reading with the thresholds."""
        sample = self.sampler.latest
        if sample is None or time.monotonic() - sample.time > 3 * self.sampler.interval + 5:
            # No recent reading (the thread has not run yet): read now. This
            # runs inside the health effect, off the request hooks.
            sample = self.sampler.sample_now()
        value = self.read(sample)
        if value is None:
            return CheckResult(self.name, "pass", output="not measurable here",
                               component_type=self.component_type)  # fmt: skip
        status: Status = "pass"
        output = None
        if self.fail is not None and value >= self.fail:
            status, output = "fail", f"at or above {self.fail:g}{self.unit}"
        elif self.warn is not None and value >= self.warn:
            status, output = "warn", f"at or above {self.warn:g}{self.unit}"
        return CheckResult(
            self.name,
            status,
            observed_value=round(value, 2),
            observed_unit=self.unit,
            output=output,
            component_type=self.component_type,
        )


def _pct(used: int | None, total: int | None) -> float | None:
    if used is None or not total:
        return None
    return 100.0 * used / total


def resource_checks(
    sampler: ResourceSampler,
    *,
    cpu: tuple[float | None, float | None] = (90.0, None),
    memory: tuple[float | None, float | None] = (85.0, 95.0),
    disk: tuple[float | None, float | None] = (90.0, 98.0),
    open_files: tuple[float | None, float | None] = (80.0, 95.0),
) -> list[ThresholdCheck]:
    """The four resource checks with ``(warn, fail)`` thresholds in percent."""
    return [
        ThresholdCheck(
            "cpu:utilization", lambda s: s.cpu, warn=cpu[0], fail=cpu[1], sampler=sampler
        ),
        ThresholdCheck(
            "memory:utilization",
            lambda s: s.memory,
            warn=memory[0],
            fail=memory[1],
            sampler=sampler,
        ),
        ThresholdCheck(
            "disk:utilization",
            lambda s: _pct(s.disk_used, s.disk_total),
            warn=disk[0],
            fail=disk[1],
            sampler=sampler,
        ),
        ThresholdCheck(
            "open-files:utilization",
            lambda s: _pct(s.open_files, s.open_files_limit),
            warn=open_files[0],
            fail=open_files[1],
            sampler=sampler,
        ),
    ]


def redact_url(url: str) -> str:
    """``host:port/db`` of a storage URL: no scheme, credentials or query.

    Several hosts (a Sentinel or Cluster URL) stay comma-separated; a unix
    socket URL gives its path.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if "unix" in parts.scheme:
        return parts.path or "<unix socket>"
    hosts = []
    for host in parts.netloc.rpartition("@")[2].split(","):
        if not host:
            continue
        if ":" not in host.rpartition("]")[2]:
            host += ":6379"
        hosts.append(host)
    db = parts.path.strip("/")
    return ",".join(hosts or ["localhost:6379"]) + (f"/{db}" if db else "")


class RedisCheck(Check):
    """``PING`` a Redis server; fail when it errs or takes longer than *timeout*.

    Args:
        url: a ``redis://`` or ``rediss://`` URL (``async+`` prefixes are dropped).
        timeout: seconds for connect and reply together.
        critical: a failure fails readiness (``False``: it only warns, for a
            store the app can live without, such as a rate limiter that fails open).
    """

    component_type = "datastore"

    def __init__(self, url: str, *, timeout: float = 0.5, critical: bool = True) -> None:
        if url.startswith("async+"):
            url = url[len("async+") :]
        from seawall._wire import require_redis

        require_redis("RedisCheck")
        import redis  # noqa: F401  (imported now: a first import inside a probe is slow)

        self.url = url
        self.ping_timeout = timeout
        # The socket timeouts bound the ping; the runner's timeout is only a
        # backstop (connect and reply are each bounded by ping_timeout).
        self.timeout = 2 * timeout + 0.25
        self.critical = critical
        self.component_id = redact_url(url)
        self.name = "redis:ping"
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisCheck({self.component_id!r}, timeout={self.ping_timeout})"

    def _redis(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import redis
                    from redis.backoff import NoBackoff
                    from redis.retry import Retry

                    # No retries: a retry would multiply the timeout.
                    self._client = redis.Redis.from_url(
                        self.url,
                        socket_timeout=self.ping_timeout,
                        socket_connect_timeout=self.ping_timeout,
                        retry=Retry(NoBackoff(), 0),
                        health_check_interval=0,
                    )
        return self._client

    def __call__(self) -> CheckResult:
        """Ping the server (blocking: the runners call it in a thread)."""
        start = time.perf_counter()
        status: Status = "pass"
        output = None
        try:
            self._redis().ping()
        except Exception as exc:
            status = "fail" if self.critical else "warn"
            output = type(exc).__name__
            if self._client is not None:
                # Drop connections that may be stuck half-way through a reply.
                self._client.connection_pool.disconnect()
        elapsed = time.perf_counter() - start
        return CheckResult(
            self.name,
            status,
            observed_value=round(elapsed * 1000.0, 3),
            observed_unit="ms",
            output=output,
            component_id=self.component_id,
            component_type=self.component_type,
        )


class StorageURICheck(Check):
    """Ask a limits storage built from *url* whether it works: Sentinel, Cluster, memcached...

    For the topologies a plain ``PING`` cannot reach (the master behind a
    Sentinel, every node of a Cluster) limits' own ``check()`` is the test.

    Args:
        url: a storage URI limits understands (``redis+sentinel://``, ``redis+cluster://``...).
        timeout: seconds for the check (Redis socket timeouts; a backstop otherwise).
        critical: a failure fails readiness (``False``: it only warns).
    """

    component_type = "datastore"

    def __init__(self, url: str, *, timeout: float = 0.5, critical: bool = True) -> None:
        if url.startswith("async+"):
            url = url[len("async+") :]
        self.url = url
        self.scheme = url.split("://", 1)[0].lower()
        self._redis = "redis" in self.scheme or "valkey" in self.scheme
        self.name = ("redis" if self._redis else self.scheme) + ":ping"
        self.ping_timeout = timeout
        self.timeout = 2 * timeout + 0.25
        self.critical = critical
        self.component_id = redact_url(url)
        self._storage: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StorageURICheck({self.scheme}://{self.component_id}, timeout={self.ping_timeout})"

    def _get(self) -> Any:
        if self._storage is None:
            with self._lock:
                if self._storage is None:
                    from limits.storage import storage_from_string

                    options: dict[str, Any] = {}
                    if self._redis:
                        options = {
                            "socket_timeout": self.ping_timeout,
                            "socket_connect_timeout": self.ping_timeout,
                        }
                    self._storage = storage_from_string(self.url, **options)
        return self._storage

    def __call__(self) -> CheckResult:
        """Build the storage once, then call its ``check()`` (blocking: run in a thread)."""
        start = time.perf_counter()
        output = None
        try:
            ok = bool(self._get().check())
        except Exception as exc:
            ok, output = False, type(exc).__name__
            # A storage that failed to build (cluster discovery) is rebuilt next time.
            self._storage = None
        else:
            if not ok:
                output = "storage check failed"
        elapsed = time.perf_counter() - start
        return CheckResult(
            self.name,
            "pass" if ok else ("fail" if self.critical else "warn"),
            observed_value=round(elapsed * 1000.0, 3),
            observed_unit="ms",
            output=output,
            component_id=self.component_id,
            component_type=self.component_type,
        )


def forecast(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line through ``(t, y)`` points: ``(slope per second, r squared)``."""
    n = len(points)
    if n < 2:
        return 0.0, 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    stt = sum((t - mt) ** 2 for t, _ in points)
    syy = sum((y - my) ** 2 for _, y in points)
    sty = sum((t - mt) * (y - my) for t, y in points)
    if stt == 0:
        return 0.0, 0.0
    slope = sty / stt
    r2 = 1.0 if syy == 0 else (sty * sty) / (stt * syy)
    return slope, r2


class TrendCheck(Check):
    """Warn before a resource runs out, from the sampler's trend readings.

    Disk: warn when, at the rate of the last readings, the disk is full in
    less than *disk_hours*. Memory: warn when use grows steadily (a line fits
    the readings with r² >= *min_r2*) and would reach the limit in less than
    *memory_hours*. A trend never fails readiness: it is a forecast.

    Args:
        sampler: where trend readings come from.
        disk_hours: warn when the disk is full sooner than this.
        memory_hours: warn when memory runs out sooner than this.
        min_span: seconds of readings needed before forecasting.
        min_r2: how straight memory growth must be to count as steady.
    """

    local = True
    component_type = "system"
    name = "resources:trend"

    def __init__(
        self,
        sampler: ResourceSampler,
        *,
        disk_hours: float = 24.0,
        memory_hours: float = 6.0,
        min_span: float = 600.0,
        min_r2: float = 0.8,
    ) -> None:
        self.sampler = sampler
        self.disk_hours = disk_hours
        self.memory_hours = memory_hours
        self.min_span = min_span
        self.min_r2 = min_r2

    def __repr__(self) -> str:
        return f"TrendCheck(disk_hours={self.disk_hours}, memory_hours={self.memory_hours})"

    def evaluate(self, samples: Sequence[Sample]) -> CheckResult:
        """Forecast from *samples* (pure: used by tests with made-up readings)."""
        if len(samples) < 3 or samples[-1].time - samples[0].time < self.min_span:
            return CheckResult(self.name, "pass", output="not enough history yet",
                               component_type=self.component_type)  # fmt: skip
        notes: list[str] = []
        soonest = math.inf
        last = samples[-1]
        disk = [(s.time, float(s.disk_used)) for s in samples if s.disk_used is not None]
        if len(disk) >= 3 and last.disk_total:
            slope, _ = forecast(disk)
            if slope > 0:
                hours = (last.disk_total - disk[-1][1]) / slope / 3600.0
                soonest = min(soonest, hours)
                if hours < self.disk_hours:
                    notes.append(f"disk full in {hours:.1f} h at the current rate")
        mem = [(s.time, float(s.memory_used)) for s in samples if s.memory_used is not None]
        if len(mem) >= 3 and last.memory_limit:
            slope, r2 = forecast(mem)
            if slope > 0 and r2 >= self.min_r2:
                hours = (last.memory_limit - mem[-1][1]) / slope / 3600.0
                soonest = min(soonest, hours)
                if hours < self.memory_hours:
                    notes.append(f"memory growing steadily, exhausted in {hours:.1f} h")
        return CheckResult(
            self.name,
            "warn" if notes else "pass",
            observed_value=None if math.isinf(soonest) else round(soonest, 2),
            observed_unit=None if math.isinf(soonest) else "h",
            output="; ".join(notes) or None,
            component_type=self.component_type,
        )

    def __call__(self) -> CheckResult:
        """Forecast from the sampler's trend readings."""
        return self.evaluate(list(self.sampler.trend))
