"""Health: liveness, readiness and a detailed report in ``application/health+json``.

Theory of operation:

1. Three paths are answered by the layer itself, outside load shedding, rate
   limits and breakers (it sits at position 300), so probes answer even when
   Redis is down or the service is shedding load.
2. **Liveness** (``/health/live``) never depends on anything outside the
   process: it passes while the process can answer at all. Restarting a
   process because its database blinked fixes nothing.
3. **Readiness** (``/health/ready``) runs every check and answers 503 when a
   critical one fails or the wall is draining (ASGI lifespan shutdown, or a
   layer with ``draining`` set). Its body names the failing checks only.
4. The **report** (``/health``) runs the same checks and shows each one:
   status, observed value and unit, time taken.
5. Check I/O (Redis pings, custom checks) runs inside a :class:`RunChecks`
   effect the driver executes (threads under WSGI, the event loop under
   ASGI), each check under its own timeout. Results are cached for
   *cache_for* seconds and only one refresh runs at a time (others get the
   previous report), so probes cannot hammer a dependency.
6. The other layers' storages are found when the wall binds the layers: any
   layer with a ``storage_uri`` or ``storage`` attribute holding a storage
   URL other than ``memory://`` (or an object with a ``check()`` method).
   Plain Redis and Valkey URLs (``redis://``, ``rediss://``, ``unix://``,
   ``redis+unix://``, ``valkey://``...) get a ``PING``; Sentinel, Cluster and
   other limits URLs are asked through limits' own ``check()``. A storage
   whose layer fails open (``on_storage_error`` other than ``"deny"``) only
   warns when it is down: the service still works without it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from seawall._core.decisions import Respond
from seawall._core.layer import ORDER
from seawall._core.request import RequestView
from seawall._log import logger
from seawall._observe.checks import (
    CheckResult,
    CustomCheck,
    RedisCheck,
    StorageURICheck,
    TrendCheck,
    arun_checks,
    resource_checks,
    run_checks,
    worst,
)
from seawall._observe.sampler import ResourceSampler, default_sampler
from seawall.exceptions import ConfigurationError

__all__ = ["HEALTH_CONTENT_TYPE", "Health", "RunChecks", "StorageCheck"]

HEALTH_CONTENT_TYPE = "application/health+json"
_HEADERS = (("Cache-Control", "no-store"),)
# Schemes redis-py's from_url reads once renamed (limits' and Valkey's aliases);
# any other remote scheme (Sentinel, Cluster, memcached...) is asked through limits.
_PLAIN_REDIS = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
    "redis+unix": "unix",
    "valkey": "redis",
    "valkeys": "rediss",
    "valkey+unix": "unix",
}


@dataclass(frozen=True, slots=True)
class RunChecks:
    """Effect: run *checks* concurrently, each under its own timeout."""

    checks: Sequence[Any]

    def run(self) -> list[CheckResult]:
        """Run them in threads (WSGI)."""
        return run_checks(self.checks)

    async def arun(self) -> list[CheckResult]:
        """Run them on the event loop (ASGI)."""
        return await arun_checks(self.checks)


class StorageCheck:
    """Call a storage object's own ``check()`` (limits storages have one)."""

    component_type = "datastore"
    local = False

    def __init__(self, storage: Any, *, layer: str, timeout: float = 0.5, critical: bool) -> None:
        self.storage = storage
        self.name = f"{layer}:storage"
        self.component_id = type(storage).__name__
        self.timeout = timeout
        self.critical = critical

    def __repr__(self) -> str:
        return f"StorageCheck({self.component_id}, timeout={self.timeout})"

    def __call__(self) -> CheckResult:
        """Ask the storage whether it works."""
        output: str | None = None
        try:
            ok = bool(self.storage.check())
        except Exception as exc:
            ok, output = False, type(exc).__name__
        else:
            if not ok:
                output = "storage check returned False"
        return CheckResult(
            self.name,
            "pass" if ok else ("fail" if self.critical else "warn"),
            output=output,
            component_id=self.component_id,
            component_type=self.component_type,
        )


def _pair(warn: float | None, fail: float | None, name: str) -> tuple[float | None, float | None]:
    for label, value in (("warn", warn), ("fail", fail)):
        if value is not None and not 0 < value <= 100:
            msg = f"{name}_{label}: expected a percentage in (0, 100] or None, got {value!r}"
            raise ConfigurationError(msg)
    if warn is not None and fail is not None and warn > fail:
        msg = f"{name}_warn ({warn}) must not exceed {name}_fail ({fail})"
        raise ConfigurationError(msg)
    return warn, fail


def _label(result: CheckResult) -> str:
    return result.name + (f"[{result.component_id}]" if result.component_id else "")


