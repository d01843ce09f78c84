"""The breaker engine: pybreaker's interface, resilience4j's state machine.

Theory of operation:

1. :class:`Breaker` subclasses :class:`pybreaker.CircuitBreaker`, so code
   written for pybreaker keeps working: ``call``, ``calling()``, the
   decorator, ``current_state``, ``fail_counter``, ``open()``/``close()``/
   ``half_open()``, :class:`pybreaker.CircuitBreakerListener` listeners
   (their ``state_change`` receives pybreaker's own state objects) and
   excluded exceptions (types or predicates, through pybreaker's
   ``is_system_error``). The rejection it raises, :class:`CircuitBreakerOpen`,
   is both a :class:`seawall.CircuitOpen` and a
   :class:`pybreaker.CircuitBreakerError`.
2. The state machine is our own, because pybreaker's cannot express what is
   needed: its states count consecutive failures only, let every concurrent
   caller through when half-open, hold an ``RLock`` across the guarded call
   (serialising every call, pybreaker #3), use wall-clock ``datetime``
   (no injected clock) and have an async path on Tornado only.
3. A call takes a *permit* (:meth:`Breaker.acquire`) and gives it back with
   its outcome (:meth:`Breaker.record`). A permit is the *epoch* it was
   issued in: each transition starts a new epoch, so an outcome that arrives
   after a transition (a call admitted while closed that ends after the
   breaker opened) is recognised and dropped, never counted twice.
4. Invariants: the lock is never held across the guarded call, a listener or
   a log call; in HALF_OPEN at most ``permitted_calls_in_half_open`` permits
   are out at once per epoch; OPEN is only left for HALF_OPEN (by time) or by
   a manual ``close()``/``reset()``; the window is cleared on every
   transition.
5. Reading CLOSED takes no lock (one attribute read: ``_closed_epoch``), so
   the closed-state cost of a call is a clock read when needed and one short
   locked update; an untimed success into a full window of successes (a
   healthy service) changes nothing and takes no lock at all. The epoch
   says so itself (``quiet``, kept under the lock), so that case is one
   attribute read too. Safe without the lock: under the GIL an attribute
   read or write is atomic, and a reader that sees ``quiet`` (or
   ``_closed_epoch``) just before a locked writer changes it is simply
   ordered before that writer, when its success changed nothing (or its
   permit was current).
6. With a Redis ``storage`` (:mod:`seawall._breaker.shared`), the permit and
   the outcome go through Lua scripts instead and the state is shared by
   every process; if Redis fails the breaker goes on with this local engine
   and says so once in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import pybreaker

from seawall._breaker.window import FAILED, SLOW, CountWindow, TimeWindow
from seawall._log import logger
from seawall.exceptions import CircuitOpen, ConfigurationError, Rejected, StorageError

if TYPE_CHECKING:
    from seawall._breaker.shared import RedisBreakerStore, SharedPermit

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Breaker",
    "BreakerConfig",
    "CircuitBreakerOpen",
]

P = ParamSpec("P")
T = TypeVar("T")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN

_STORAGE_SCHEMES = ("memory://", "redis://", "rediss://", "unix://")

#: Retry-After given while half-open and every probe permit is out.
HALF_OPEN_RETRY_AFTER = 1.0

_EVENTS = {OPEN: "seawall.breaker.opened", HALF_OPEN: "seawall.breaker.half_open",
           CLOSED: "seawall.breaker.closed"}  # fmt: skip


class CircuitBreakerOpen(CircuitOpen, pybreaker.CircuitBreakerError):
    """Raised when a breaker refuses a call: a :class:`~seawall.CircuitOpen` (503).

    Also a :class:`pybreaker.CircuitBreakerError`, so ``except`` clauses
    written for pybreaker still catch it.
    """


def _seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        msg = f"{what}: expected a duration >= 0 seconds, got {value!r}"
        raise ConfigurationError(msg)
    return seconds


def _rate(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    rate = float(value)
    # resilience4j takes percentages (50); a fraction (0.5) reads better in Python.
    if 1.0 < rate <= 100.0:
        rate /= 100.0
    if not 0.0 < rate <= 1.0:
        msg = f"{what}: expected a fraction in (0, 1] or a percentage in (1, 100], got {value!r}"
        raise ConfigurationError(msg)
    return rate


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The validated settings of a breaker (see :class:`Breaker` for their meaning)."""

    failure_rate_threshold: float | None = 0.5
    slow_call_rate_threshold: float | None = None
    slow_call_duration: float = 60.0
    sliding_window_type: Literal["count", "time"] = "count"
    sliding_window_size: int = 100
    minimum_number_of_calls: int = 20
    permitted_calls_in_half_open: int = 1
    wait_in_open: float = 30.0
    fail_max: int | None = None
    max_wait_in_half_open: float | None = None

    @classmethod
    def build(
        cls,
        *,
        fail_max: int | None = None,
        failure_rate_threshold: float | None = None,
        slow_call_rate_threshold: float | None = None,
        slow_call_duration: float | timedelta = 60.0,
        sliding_window_type: str = "count",
        sliding_window_size: int = 100,
        minimum_number_of_calls: int = 20,
        permitted_calls_in_half_open: int = 1,
        wait_in_open: float | timedelta = 30.0,
        max_wait_in_half_open: float | timedelta | None = None,
    ) -> BreakerConfig:
        """Validate the keyword settings; raise :class:`ConfigurationError` naming the key."""
        if sliding_window_type not in ("count", "time"):
            msg = f"sliding_window_type: expected 'count' or 'time', got {sliding_window_type!r}"
            raise ConfigurationError(msg)
        for key, value in (
            ("sliding_window_size", sliding_window_size),
            ("minimum_number_of_calls", minimum_number_of_calls),
            ("permitted_calls_in_half_open", permitted_calls_in_half_open),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{key}: expected a whole number >= 1, got {value!r}"
                raise ConfigurationError(msg)
        if fail_max is not None and (
            isinstance(fail_max, bool) or not isinstance(fail_max, int) or fail_max < 1
        ):
            msg = f"fail_max: expected a whole number >= 1 or None, got {fail_max!r}"
            raise ConfigurationError(msg)
        failure = _rate(failure_rate_threshold, "failure_rate_threshold")
        slow = _rate(slow_call_rate_threshold, "slow_call_rate_threshold")
        if failure is None and slow is None and fail_max is None:
            failure = 0.5  # resilience4j's default
        wait = _seconds(wait_in_open, "wait_in_open")
        max_half = (
            None
            if max_wait_in_half_open is None
            else _seconds(max_wait_in_half_open, "max_wait_in_half_open")
        )
        return cls(
            failure_rate_threshold=failure,
            slow_call_rate_threshold=slow,
            slow_call_duration=_seconds(slow_call_duration, "slow_call_duration"),
            sliding_window_type="time" if sliding_window_type == "time" else "count",
            sliding_window_size=sliding_window_size,
            minimum_number_of_calls=minimum_number_of_calls,
            permitted_calls_in_half_open=permitted_calls_in_half_open,
            wait_in_open=wait,
            fail_max=fail_max,
            max_wait_in_half_open=max_half,
        )

    @property
    def probe_timeout(self) -> float:
        """Seconds after which unanswered half-open probes are re-issued."""
        if self.max_wait_in_half_open is not None:
            return self.max_wait_in_half_open
        return max(self.wait_in_open, self.slow_call_duration if self.slow_enabled else 0.0, 1.0)

    @property
    def slow_enabled(self) -> bool:
        """Whether calls are timed (a slow-call threshold is set)."""
        return self.slow_call_rate_threshold is not None

    def trip_reason(
        self, calls: int, failures: int, slow: int, consecutive: int
    ) -> tuple[str, float] | None:
        """Why a CLOSED breaker with these window figures must open, or ``None``."""
        if self.fail_max is not None and consecutive >= self.fail_max:
            return "consecutive_failures", float(consecutive)
        minimum = self.minimum_number_of_calls
        if self.sliding_window_type == "count":
            # resilience4j: a count window smaller than the minimum decides when full.
            minimum = min(minimum, self.sliding_window_size)
        if calls < minimum or calls == 0:
            return None
        if self.failure_rate_threshold is not None:
            rate = failures / calls
            if rate >= self.failure_rate_threshold:
                return "failure_rate", rate
        if self.slow_call_rate_threshold is not None:
            rate = slow / calls
            if rate >= self.slow_call_rate_threshold:
                return "slow_call_rate", rate
        return None

    def half_open_verdict(self, done: int, failures: int, slow: int) -> str | None:
        """``OPEN``, ``CLOSED`` or ``None`` (wait for more probes) in HALF_OPEN.

        The rates are taken over all permitted probes, as resilience4j does;
        deciding "open" as soon as the failures alone reach the threshold
        gives the same verdict sooner (the rate can only grow).
        """
        permitted = self.permitted_calls_in_half_open
        if failures and (self.fail_max is not None or self.failure_rate_threshold is None):
            return OPEN  # the consecutive form: any failed probe reopens (pybreaker)
        if (
            self.failure_rate_threshold is not None
            and failures / permitted >= self.failure_rate_threshold
        ):
            return OPEN
        if self.slow_call_rate_threshold is not None and slow / permitted >= (
            self.slow_call_rate_threshold
        ):
            return OPEN
        if done >= permitted:
            return CLOSED
        return None


class _Epoch:
    """One stay in a state; also the permit a call holds (theory point 3).

    *owner* is the breaker it belongs to, so a holder (the layer) can keep
    the permit alone rather than a (breaker, permit) pair per request.
    *quiet*: an untimed success on this permit changes nothing but the
    counters (the epoch is current, CLOSED, and its count window is full of
    successes). Set and cleared under the breaker's lock, read without it.
    """

    __slots__ = ("done", "failures", "owner", "probes", "quiet", "slow", "started", "state")

    def __init__(self, state: str, started: float, owner: Breaker) -> None:
        self.state = state
        self.owner = owner
        self.quiet = False
        self.started = started
        self.probes = 0
        self.done = 0
        self.failures = 0
        self.slow = 0


Permit = Any  # an _Epoch (local) or a SharedPermit (Redis)
Change = tuple[str, str, str, dict[str, Any]]  # old, new, reason, figures


class Breaker(pybreaker.CircuitBreaker):
    """A circuit breaker with resilience4j semantics and pybreaker's interface.

    Args:
        name: the breaker's name (logs, stats, the shared Redis keys, the registry).
        fail_max: open after this many consecutive failures (pybreaker's
            simple form); ``None``: off.
        failure_rate_threshold: open when at least this fraction of the calls
            in the window failed (``0.5`` or ``50``). Default ``0.5`` when no
            threshold at all is given.
        slow_call_rate_threshold: open when at least this fraction of the calls
            took *slow_call_duration* or longer; ``None``: off.
        slow_call_duration: seconds from which a call counts as slow.
        sliding_window_type: ``"count"`` (the last *sliding_window_size* calls)
            or ``"time"`` (the last *sliding_window_size* seconds).
        sliding_window_size: calls or seconds, per *sliding_window_type*.
        minimum_number_of_calls: no rate is judged before this many calls are
            in the window.
        permitted_calls_in_half_open: probes let through when half-open; the
            rest fail fast until they answer.
        wait_in_open: seconds to stay open before probing.
        max_wait_in_half_open: seconds after which probes that never answered
            (a cancelled call) are given out again; default: *wait_in_open*.
        exclude: exception types or predicates that are not failures
            (pybreaker's exclusions); :class:`~seawall.Rejected` always is not.
        listeners: :class:`pybreaker.CircuitBreakerListener` objects.
        storage: ``None``/``"memory://"`` (this process) or a Redis URI to share
            state, windows and probe permits with every worker.
        key_prefix: namespace of the Redis keys.
        storage_timeout: seconds a Redis call may take before the breaker falls
            back to its local state.
        clock: monotonic clock in seconds (``ManualClock`` in tests).
    """

    def __init__(
        self,
        name: str = "default",
        *,
        fail_max: int | None = None,
        failure_rate_threshold: float | None = None,
        slow_call_rate_threshold: float | None = None,
        slow_call_duration: float | timedelta = 60.0,
        sliding_window_type: str = "count",
        sliding_window_size: int = 100,
        minimum_number_of_calls: int = 20,
        permitted_calls_in_half_open: int = 1,
        wait_in_open: float | timedelta = 30.0,
        max_wait_in_half_open: float | timedelta | None = None,
        exclude: Iterable[type[BaseException] | Callable[[Any], bool]] = (),
        listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
        storage: str | None = None,
        key_prefix: str = "seawall",
        storage_timeout: float = 0.05,
        clock: Callable[[], float] | None = None,
    ) -> None:
        config = BreakerConfig.build(
            fail_max=fail_max,
            failure_rate_threshold=failure_rate_threshold,
            slow_call_rate_threshold=slow_call_rate_threshold,
            slow_call_duration=slow_call_duration,
            sliding_window_type=sliding_window_type,
            sliding_window_size=sliding_window_size,
            minimum_number_of_calls=minimum_number_of_calls,
            permitted_calls_in_half_open=permitted_calls_in_half_open,
            wait_in_open=wait_in_open,
            max_wait_in_half_open=max_wait_in_half_open,
        )
        # pybreaker's __init__ reads current_state: our state must exist first.
        self.config = config
        self._clock = clock or time.monotonic
        self._store: RedisBreakerStore | None = None
        self._epoch = _Epoch(CLOSED, self._clock(), self)
        # The current epoch while CLOSED with no shared store, else None: the
        # lock-free admission is then one read (set with _epoch, see _transition).
        self._closed_epoch: _Epoch | None = self._epoch
        self._opened_at = 0.0
        self._consecutive = 0
        super().__init__(
            fail_max=fail_max or 0,
            reset_timeout=config.wait_in_open,
            success_threshold=config.permitted_calls_in_half_open,
            exclude=[Rejected, *exclude],
            listeners=list(listeners),
            name=name,
        )
        self._needs_time = config.slow_enabled or config.sliding_window_type == "time"
        self._minimum = min(config.minimum_number_of_calls, config.sliding_window_size)
        # Calls this long are slow (infinite when no slow-call threshold is set).
        self._slow_after = config.slow_call_duration if config.slow_enabled else float("inf")
        self._mlock = threading.Lock()
        self._window: CountWindow | TimeWindow = (
            TimeWindow(config.sliding_window_size)
            if config.sliding_window_type == "time"
            else CountWindow(config.sliding_window_size)
        )
        # The count window, for the inline success path (None for a time window).
        self._count_window = self._window if isinstance(self._window, CountWindow) else None
        # Whether an epoch may be quiet: a timed call moves a time window or
        # may be slow, so only untimed calls into a count window can be no-ops.
        self._settles = not self._needs_time and self._count_window is not None
        self._state_objs: dict[str, Any] = {
            CLOSED: pybreaker.CircuitClosedState(self),
            OPEN: pybreaker.CircuitOpenState(self),
            HALF_OPEN: pybreaker.CircuitHalfOpenState(self, None),
        }
        if storage is not None and not storage.startswith(_STORAGE_SCHEMES):
            scheme = storage.split("://", 1)[0]  # never the whole URI: it may hold a password
            msg = f"storage: expected None, 'memory://' or a Redis URI, got {scheme!r}"
            raise ConfigurationError(msg)
        if storage is not None and not storage.startswith("memory://"):
            from seawall._breaker.shared import RedisBreakerStore
            from seawall._wire import require_redis

            require_redis("storage")
            self._store = RedisBreakerStore(
                storage,
                name=name,
                key_prefix=key_prefix,
                config=config,
                timeout=storage_timeout,
                # A shared breaker compares times across processes: use the
                # injected clock if any (tests), else Redis's own TIME.
                clock=clock,
            )
            self._closed_epoch = None  # Redis decides every permit while it answers
        self.storage = storage or "memory://"
        self._zero_stats()

    def _zero_stats(self) -> None:
        self.successes = 0
        self.failures = 0
        self.slow_calls = 0
        self.ignored = 0
        self.rejected = 0
        self.stale = 0
        self.transitions = {"opened": 0, "half_open": 0, "closed": 0}

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Breaker({self.name!r}, state={self.current_state!r}, "
            f"failure_rate_threshold={c.failure_rate_threshold}, fail_max={c.fail_max}, "
            f"sliding_window={c.sliding_window_size} {c.sliding_window_type}, "
            f"wait_in_open={c.wait_in_open}, storage={self.storage!r})"
        )

    @property
    def calls(self) -> int:
        """Outcomes given back: successes, failures and ignored calls (not refusals)."""
        # A sum rather than a counter of its own: one increment less per call.
        return self.successes + self.failures + self.ignored

    @property
    def shared(self) -> RedisBreakerStore | None:
        """The Redis store when the state is shared, else ``None``."""
        return self._store

    # -- pybreaker's interface ----------------------------------------------------

    @property
    def current_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (pybreaker's names).

        With a shared store, the state this process last saw in Redis; an
        OPEN whose wait has elapsed reads as HALF_OPEN there too.
        """
        store = self._store
        if store is not None and store.available():
            return store.observed_state
        state = self._epoch.state
        if state == OPEN and self._clock() >= self._opened_at + self.config.wait_in_open:
            return HALF_OPEN  # the next call will probe
        return state

    @property  # type: ignore[misc]
    def state(self) -> Any:
        """The pybreaker state object of :attr:`current_state` (read-only here)."""
        return self._state_objs[self.current_state]

    @property
    def fail_counter(self) -> int:
        """Consecutive failures while closed."""
        return self._consecutive

    @property
    def success_counter(self) -> int:
        """Successful probes in the current half-open state."""
        epoch = self._epoch
        return epoch.done - epoch.failures if epoch.state == HALF_OPEN else 0

    def open(self) -> bool:
        """Open the breaker now (it probes again after ``wait_in_open``)."""
        self._manual(OPEN)
        return True

    def half_open(self) -> None:
        """Move to half-open now: the next permitted calls probe."""
        self._manual(HALF_OPEN)

    def close(self) -> None:
        """Close the breaker now and forget the window."""
        self._manual(CLOSED)

    def reset(self) -> None:
        """Close the breaker, forget the window and zero the statistics."""
        self._manual(CLOSED)
        self._zero_stats()

    def _manual(self, state: str) -> None:
        now = self._clock()
        with self._mlock:
            change = self._transition(state, now, "manual")
        self._emit(change)
        if self._store is not None:
            self._store.set_state_background(state)

    # -- the state machine (local) ------------------------------------------------

    def _transition(self, to: str, now: float, reason: str, **figures: Any) -> Change:
        """Enter *to* (caller holds the lock); return what :meth:`_emit` reports."""
        old_epoch = self._epoch
        old = old_epoch.state
        old_epoch.quiet = False  # its outcomes are stale from now on
        epoch = self._epoch = _Epoch(to, now, self)
        self._closed_epoch = epoch if to == CLOSED and self._store is None else None
        if to == OPEN:
            self._opened_at = now
        if to != HALF_OPEN:
            self._window.clear()
            self._consecutive = 0
        return old, to, reason, figures

    def _emit(self, change: Change | None) -> None:
        """Log, count and tell listeners about a transition (never under the lock)."""
        if change is None:
            return
        old, new, reason, figures = change
        self.transitions[{OPEN: "opened", HALF_OPEN: "half_open", CLOSED: "closed"}[new]] += 1
        log = logger.warning if new == OPEN else logger.info
        extra = {"wait_in_open": self.config.wait_in_open} if new == OPEN else {}
        log(_EVENTS[new], breaker=self.name, previous=old, reason=reason, **figures, **extra)
        listeners = self._listeners
        if listeners:
            old_obj, new_obj = self._state_objs[old], self._state_objs[new]
            for listener in tuple(listeners):
                try:
                    listener.state_change(self, old_obj, new_obj)
                except Exception as exc:
                    # A listener's bug must not break the calls it observes.
                    logger.error(
                        "seawall.breaker.listener_failed",
                        breaker=self.name,
                        listener=type(listener).__name__,
                        exc_info=exc,
                    )

    def acquire_local(self) -> Permit | float:
        """Take a permit from the local state; a float is a refusal's Retry-After."""
        epoch = self._epoch
        if epoch.state is CLOSED:
            return epoch  # lock-free: theory point 5 (also with a store that is down)
        now = self._clock()
        change = None
        with self._mlock:
            epoch = self._epoch
            if epoch.state == OPEN:
                left = self._opened_at + self.config.wait_in_open - now
                if left > 0:
                    return left
                change = self._transition(HALF_OPEN, now, "wait_elapsed")
                epoch = self._epoch
            elif epoch.state == HALF_OPEN and now - epoch.started >= self.config.probe_timeout:
                # Probes that never answered (cancelled, or their result was
                # lost): give the permits out again rather than stay stuck.
                epoch = self._epoch = _Epoch(HALF_OPEN, now, self)
            if epoch.state == HALF_OPEN:
                if epoch.probes >= self.config.permitted_calls_in_half_open:
                    result: Permit | float = HALF_OPEN_RETRY_AFTER
                else:
                    epoch.probes += 1
                    result = epoch
            else:
                result = epoch
        self._emit(change)
        return result

    def record_local(
        self,
        permit: Permit,
        failed: bool | None,
        duration: float | None,
        now: float | None = None,
    ) -> None:
        """Give back a local permit with its outcome (``failed=None``: not counted)."""
        config = self.config
        slow = duration is not None and duration >= self._slow_after
        if now is None:
            now = self._clock() if self._needs_time else 0.0
        change = None
        with self._mlock:
            if permit is not self._epoch:
                self.stale += 1  # issued before a transition: theory point 3
                return
            if permit.state == HALF_OPEN:
                if failed is None:
                    permit.probes -= 1  # the probe told us nothing: let another one go
                    return
                permit.done += 1
                permit.failures += failed
                permit.slow += slow
                verdict = config.half_open_verdict(permit.done, permit.failures, permit.slow)
                if verdict is not None:
                    change = self._transition(
                        verdict,
                        now or self._clock(),
                        "probe_failed" if verdict == OPEN else "probes_succeeded",
                        probes=permit.done,
                        probe_failures=permit.failures,
                    )
            elif permit.state == CLOSED and failed is not None:
                window = self._window
                window.record((FAILED if failed else 0) | (SLOW if slow else 0), now)
                self._consecutive = self._consecutive + 1 if failed else 0
                # record() brought the window up to *now*: its totals are current.
                calls, failures, slow_n = window.calls, window.failures, window.slow
                permit.quiet = (
                    self._settles and failures == 0 and slow_n == 0 and calls == window.size
                )
                trip = config.trip_reason(calls, failures, slow_n, self._consecutive)
                if trip is not None:
                    change = self._transition(
                        OPEN,
                        now or self._clock(),
                        trip[0],
                        value=round(trip[1], 4),
                        calls=calls,
                        failures=failures,
                        slow_calls=slow_n,
                    )
        if change is not None:
            self._emit(change)

    # -- permits, local or shared ---------------------------------------------------

    def acquire(self) -> Permit | float:
        """Take a permit (sync; may call Redis); a float is a refusal's Retry-After."""
        store = self._store
        if store is not None and store.available():
            try:
                return self._shared_result(store.acquire_sync())
            except StorageError:
                pass  # the store logged it once; go on with the local state
        return self.acquire_local()

    async def aacquire(self) -> Permit | float:
        """Take a permit on the event loop (async Redis); see :meth:`acquire`."""
        store = self._store
        if store is not None and store.available():
            try:
                return self._shared_result(await store.acquire_async())
            except StorageError:
                pass
        return self.acquire_local()

    def _shared_result(self, answer: tuple[SharedPermit | float, Change | None]) -> Permit | float:
        permit, change = answer
        self._emit(change)
        if not isinstance(permit, float):
            permit.owner = self  # so a holder can keep the permit alone, as a local one
        return permit

    def record(
        self,
        permit: Permit,
        failed: bool | None,
        duration: float | None = None,
        *,
        exc: BaseException | None = None,
    ) -> None:
        """Give back *permit* with its outcome (sync); count it.

        *exc* is the exception the call raised, if any: pybreaker listeners'
        ``failure(cb, exc)`` receive it (``None`` for a failure without one,
        such as a 5xx response or a deadline overrun).
        """
        self._count(failed, duration, exc)
        self._give_back(permit, failed, duration)

    def _give_back(self, permit: Permit, failed: bool | None, duration: float | None) -> None:
        if type(permit) is _Epoch:
            self.record_local(permit, failed, duration)
        elif self._store is not None and self._store.available():
            # While the store is down a shared permit's outcome is dropped
            # rather than paying a timeout for it (the store logged the outage).
            with contextlib.suppress(StorageError):
                self._emit(self._store.record_sync(permit, failed, self._is_slow(duration)))

    async def arecord(
        self,
        permit: Permit,
        failed: bool | None,
        duration: float | None = None,
        *,
        exc: BaseException | None = None,
    ) -> None:
        """Give back *permit* with its outcome on the event loop; count it (see :meth:`record`)."""
        self._count(failed, duration, exc)
        if type(permit) is _Epoch:
            self.record_local(permit, failed, duration)
        elif self._store is not None and self._store.available():
            with contextlib.suppress(StorageError):
                change = await self._store.record_async(permit, failed, self._is_slow(duration))
                self._emit(change)

    def record_background(
        self,
        permit: Permit,
        failed: bool | None,
        duration: float | None = None,
        *,
        counted: bool = False,
        exc: BaseException | None = None,
    ) -> None:
        """Give back *permit* without waiting: on the event loop, Redis runs in a task."""
        if not counted:
            self._count(failed, duration, exc)
        if type(permit) is _Epoch or self._store is None or not self._store.available():
            self._give_back(permit, failed, duration)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._give_back(permit, failed, duration)  # a WSGI thread: the response is done
            return
        self._store.spawn(loop, self._record_task(permit, failed, self._is_slow(duration)))

    async def _record_task(self, permit: Any, failed: bool | None, slow: bool) -> None:
        store = self._store
        assert store is not None
        with contextlib.suppress(StorageError):
            self._emit(await store.record_async(permit, failed, slow))

    def _is_slow(self, duration: float | None) -> bool:
        return duration is not None and duration >= self._slow_after

    def _count(
        self, failed: bool | None, duration: float | None, exc: BaseException | None = None
    ) -> None:
        # Plain increments under the GIL: a rare lost count under heavy
        # thread contention is cheaper than a lock per call.
        if failed is None:
            self.ignored += 1
        elif failed:
            self.failures += 1
        else:
            self.successes += 1
        if duration is not None and duration >= self._slow_after:
            self.slow_calls += 1
        if self._listeners and failed is not None:
            self._tell(failed, exc)

    def _tell(self, failed: bool, exc: BaseException | None) -> None:
        """Tell pybreaker listeners of one outcome: ``failure(cb, exc)`` or ``success(cb)``."""
        for listener in tuple(self._listeners):
            try:
                if failed:
                    listener.failure(self, exc)  # type: ignore[arg-type]
                else:
                    listener.success(self)
            except Exception as error:
                logger.error(
                    "seawall.breaker.listener_failed",
                    breaker=self.name,
                    listener=type(listener).__name__,
                    exc_info=error,
                )

    def _before(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        """Call the listeners' ``before_call(cb, func, *args, **kwargs)`` (as pybreaker does)."""
        for listener in tuple(self._listeners):
            try:
                listener.before_call(self, func, *args, **kwargs)
            except Exception as error:
                logger.error(
                    "seawall.breaker.listener_failed",
                    breaker=self.name,
                    listener=type(listener).__name__,
                    exc_info=error,
                )

    def refusal(self, retry_after: float) -> CircuitBreakerOpen:
        """The exception for a refused call (counts it)."""
        self.rejected += 1
        return CircuitBreakerOpen(
            "The service is temporarily unavailable; retry later.",
            retry_after=retry_after,
            breaker=self.name,
        )

    def failure_of(self, exc: BaseException) -> bool | None:
        """``True`` if *exc* is a failure, ``None`` if it is not counted at all.

        Excluded exceptions (pybreaker's exclusions, :class:`~seawall.Rejected`)
        and cancellations (``BaseException``) are not counted, as resilience4j
        ignores its ``ignoreExceptions``; pybreaker counted them as successes.
        """
        if isinstance(exc, Exception) and self.is_system_error(exc):
            return True
        return None

    # -- guarding calls -----------------------------------------------------------

    def _succeeded(self, permit: Permit) -> None:
        """Record an untimed success: the closed-state fast path of :meth:`call`."""
        self.successes += 1
        if self._listeners:
            self._tell(False, None)
        # The healthy steady state, without the lock (which costs more than
        # the rest of a call): a full window of successes is left as it is by
        # one more success, since every slot holds the same code and the
        # cursor's place among them makes no difference to any later outcome
        # (and no failures in a full window means _consecutive is already 0).
        # One read of a flag the lock holders keep: a transition or a record
        # racing with it is simply ordered after this success.
        if permit.quiet:
            return
        window = self._count_window
        if type(permit) is not _Epoch or permit.state is not CLOSED or window is None:
            self._give_back(permit, False, None)
            return
        # Explicit acquire/release: a ``with`` block costs twice as much.
        lock = self._mlock
        lock.acquire()
        try:
            if permit is not self._epoch:
                self.stale += 1
                return
            self._consecutive = 0
            # Untimed means a count window. A success replacing a success only
            # moves the ring's cursor: the common case, kept inline.
            pos = window._pos
            if window._ring[pos] == 0:
                window._pos = pos + 1 if pos + 1 < window.size else 0
                return
            window.record(0, 0.0)
            permit.quiet = (
                self._settles
                and window.failures == 0
                and window.slow == 0
                and window.calls == window.size
            )
            # A success can only trip the breaker when it brings the window to
            # the minimum number of calls (4 failures + this success = 80%).
            if window.calls != self._minimum:
                return
            trip = self.config.trip_reason(window.calls, window.failures, window.slow, 0)
            if trip is None:
                return
            change = self._transition(
                OPEN,
                self._clock(),
                trip[0],
                value=round(trip[1], 4),
                calls=window.calls,
                failures=window.failures,
                slow_calls=window.slow,
            )
        finally:
            lock.release()
        self._emit(change)

    def _permit(self) -> Permit | float:
        permit = self._closed_epoch
        if permit is not None:
            return permit  # lock-free: theory point 5
        if self._store is None:
            return self.acquire_local()
        return self.acquire()

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call *func* if the breaker allows; record the outcome; no lock held across it."""
        permit = self._permit()
        if type(permit) is float:
            raise self.refusal(permit)
        if self._listeners:
            self._before(func, args, kwargs)
        if self._needs_time:
            clock = self._clock
            start = clock()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self.record(permit, self.failure_of(exc), clock() - start, exc=exc)
                raise
            end = clock()
            duration = end - start
            # _count(False, duration), inline: this is every timed success.
            self.successes += 1
            if duration >= self._slow_after:
                self.slow_calls += 1
            if self._listeners:
                self._tell(False, None)
            if type(permit) is _Epoch:
                self.record_local(permit, False, duration, end)
            else:
                self._give_back(permit, False, duration)
            return result
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self.record(permit, self.failure_of(exc), None, exc=exc)
            raise
        self._succeeded(permit)
        return result

    async def call_async(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await *func* if the breaker allows (asyncio; pybreaker's needs Tornado)."""
        if self._store is not None:
            return await self._call_shared_async(func, args, kwargs)
        permit = self._permit()  # local: no I/O, no await needed
        if type(permit) is float:
            raise self.refusal(permit)
        if self._listeners:
            self._before(func, args, kwargs)
        if self._needs_time:
            clock = self._clock
            start = clock()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                self.record(permit, self.failure_of(exc), clock() - start, exc=exc)
                raise
            self.record(permit, False, clock() - start)
            return result
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            # A cancelled call tells nothing about the service: failure_of says None.
            self.record(permit, self.failure_of(exc), None, exc=exc)
            raise
        self._succeeded(permit)
        return result

    async def _call_shared_async(
        self, func: Callable[..., Awaitable[T]], args: Any, kwargs: Any
    ) -> T:
        permit = await self.aacquire()
        if type(permit) is float:
            raise self.refusal(permit)
        if self._listeners:
            self._before(func, args, kwargs)
        clock = self._clock
        start = clock()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            await self.arecord(permit, self.failure_of(exc), clock() - start, exc=exc)
            raise
        await self.arecord(permit, False, clock() - start)
        return result

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Guard a ``with`` block: refused blocks raise :class:`CircuitBreakerOpen`."""
        permit = self.acquire()
        if type(permit) is float:
            raise self.refusal(permit)
        clock = self._clock if self._needs_time else None
        start = clock() if clock is not None else 0.0
        try:
            yield
        except BaseException as exc:
            failed = self.failure_of(exc)
            self.record(permit, failed, clock() - start if clock is not None else None, exc=exc)
            raise
        self.record(permit, False, clock() - start if clock is not None else None)

    @contextlib.asynccontextmanager
    async def acalling(self) -> Any:
        """Guard an ``async with`` block."""
        permit = await self.aacquire()
        if type(permit) is float:
            raise self.refusal(permit)
        clock = self._clock if self._needs_time else None
        start = clock() if clock is not None else 0.0
        try:
            yield
        except BaseException as exc:
            failed = self.failure_of(exc)
            duration = clock() - start if clock is not None else None
            await self.arecord(permit, failed, duration, exc=exc)
            raise
        await self.arecord(permit, False, clock() - start if clock is not None else None)

    def __call__(self, *call_args: Any, **call_kwargs: bool) -> Callable[..., Any]:
        """Decorate a sync or async function (``@breaker`` or ``@breaker()``)."""

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self.call_async(func, *args, **kwargs)

                return async_wrapper

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.call(func, *args, **kwargs)

            return wrapper

        if call_args:
            return decorate(call_args[0])
        return decorate

    # -- figures --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """State, window figures and counters (JSON-friendly)."""
        now = self._clock()
        with self._mlock:
            epoch = self._epoch
            calls, failures, slow = self._window.totals(now)
            opened_at = self._opened_at
            consecutive = self._consecutive
        state = self.current_state
        store = self._store
        if store is not None and store.available():
            # Shared: the Redis window as this process last saw it.
            calls, failures, slow = store.last_window
        out: dict[str, Any] = {
            "state": state,
            "storage": "redis" if store is not None else "memory",
            "window": {
                "type": self.config.sliding_window_type,
                "size": self.config.sliding_window_size,
                "calls": calls,
                "failures": failures,
                "slow_calls": slow,
                "failure_rate": round(failures / calls, 4) if calls else None,
                "slow_call_rate": round(slow / calls, 4) if calls else None,
            },
            "consecutive_failures": consecutive,
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "slow_calls": self.slow_calls,
            "ignored": self.ignored,
            "rejected": self.rejected,
            "transitions": dict(self.transitions),
        }
        if store is not None:
            # Shared: when the open Redis last gave lets a call probe.
            left = store.open_left() if state == OPEN else None
            if left is not None:
                out["retry_after"] = round(left, 3)
            out["shared"] = store.stats()
        elif epoch.state == OPEN:
            out["retry_after"] = round(max(0.0, opened_at + self.config.wait_in_open - now), 3)
        if store is None and epoch.state == HALF_OPEN:
            out["probes_in_flight"] = epoch.probes - epoch.done
        return out
