"""LoadShedding: refuse early (503) when the process is overloaded.

Theory of operation:

1. Three signals, all read without a system call per request:
   CPU and memory percentages from a background sampler thread (started on
   the first request, see :mod:`seawall._observe.sampler`), and the number
   of requests in flight against an adaptive concurrency limit
   (:class:`~seawall._observe.adaptive.Gradient2`) learned from the
   durations ``on_complete`` reports.
2. **Priorities.** Requests to *critical* paths (login, payments: prefixes or
   ``*`` globs) may use the whole limit; the others only
   ``limit * (1 - reserved)``, so the reserved share is always there for
   critical ones. CPU and memory pressure shed only non-critical requests:
   with a probability that rises from 0 at the threshold to 1 at
   ``threshold + ramp`` percentage points, so shedding eases off smoothly
   instead of flapping between none and all.
3. **Draining.** Once the ASGI lifespan shutdown began (``wall.draining``) or
   :meth:`LoadShedding.drain` was called, every request is refused with 503
   and ``on_shutdown`` asks the driver to wait up to *drain_timeout* seconds
   for the requests in flight.
4. **Shadow mode** decides and counts as usual but lets every request through.
5. A refusal is RFC 9457 ``temporary-reduced-capacity`` with ``Retry-After``
   (:class:`~seawall.exceptions.Overloaded`). One log line when shedding
   starts and one when it stops, never one per request.

Invariants: every request admitted by ``on_request`` is counted in flight
exactly once and released exactly once in ``on_complete`` (marked in
``request.state``), so the count cannot drift.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from seawall._core.decisions import Respond
from seawall._core.layer import ORDER, Outcome
from seawall._core.request import RequestView
from seawall._log import logger
from seawall._observe.adaptive import Gradient2
from seawall._observe.sampler import Signals, default_sampler
from seawall.exceptions import ConfigurationError, Overloaded

__all__ = ["REASONS", "LoadShedding"]

#: Why a request is shed, as counted in ``stats()["shed"]``.
REASONS = ("draining", "concurrency", "cpu", "memory")
_UNLIMITED = sys.maxsize
_dumps = json.JSONEncoder(ensure_ascii=True).encode


def _percent(name: str, value: float | None) -> None:
    if value is not None and not 0 < value <= 100:
        msg = f"{name}: expected a percentage in (0, 100] or None, got {value!r}"
        raise ConfigurationError(msg)


class LoadShedding:
    """Shed load before the service falls over.

    Args:
        cpu_threshold: shed non-critical requests above this CPU busy percentage
            (``None``: ignore CPU).
        memory_threshold: the same for memory in use (container limit if any).
        ramp: percentage points above a threshold at which every non-critical
            request is shed (in between, a rising share is).
        adaptive: learn a concurrency limit from latency (Gradient2).
        max_concurrency: a fixed concurrency limit (with *adaptive*: the
            adaptive limit's ceiling). ``None`` and not adaptive: no limit.
        initial_limit: the adaptive limit before it learns anything.
        min_limit: the adaptive limit never goes below this.
        tolerance: latency up to this many times the usual counts as normal.
        window: seconds per adaptive sampling window.
        critical: path prefixes (or ``*`` globs) shed last, e.g. ``("/login", "/pay")``.
        reserved: share of the limit only critical requests may use.
        retry_after: seconds in the ``Retry-After`` of a refusal.
        shadow: decide and count, but refuse nothing.
        drain_timeout: seconds in-flight requests get on shutdown.
        signals: where CPU and memory come from (default: the process-wide
            sampler; tests pass :class:`~seawall._observe.sampler.StaticSignals`).
        clock: monotonic clock for the adaptive windows (injected in tests).
        rng: ``random.random``-like source for the CPU/memory shedding share.
    """

    name: ClassVar[str] = "shedding"
    order: ClassVar[int] = ORDER["shedding"]
    _DETAIL: ClassVar[str] = "The service is overloaded; retry later."

    def __init__(
        self,
        *,
        cpu_threshold: float | None = 90.0,
        memory_threshold: float | None = 90.0,
        ramp: float = 5.0,
        adaptive: bool = True,
        max_concurrency: int | None = None,
        initial_limit: int = 20,
        min_limit: int = 4,
        tolerance: float = 1.5,
        window: float = 1.0,
        critical: Sequence[str] = (),
        reserved: float = 0.1,
        retry_after: float = 1.0,
        shadow: bool = False,
        drain_timeout: float = 30.0,
        signals: Signals | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        _percent("cpu_threshold", cpu_threshold)
        _percent("memory_threshold", memory_threshold)
        if ramp <= 0:
            msg = f"ramp: expected percentage points > 0, got {ramp!r}"
            raise ConfigurationError(msg)
        if not 0 <= reserved < 1:
            msg = f"reserved: expected a share in [0, 1), got {reserved!r}"
            raise ConfigurationError(msg)
        if max_concurrency is not None and max_concurrency < 1:
            msg = f"max_concurrency: expected a whole number >= 1 or None, got {max_concurrency!r}"
            raise ConfigurationError(msg)
        if min_limit < 1 or initial_limit < min_limit:
            msg = f"limits: need 1 <= min_limit <= initial_limit, got {min_limit}, {initial_limit}"
            raise ConfigurationError(msg)
        if tolerance < 1 or window <= 0 or retry_after < 0 or drain_timeout < 0:
            msg = "tolerance must be >= 1, window > 0, retry_after and drain_timeout >= 0"
            raise ConfigurationError(msg)
        for pattern in critical:
            if not isinstance(pattern, str) or not pattern.startswith("/"):
                msg = f"critical: expected paths starting with '/', got {pattern!r}"
                raise ConfigurationError(msg)
        self.cpu_threshold = cpu_threshold
        self.memory_threshold = memory_threshold
        self.ramp = float(ramp)
        self.adaptive = adaptive
        self.max_concurrency = max_concurrency
        self.reserved = reserved
        self.retry_after = retry_after
        self.shadow = shadow
        self.drain_timeout = drain_timeout
        self.window = window
        self.critical = tuple(critical)
        self._prefixes = tuple(p for p in critical if "*" not in p and "?" not in p)
        self._globs = tuple(p for p in critical if p not in self._prefixes)
        self._signals: Signals = signals if signals is not None else default_sampler()
        self._clock = clock
        self._rng = rng
        self.limiter: Gradient2 | None = None
        if adaptive:
            ceiling = max_concurrency if max_concurrency is not None else 1000
            self.limiter = Gradient2(
                initial_limit=min(initial_limit, ceiling),
                min_limit=min(min_limit, ceiling),
                max_limit=ceiling,
                tolerance=tolerance,
                window=window,
            )
        self._lock = threading.Lock()
        self._ensure = True
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_fork() -> None:
                layer = ref()
                if layer is not None:
                    layer._ensure = True
                    layer._lock = threading.Lock()

            os.register_at_fork(after_in_child=after_fork)
        self._wall: Any = None
        #: Set by :meth:`drain` or ``on_shutdown``: every request is refused.
        self.draining = False
        self.in_flight = 0
        self._reset_counters()
        self._set_limit()
        self._headers = tuple(Overloaded(retry_after=retry_after).headers)
        # The refusal's body, built once per reason up to its per-request
        # members: shedding must cost less than serving, and a full
        # Respond.from_rejection() (exception, dicts, json.dumps) does not.
        self._bodies = {
            reason: Respond.from_rejection(
                Overloaded(self._DETAIL, retry_after=retry_after, extensions={"reason": reason})
            ).body[:-1]
            + b","
            for reason in REASONS
        }

    def _reset_counters(self) -> None:
        # in_flight is never reset: requests in flight still release their slot.
        self.admitted = 0
        self.shed: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.shed_critical = 0
        self.shadow_shed = 0
        self._shedding = False
        self._shed_in_window = 0
        self._last_shed = 0.0

    def _set_limit(self) -> None:
        if self.limiter is not None:
            limit = max(1, int(self.limiter.limit))
        elif self.max_concurrency is not None:
            limit = self.max_concurrency
        else:
            limit = _UNLIMITED
        self.limit = limit
        # The reserved share is kept for critical requests; a limit of 1 has none to spare.
        self._normal_limit = (
            limit if limit == _UNLIMITED else max(1, int(limit * (1.0 - self.reserved)))
        )

    def __repr__(self) -> str:
        return (
            f"LoadShedding(cpu_threshold={self.cpu_threshold}, "
            f"memory_threshold={self.memory_threshold}, adaptive={self.adaptive}, "
            f"max_concurrency={self.max_concurrency}, critical={self.critical!r}, "
            f"shadow={self.shadow})"
        )

    # -- wiring ---------------------------------------------------------------

    def bind(self, wall: Any) -> None:
        """Remember the wall, to see its ``draining`` flag."""
        self._wall = wall

    def on_startup(self) -> None:
        """The app is (re)starting: admit requests again."""
        self.draining = False

    def on_shutdown(self) -> float:
        """Stop admitting; ask the driver to wait *drain_timeout* s for requests in flight."""
        self.drain()
        return self.drain_timeout

    def drain(self) -> None:
        """Refuse every new request from now on (readiness fails too)."""
        if not self.draining:
            self.draining = True
            logger.info("seawall.shedding.draining", in_flight=self.in_flight)

    def is_critical(self, path: str) -> bool:
        """Whether *path* is one of the critical routes."""
        if path.startswith(self._prefixes):
            return True
        return any(fnmatch.fnmatchcase(path, g) for g in self._globs) if self._globs else False

    # -- hooks ----------------------------------------------------------------

    def on_request(self, request: RequestView) -> Respond | None:
        """Admit the request, or refuse it with 503 when overloaded."""
        signals = self._signals
        if self._ensure:
            # Start the sampler on the first request (and again after a fork).
            signals.ensure()
            self._ensure = False
        critical = bool(self._prefixes) and request.path.startswith(self._prefixes)
        if not critical and self._globs:
            critical = self.is_critical(request.path)
        reason = None
        wall = self._wall
        if self.draining or (wall is not None and wall.draining):
            reason = "draining"
        elif critical:
            if self.in_flight >= self.limit:
                reason = "concurrency"
        elif self.in_flight >= self._normal_limit:
            reason = "concurrency"
        else:
            cpu = signals.cpu
            threshold = self.cpu_threshold
            if (
                cpu is not None
                and threshold is not None
                and cpu > threshold
                and self._rng() < (cpu - threshold) / self.ramp
            ):
                reason = "cpu"
            if reason is None:
                memory = signals.memory
                threshold = self.memory_threshold
                if (
                    memory is not None
                    and threshold is not None
                    and memory > threshold
                    and self._rng() < (memory - threshold) / self.ramp
                ):
                    reason = "memory"
        if reason is not None:
            respond = self._refuse(request, reason, critical)
            if respond is not None:
                return respond
        if self._shedding and self._clock() - self._last_shed >= self.window:
            # Admitted a whole window after the last refusal: shedding stopped
            # (also without an adaptive limit, whose windows would tell).
            self._stopped()
        with self._lock:
            self.in_flight += 1
            inflight = self.in_flight
        self.admitted += 1
        request.state[self] = inflight
        return None

    def _refuse(self, request: RequestView, reason: str, critical: bool) -> Respond | None:
        self.shed[reason] += 1
        self._shed_in_window += 1
        self._last_shed = self._clock()
        if critical:
            self.shed_critical += 1
        if not self._shedding:
            self._shedding = True
            logger.warning(
                "seawall.shedding.started",
                reason=reason,
                limit=None if self.limit == _UNLIMITED else self.limit,
                in_flight=self.in_flight,
                cpu=self._signals.cpu,
                memory=self._signals.memory,
                shadow=self.shadow,
            )
        if self.shadow:
            self.shadow_shed += 1
            return None
        body = b"".join(
            (
                self._bodies[reason],
                b'"instance":',
                _dumps(request.path).encode(),  # client text: escaped
                b',"request_id":',
                _dumps(request.request_id).encode(),
                b"}",
            )
        )
        return Respond(503, body, self._headers)

    def on_complete(self, request: RequestView, outcome: Outcome) -> None:
        """Release the request's slot and feed its latency to the adaptive limit."""
        inflight = request.state.pop(self, None)
        if inflight is None:
            return  # not admitted by us (refused, or refused outside us)
        limiter = self.limiter
        with self._lock:
            self.in_flight -= 1
            # A layer inside us answered (rate limit, validation): the app did
            # no work, so the duration says nothing about its latency.
            if limiter is None or outcome.responded_by is not None:
                return
            if limiter.sample(outcome.duration, inflight, self._clock()):
                self._set_limit()
                self._window_closed()

    def _window_closed(self) -> None:
        if self._shedding and self._shed_in_window == 0:
            self._stopped()
        self._shed_in_window = 0

    def _stopped(self) -> None:
        self._shedding = False
        logger.info(
            "seawall.shedding.stopped",
            limit=None if self.limit == _UNLIMITED else self.limit,
            shed=sum(self.shed.values()),
        )

    # -- introspection ----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Limit, in-flight, admitted and shed counts (by reason), signals, latency."""
        limiter = self.limiter
        return {
            "limit": None if self.limit == _UNLIMITED else self.limit,
            "limit_for_normal": None if self._normal_limit == _UNLIMITED else self._normal_limit,
            "in_flight": self.in_flight,
            "admitted": self.admitted,
            "shed": dict(self.shed),
            "shed_total": sum(self.shed.values()),
            "shed_critical": self.shed_critical,
            "shadow": self.shadow,
            "shadow_shed": self.shadow_shed,
            "shedding": self._shedding,
            "draining": self.draining,
            "cpu": self._signals.cpu,
            "memory": self._signals.memory,
            "latency_ms": None
            if limiter is None
            else {
                "long": round(limiter.long_rtt * 1000.0, 3),
                "short": round(limiter.short_rtt * 1000.0, 3),
            },
        }

    def reset(self) -> None:
        """Forget counts and what the adaptive limit learned (for tests)."""
        with self._lock:
            self._reset_counters()
            if self.limiter is not None:
                self.limiter.reset()
            self._set_limit()
            self.draining = False