class Health:
    """Answer liveness, readiness and health-report probes.

    Args:
        live_path: liveness path (``None``: not served).
        ready_path: readiness path (``None``: not served).
        report_path: detailed report path (``None``: not served).
        cache_for: seconds a check run is reused.
        cpu_warn, cpu_fail: CPU busy percentages (CPU alone never fails by default:
            a busy service is still a working one).
        memory_warn, memory_fail: memory-in-use percentages (container limit if any).
        disk_warn, disk_fail: usage percentages of *disk_path*.
        disk_path: the filesystem checked.
        open_files_warn, open_files_fail: open descriptors, percent of the soft limit.
        redis: extra storage URLs to check (critical): Redis, Sentinel, Cluster...
        discover_storages: also check the other layers' storages.
        storage_timeout: seconds for each storage ping.
        checks: custom checks: a mapping of name to a sync or async callable,
            or :class:`~seawall._observe.checks.CustomCheck` objects.
        check_timeout: default seconds for each custom check.
        trend: add the trend check (disk full in *disk_hours*, memory growing).
        disk_hours, memory_hours: forecast horizons of the trend check.
        resources: include the CPU, memory, disk and open-file checks.
        sampler: the resource sampler (default: the process-wide one).
        clock: monotonic clock for the cache (injected in tests).
    """

    name: ClassVar[str] = "health"
    order: ClassVar[int] = ORDER["health"]

    def __init__(
        self,
        *,
        live_path: str | None = "/health/live",
        ready_path: str | None = "/health/ready",
        report_path: str | None = "/health",
        cache_for: float = 2.0,
        cpu_warn: float | None = 90.0,
        cpu_fail: float | None = None,
        memory_warn: float | None = 85.0,
        memory_fail: float | None = 95.0,
        disk_warn: float | None = 90.0,
        disk_fail: float | None = 98.0,
        disk_path: str = "/",
        open_files_warn: float | None = 80.0,
        open_files_fail: float | None = 95.0,
        redis: Sequence[str] = (),
        discover_storages: bool = True,
        storage_timeout: float = 0.5,
        checks: Mapping[str, Callable[[], Any]] | Sequence[Any] = (),
        check_timeout: float = 1.0,
        trend: bool = True,
        disk_hours: float = 24.0,
        memory_hours: float = 6.0,
        resources: bool = True,
        sampler: ResourceSampler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        paths = [p for p in (live_path, ready_path, report_path) if p is not None]
        for p in paths:
            if not p.startswith("/"):
                msg = f"health paths must start with '/', got {p!r}"
                raise ConfigurationError(msg)
        if len(set(paths)) != len(paths):
            msg = f"health paths must differ, got {paths!r}"
            raise ConfigurationError(msg)
        if cache_for < 0 or storage_timeout <= 0 or check_timeout <= 0:
            msg = "cache_for must be >= 0 and the timeouts > 0"
            raise ConfigurationError(msg)
        self.live_path, self.ready_path, self.report_path = live_path, ready_path, report_path
        self._paths: dict[str, str] = {}
        if live_path:
            self._paths[live_path] = "live"
        if ready_path:
            self._paths[ready_path] = "ready"
        if report_path:
            self._paths[report_path] = "report"
        self.cache_for = cache_for
        self.storage_timeout = storage_timeout
        self.discover_storages = discover_storages
        if sampler is None:
            sampler = default_sampler()
            if disk_path != sampler.disk_path:
                sampler = ResourceSampler(disk_path=disk_path)
        self.sampler = sampler
        self._clock = clock
        self.checks: list[Any] = []
        if resources:
            self.checks.extend(
                resource_checks(
                    sampler,
                    cpu=_pair(cpu_warn, cpu_fail, "cpu"),
                    memory=_pair(memory_warn, memory_fail, "memory"),
                    disk=_pair(disk_warn, disk_fail, "disk"),
                    open_files=_pair(open_files_warn, open_files_fail, "open_files"),
                )
            )
        if trend:
            self.checks.append(
                TrendCheck(sampler, disk_hours=disk_hours, memory_hours=memory_hours)
            )
        self._redis_urls: set[str] = set()
        for url in redis:
            if not isinstance(url, str) or "://" not in url:
                msg = f"redis: expected storage URLs like 'redis://host:6379/0', got {url!r}"
                raise ConfigurationError(msg)
            self._add_redis(url, critical=True)
        items = checks.items() if isinstance(checks, Mapping) else None
        if items is not None:
            for name, func in items:
                if not callable(func):
                    msg = f"checks[{name!r}]: expected a callable, got {type(func).__name__}"
                    raise ConfigurationError(msg)
                self.checks.append(CustomCheck(name, func, timeout=check_timeout))
        else:
            for check in checks:
                if not callable(check):
                    msg = f"checks: expected callables, got {type(check).__name__}"
                    raise ConfigurationError(msg)
                if not hasattr(check, "name"):
                    check = CustomCheck(getattr(check, "__name__", "custom"), check,
                                        timeout=check_timeout)  # fmt: skip
                self.checks.append(check)
        self._wall: Any = None
        self._cache: tuple[float, list[CheckResult]] | None = None
        self._refreshing = False
        self._lock = threading.Lock()
        self.runs = 0
        self.probes = 0
        self._last_status: str | None = None
        self._live = Respond(200, b'{"status":"pass"}', _HEADERS, content_type=HEALTH_CONTENT_TYPE)

    def _add_redis(self, url: str, *, critical: bool) -> None:
        """Check the storage at *url* (once per URL); ``memory://`` needs no check."""
        key = url[len("async+") :] if url.startswith("async+") else url
        scheme, sep, rest = key.partition("://")
        scheme = scheme.lower()
        if not sep or scheme == "memory" or key in self._redis_urls:
            return
        self._redis_urls.add(key)
        plain = _PLAIN_REDIS.get(scheme)
        if plain is not None:
            check: Any = RedisCheck(
                f"{plain}://{rest}", timeout=self.storage_timeout, critical=critical
            )
        else:
            check = StorageURICheck(key, timeout=self.storage_timeout, critical=critical)
        self.checks.append(check)

    def __repr__(self) -> str:
        return (
            f"Health(live_path={self.live_path!r}, ready_path={self.ready_path!r}, "
            f"report_path={self.report_path!r}, checks={len(self.checks)})"
        )

    # -- wiring ---------------------------------------------------------------

    def bind(self, wall: Any) -> None:
        """Find the other layers' storages (called by ``Seawall`` with the wall)."""
        self._wall = wall
        if not self.discover_storages:
            return
        for layer in getattr(getattr(wall, "stack", None), "layers", ()):
            if layer is self:
                continue
            # Only a layer that refuses when its store is down makes the
            # service unready without it; fail-open layers merely warn.
            critical = getattr(layer, "on_storage_error", "allow") == "deny"
            options = getattr(layer, "_options", None)
            for attr in ("storage_uri", "storage", "_options"):
                value = getattr(layer, attr, None)
                if attr == "_options":
                    # CircuitBreaker keeps its storage among its options.
                    value = options.get("storage") if isinstance(options, Mapping) else None
                if isinstance(value, str):
                    self._add_redis(value, critical=critical)
                    break
                if value is not None and callable(getattr(value, "check", None)):
                    self.checks.append(
                        StorageCheck(
                            value,
                            layer=str(getattr(layer, "name", type(layer).__name__)),
                            timeout=self.storage_timeout,
                            critical=critical,
                        )
                    )
                    break

    @property
    def draining(self) -> bool:
        """Whether the wall (or a layer of it) stopped admitting requests."""
        wall = self._wall
        if wall is None:
            return False
        if getattr(wall, "draining", False):
            return True
        return any(
            getattr(layer, "draining", False) is True
            for layer in wall.stack.layers
            if layer is not self
        )

    # -- hooks ----------------------------------------------------------------

    def on_request(self, request: RequestView) -> Any:
        """Answer the health paths; everything else goes on."""
        kind = self._paths.get(request.path)
        if kind is None:
            return None
        self.probes += 1
        if request.method not in ("GET", "HEAD"):
            return Respond.problem(
                405, "method-not-allowed", "Method Not Allowed",
                "Health endpoints answer GET and HEAD.", headers=(("Allow", "GET, HEAD"),),
            )  # fmt: skip
        if kind == "live":
            return self._live
        self.sampler.ensure()
        now = self._clock()
        cached = self._cache
        if cached is not None and (cached[0] > now or self._refreshing):
            return self._render(kind, cached[1])
        return self._refresh(kind)

    def _refresh(self, kind: str) -> Any:
        self._refreshing = True
        try:
            results = yield RunChecks(tuple(self.checks))
        finally:
            self._refreshing = False
        self._cache = (self._clock() + self.cache_for, results)
        self.runs += 1
        status = worst(r.status for r in results)
        if status != self._last_status:
            log = logger.warning if status != "pass" else logger.info
            log(
                "seawall.health.changed",
                status=status,
                previous=self._last_status,
                failing=[r.name for r in results if r.status != "pass"],
            )
            self._last_status = status
        return self._render(kind, results)

    def _render(self, kind: str, results: list[CheckResult]) -> Respond:
        draining = self.draining
        status = worst(r.status for r in results)
        if draining:
            status = "fail"
        code = 503 if status == "fail" else 200
        if kind == "ready":
            doc: dict[str, Any] = {"status": status}
            failing = [r.name for r in results if r.status == "fail"]
            if draining:
                failing.append("draining")
            if failing:
                doc["failing"] = failing
        else:
            grouped: dict[str, list[dict[str, Any]]] = {}
            for r in results:
                grouped.setdefault(r.name, []).append(r.as_json())
            if draining:
                grouped["process:draining"] = [{"status": "fail", "output": "shutting down"}]
            doc = {"status": status, "description": "seawall health report", "checks": grouped}
        body = json.dumps(doc, separators=(",", ":"), default=str).encode()
        return Respond(code, body, _HEADERS, content_type=HEALTH_CONTENT_TYPE)

    def stats(self) -> dict[str, Any]:
        """Probe and check-run counts, and the last status of every check."""
        cached = self._cache
        return {
            "probes": self.probes,
            "runs": self.runs,
            "status": self._last_status,
            "draining": self.draining,
            "checks": {} if cached is None else {_label(r): r.status for r in cached[1]},
        }

    def reset(self) -> None:
        """Forget the cached results and counts (for tests)."""
        self._cache = None
        self.runs = 0
        self.probes = 0
        self._last_status = None
