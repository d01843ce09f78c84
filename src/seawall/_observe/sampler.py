"""Resource sampling off the request path: CPU, memory, disk, open files.

Theory of operation:

1. One :class:`ResourceSampler` per process (:func:`default_sampler`) reads
   psutil every *interval* seconds in a daemon thread. The thread starts
   lazily, on the first :meth:`ResourceSampler.ensure` (a layer calls it on
   its first request), never at import or construction: a thread started
   before a pre-forking server forks would not exist in the workers.
2. After a fork the child forgets the parent's thread and starts its own on
   the next ``ensure()``.
3. Request hooks only read the floats :attr:`ResourceSampler.cpu` and
   :attr:`ResourceSampler.memory`: no system call per request.
4. Besides the recent samples, one sample per *trend_every* seconds is kept
   (bounded) for trend checks (disk full in N hours, memory growing).

Memory is the container's when a cgroup v2 limit applies (``memory.max``),
else the machine's, since a container is killed at its own limit long before
the host runs out.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "ResourceSampler",
    "Sample",
    "Signals",
    "StaticSignals",
    "default_sampler",
    "take_sample",
]

_CGROUP = "/sys/fs/cgroup"


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the process's resources.

    Attributes:
        time: ``time.monotonic()`` of the reading.
        cpu: busy share of all CPUs since the previous reading, percent.
        memory: memory in use, percent of the limit (cgroup or machine).
        memory_used: bytes in use (cgroup or machine).
        memory_limit: the limit those bytes count against.
        rss: this process's resident set size in bytes.
        disk_used: bytes used on the sampled disk.
        disk_total: that disk's size in bytes.
        open_files: file descriptors this process holds.
        open_files_limit: its soft ``RLIMIT_NOFILE``.
    """

    time: float
    cpu: float | None = None
    memory: float | None = None
    memory_used: int | None = None
    memory_limit: int | None = None
    rss: int | None = None
    disk_used: int | None = None
    disk_total: int | None = None
    open_files: int | None = None
    open_files_limit: int | None = None


@runtime_checkable
class Signals(Protocol):
    """What load shedding reads per request: the latest CPU and memory percentages."""

    cpu: float | None
    memory: float | None

    def ensure(self) -> None:
        """Make sure readings keep coming (start a sampler thread if needed)."""


class StaticSignals:
    """Signals set by hand: for tests, or to feed shedding from your own monitor.

    Example::

        signals = StaticSignals(cpu=20.0)
        shedding = LoadShedding(signals=signals)
        signals.cpu = 97.0          # the next request sees an overloaded CPU
    """

    def __init__(self, cpu: float | None = None, memory: float | None = None) -> None:
        self.cpu = cpu
        self.memory = memory

    def ensure(self) -> None:
        """Nothing to start."""

    def __repr__(self) -> str:
        return f"StaticSignals(cpu={self.cpu!r}, memory={self.memory!r})"


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_memory() -> tuple[int, int] | None:
    limit = _read_int(f"{_CGROUP}/memory.max")
    used = _read_int(f"{_CGROUP}/memory.current")
    if limit is None or used is None or limit <= 0:
        return None  # "max" (no limit) or cgroup v1: use the machine's figures
    return used, limit


class _CpuMeter:
    """Busy share of all CPUs between two readings, without psutil's global state."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def read(self) -> float | None:
        import psutil

        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        total = sum(times)
        last, self._last = self._last, (idle, total)
        if last is None:
            return None
        d_total = total - last[1]
        if d_total <= 0:
            return None
        return max(0.0, min(100.0, 100.0 * (1.0 - (idle - last[0]) / d_total)))


def take_sample(
    disk_path: str = "/", cpu: _CpuMeter | None = None, clock: Callable[[], float] = time.monotonic
) -> Sample:
    """Read every resource once (system calls: call it off the request path)."""
    import psutil

    cgroup = _cgroup_memory()
    if cgroup is not None:
        used, limit = cgroup
    else:
        vm = psutil.virtual_memory()
        used, limit = vm.total - vm.available, vm.total
    process = psutil.Process()
    try:
        rss = process.memory_info().rss
    except psutil.Error:
        rss = None
    try:
        fds: int | None = process.num_fds()
    except (psutil.Error, AttributeError):  # AttributeError: Windows has no num_fds
        fds = None
    try:
        import resource

        fd_limit: int | None = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit is not None and fd_limit < 0:
            fd_limit = None  # RLIM_INFINITY
    except (ImportError, OSError, ValueError):
        fd_limit = None
    try:
        disk = psutil.disk_usage(disk_path)
        disk_used: int | None = disk.used
        disk_total: int | None = disk.total
    except OSError:
        disk_used = disk_total = None
    return Sample(
        time=clock(),
        cpu=cpu.read() if cpu is not None else None,
        memory=100.0 * used / limit if limit else None,
        memory_used=used,
        memory_limit=limit,
        rss=rss,
        disk_used=disk_used,
        disk_total=disk_total,
        open_files=fds,
        open_files_limit=fd_limit,
    )


class ResourceSampler:
    """Read the process's resources every *interval* seconds in a daemon thread.

    Args:
        interval: seconds between readings.
        trend_every: keep one reading per this many seconds for trend checks.
        trend_size: how many trend readings to keep (default: 2 hours' worth).
        recent_size: how many recent readings to keep.
        disk_path: the filesystem whose usage is read.
    """

    def __init__(
        self,
        *,
        interval: float = 1.0,
        trend_every: float = 30.0,
        trend_size: int = 240,
        recent_size: int = 120,
        disk_path: str = "/",
    ) -> None:
        self.interval = interval
        self.trend_every = trend_every
        self.disk_path = disk_path
        #: Latest CPU busy percentage (``None`` until two readings exist).
        self.cpu: float | None = None
        #: Latest memory-in-use percentage.
        self.memory: float | None = None
        self.latest: Sample | None = None
        self.recent: deque[Sample] = deque(maxlen=recent_size)
        self.trend: deque[Sample] = deque(maxlen=trend_size)
        self.errors = 0
        self._cpu = _CpuMeter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def forget_thread() -> None:
                sampler = ref()
                if sampler is not None:
                    sampler._thread = None
                    sampler._stop = threading.Event()
                    sampler._lock = threading.Lock()

            os.register_at_fork(after_in_child=forget_thread)

    def __repr__(self) -> str:
        running = self._thread is not None and self._thread.is_alive()
        return f"ResourceSampler(interval={self.interval}, running={running})"

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive in this process."""
        return self._thread is not None and self._thread.is_alive()

    def ensure(self) -> None:
        """Start the sampling thread if this process has none (cheap when it has)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            thread = threading.Thread(target=self._loop, name="seawall-sampler", daemon=True)
            self._thread = thread
            thread.start()

    def stop(self) -> None:
        """Stop the sampling thread (it may be started again with :meth:`ensure`)."""
        thread = self._thread
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self._thread = None

    def _loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                self.sample_now()
            except Exception:  # a failed reading must not kill the thread
                self.errors += 1
            stop.wait(self.interval)

    def sample_now(self) -> Sample:
        """Take one reading now, record it and return it."""
        sample = take_sample(self.disk_path, self._cpu)
        self.record(sample)
        return sample

    def record(self, sample: Sample) -> None:
        """Record a reading (the thread's, or one a test made up)."""
        if sample.cpu is not None:
            self.cpu = sample.cpu
        if sample.memory is not None:
            self.memory = sample.memory
        self.latest = sample
        self.recent.append(sample)
        last = self.trend[-1] if self.trend else None
        if last is None or sample.time - last.time >= self.trend_every:
            self.trend.append(sample)


_DEFAULT: ResourceSampler | None = None
_DEFAULT_LOCK = threading.Lock()


def default_sampler() -> ResourceSampler:
    """The process-wide sampler shared by Health and LoadShedding (not started yet)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = ResourceSampler()
    return _DEFAULT
