"""``@seawall.protect``: resilience for the outbound calls a handler makes.

One decorator (and context manager) for sync and async functions, composing,
outermost first::

    fallback( retry( breaker( timeout( bulkhead( call ) ) ) ) )

- **fallback**: a value, or a callable given the exception, returned instead
  of raising once everything inside gave up (a breaker refusal included).
- **retry**: through tenacity: *retry* more attempts (``retry=3``: at most 4
  calls), exponential backoff with jitter, only on *retry_on* exceptions or
  results *retry_if_result* rejects; a ``Retry-After`` the exception carries
  (``exc.retry_after`` seconds, or ``exc.response.headers["Retry-After"]`` as
  httpx and requests errors have) lengthens the wait. Never retried: an open
  breaker (:class:`~seawall.CircuitOpen`) and a full bulkhead
  (:class:`BulkheadFull`): retrying them would only hammer what protects
  the downstream.
- **breaker**: a named breaker from :data:`breakers` (shared with
  ``CircuitBreaker(breaker_name=...)`` and ``@seawall.breaker``) or a
  :class:`~seawall._breaker.engine.Breaker`. Each attempt takes a permit.
- **timeout**: async calls are cancelled after *timeout* seconds
  (``TimeoutError``, a failure for the breaker, retryable). A sync call
  cannot be interrupted: an overrun is logged and counted as a breaker
  failure, and its result is still returned; give the client its own
  timeout (``httpx.Client(timeout=...)``).
- **bulkhead**: at most *bulkhead* calls at once; up to *bulkhead_queue*
  more wait (at most *bulkhead_wait* seconds), the rest fail at once with
  :class:`BulkheadFull`.

Retries are for outbound calls only: seawall never retries an incoming
request (a client's request is not ours to repeat).

Events: ``seawall.protect.retry`` (each retry: attempt, wait, error),
``seawall.protect.recovered`` (succeeded after retries: attempts),
``seawall.protect.failed`` (gave up: error, attempts), ``seawall.protect.fallback``,
``seawall.protect.rejected`` (breaker open or bulkhead full),
``seawall.protect.timeout``; the counters are in :meth:`Policy.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar, overload

import tenacity

from seawall._breaker.engine import Breaker, CircuitBreakerOpen
from seawall._breaker.registry import BreakerRegistry, breakers
from seawall._log import logger
from seawall._timeout import timeout as _deadline
from seawall.exceptions import CircuitOpen, ConfigurationError, Overloaded

__all__ = ["Bulkhead", "BulkheadFull", "BreakerRegistry", "Policy", "breakers", "protect"]

F = TypeVar("F", bound=Callable[..., Any])

_NO_FALLBACK: Any = object()
#: The blocks open in this context, as ``(policy, block)`` pairs, innermost last.
_cms: ContextVar[tuple[tuple[Any, Any], ...]] = ContextVar("seawall_protect_cms", default=())


class BulkheadFull(Overloaded):
    """A bulkhead had no free slot and its queue was full (or the wait ran out)."""

    def __init__(self, detail: str = "", *, bulkhead: str | None = None) -> None:
        super().__init__(detail or "Too many concurrent calls.", retry_after=None)
        self.bulkhead = bulkhead


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        msg = f"{what}: expected a duration >= 0 seconds, got {value!r}"
        raise ConfigurationError(msg)
    return seconds


class Bulkhead:
    """At most *max_concurrent* calls at once, *max_queue* more waiting (sync and async).

    One count serves threads and event loops: a freed slot goes to a waiting
    coroutine first (handed over on its loop), else to a waiting thread.
    """

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_queue: int = 0,
        max_wait: float | None = None,
        name: str = "bulkhead",
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            msg = f"bulkhead: expected a whole number >= 1, got {max_concurrent!r}"
            raise ConfigurationError(msg)
        if max_concurrent < 1:
            msg = f"bulkhead: expected a whole number >= 1, got {max_concurrent!r}"
            raise ConfigurationError(msg)
        if max_queue < 0:
            msg = f"bulkhead_queue: expected a whole number >= 0, got {max_queue!r}"
            raise ConfigurationError(msg)
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.name = name
        self.active = 0
        self.waiting = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sync_waiters = 0
        self._async_waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def __repr__(self) -> str:
        return f"Bulkhead({self.max_concurrent}, max_queue={self.max_queue}, active={self.active})"

    def _full(self) -> BulkheadFull:
        self.rejected += 1
        return BulkheadFull(bulkhead=self.name)

    def acquire(self) -> None:
        """Take a slot (this thread may wait in the queue); raise :class:`BulkheadFull`."""
        with self._lock:
            if self.active < self.max_concurrent and not self.waiting:
                self.active += 1
                return
            if self.waiting >= self.max_queue:
                raise self._full()
            self.waiting += 1
            self._sync_waiters += 1
            deadline = None if self.max_wait is None else time.monotonic() + self.max_wait
            try:
                while self.active >= self.max_concurrent:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise self._full()
                    self._cond.wait(left)
                self.active += 1
            finally:
                self.waiting -= 1
                self._sync_waiters -= 1

    async def aacquire(self) -> None:
        """Take a slot on the event loop (waiting without blocking it)."""
        with self._lock:
            if self.active < self.max_concurrent and not self.waiting:
                self.active += 1
                return
            if self.waiting >= self.max_queue:
                raise self._full()
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            entry = (loop, fut)
            self._async_waiters.append(entry)
            self.waiting += 1
        try:
            if self.max_wait is None:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), self.max_wait)
        except BaseException as exc:
            with self._lock:
                queued = entry in self._async_waiters
                if queued:
                    self._async_waiters.remove(entry)
                    self.waiting -= 1
            if not queued:
                if fut.done() and not fut.cancelled():
                    self.release()  # the slot arrived as we gave up: pass it on
                else:
                    fut.cancel()  # a hand-over is on its way: _hand_over passes it on
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                raise self._full() from None
            raise

    def release(self) -> None:
        """Give a slot back (to the next waiter, if any)."""
        with self._lock:
            while self._async_waiters:
                loop, fut = self._async_waiters.popleft()
                self.waiting -= 1
                if fut.done():
                    continue
                # The slot passes to the waiter without being freed.
                loop.call_soon_threadsafe(self._hand_over, fut)
                return
            self.active -= 1
            if self._sync_waiters:
                self._cond.notify()

    def _hand_over(self, fut: asyncio.Future[None]) -> None:
        if fut.done():
            self.release()  # the waiter gave up meanwhile: pass the slot on
        else:
            fut.set_result(None)

    def stats(self) -> dict[str, Any]:
        """Slots in use, waiters, refusals."""
        return {
            "max_concurrent": self.max_concurrent,
            "active": self.active,
            "waiting": self.waiting,
            "rejected": self.rejected,
        }


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds an exception says to wait: ``exc.retry_after`` or a response's ``Retry-After``."""
    value = getattr(exc, "retry_after", None)
    if value is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            with contextlib.suppress(Exception):
                value = headers.get("Retry-After")
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return max(0.0, float(value))
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    with contextlib.suppress(Exception):
        when = parsedate_to_datetime(text)
        return max(0.0, when.timestamp() - time.time())
    return None


class Policy:
    """A configured ``protect(...)``: a decorator, a context manager, and its counters."""

    def __init__(
        self,
        *,
        retry: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        retry_if_result: Callable[[Any], bool] | None = None,
        backoff: float = 0.1,
        backoff_max: float = 10.0,
        jitter: float = 0.1,
        max_retry_after: float = 30.0,
        breaker: str | Breaker | None = None,
        breaker_options: Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = None,
        bulkhead: int | Bulkhead | None = None,
        bulkhead_queue: int = 0,
        bulkhead_wait: float | None = None,
        fallback: Any = _NO_FALLBACK,
        fallback_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        name: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            msg = f"retry: expected a whole number of retries >= 0, got {retry!r}"
            raise ConfigurationError(msg)
        self.retry = retry
        self.retry_on = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        self.retry_if_result = retry_if_result
        self.backoff = _seconds(backoff, "backoff") or 0.0
        self.backoff_max = _seconds(backoff_max, "backoff_max") or 0.0
        self.jitter = _seconds(jitter, "jitter") or 0.0
        self.max_retry_after = _seconds(max_retry_after, "max_retry_after") or 0.0
        if isinstance(breaker, str):
            self.breaker: Breaker | None = breakers.get(breaker, **dict(breaker_options or {}))
        elif breaker is None or isinstance(breaker, Breaker):
            if breaker_options:
                msg = "breaker_options: only with breaker='name'"
                raise ConfigurationError(msg)
            self.breaker = breaker
        else:
            msg = f"breaker: expected a name, a seawall Breaker or None, got {breaker!r}"
            raise ConfigurationError(msg)
        self.timeout = _seconds(timeout, "timeout")
        self.name = name
        if isinstance(bulkhead, Bulkhead) or bulkhead is None:
            self.bulkhead = bulkhead
        else:
            self.bulkhead = Bulkhead(
                bulkhead, max_queue=bulkhead_queue, max_wait=bulkhead_wait, name=name or "protect"
            )
        # Read the clock only when something needs the duration.
        self._timed = self.timeout is not None or (
            self.breaker is not None and self.breaker._needs_time
        )
        self.fallback = fallback
        self.fallback_on = fallback_on if isinstance(fallback_on, tuple) else (fallback_on,)
        self._sleep = sleep
        self._asleep = asleep
        self._clock = clock
        self._retrying = tenacity.Retrying(
            sleep=sleep,
            stop=tenacity.stop_after_attempt(max(retry, 1)),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._retryable)
            | tenacity.retry_if_result(self._bad_result),
            before_sleep=self._log_retry,
            reraise=True,
            retry_error_callback=self._exhausted,
        )
        self._aretrying = tenacity.AsyncRetrying(
            sleep=asleep,
            stop=tenacity.stop_after_attempt(max(retry, 1)),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._retryable)
            | tenacity.retry_if_result(self._bad_result),
            before_sleep=self._log_retry,
            reraise=True,
            retry_error_callback=self._exhausted,
        )
        self.reset()

    def __repr__(self) -> str:
        breaker = None if self.breaker is None else self.breaker.name
        return (
            f"protect(name={self.name!r}, retry={self.retry}, breaker={breaker!r}, "
            f"timeout={self.timeout}, bulkhead={self.bulkhead!r}, "
            f"fallback={'set' if self.fallback is not _NO_FALLBACK else None})"
        )

    def reset(self) -> None:
        """Zero the counters."""
        self.calls = 0
        self.attempts = 0
        self.retries = 0
        self.successes = 0
        self.failures = 0
        self.fallbacks = 0
        self.rejected = 0
        # Blocks entered and not yet exited, whatever context they were
        # entered in: a generator resumed on another thread (Starlette runs
        # each step of a sync one in a worker) exits in another context.
        self._open: list[Any] = []
        self._open_lock = threading.Lock()
        self.timeouts = 0

    def stats(self) -> dict[str, Any]:
        """Calls, attempts, retries, outcomes; the breaker's and bulkhead's figures."""
        out: dict[str, Any] = {
            "calls": self.calls,
            "attempts": self.attempts,
            "retries": self.retries,
            "successes": self.successes,
            "failures": self.failures,
            "fallbacks": self.fallbacks,
            "rejected": self.rejected,
            "timeouts": self.timeouts,
        }
        if self.breaker is not None:
            out["breaker"] = {"name": self.breaker.name, "state": self.breaker.current_state}
        if self.bulkhead is not None:
            out["bulkhead"] = self.bulkhead.stats()
        return out

    # -- retry policy (tenacity callbacks) ------------------------------------------

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (CircuitOpen, BulkheadFull)):
            return False  # never retry into an open breaker or a full bulkhead
        if not isinstance(exc, self.retry_on):
            return False
        wait = retry_after_of(exc)
        return wait is None or wait <= self.max_retry_after

    def _bad_result(self, result: Any) -> bool:
        return self.retry_if_result is not None and bool(self.retry_if_result(result))

    def backoff_for(self, retry_number: int) -> float:
        """The wait before retry *retry_number* (1-based), jitter included."""
        base = min(self.backoff_max, self.backoff * 2.0 ** (retry_number - 1))
        return base + (random.uniform(0.0, self.jitter) if self.jitter else 0.0)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        # tenacity's attempt k here is retry k (the first call ran outside it).
        wait = self.backoff_for(state.attempt_number + 1)
        outcome = state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            hinted = retry_after_of(exc) if exc is not None else None
            if hinted is not None:
                wait = max(wait, hinted)
        return wait

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        # tenacity's attempt k is the call's attempt k + 1; the next one is k + 2.
        self._retry_logged(state.attempt_number + 2, state.upcoming_sleep, exc)

    def _retry_logged(self, attempt: int, wait: float, exc: BaseException | None) -> None:
        self.retries += 1
        logger.warning(
            "seawall.protect.retry",
            call=self.name,
            attempt=attempt,
            of=self.retry + 1,
            wait=round(wait, 3),
            error=None if exc is None else type(exc).__name__,
            result=None if exc is not None else "rejected by retry_if_result",
        )

    @staticmethod
    def _exhausted(state: tenacity.RetryCallState) -> Any:
        # Only reached for a bad *result* (reraise=True re-raises exceptions):
        # hand the last result back rather than tenacity's RetryError.
        outcome = state.outcome
        assert outcome is not None
        return outcome.result()

    # -- one attempt: breaker(timeout(bulkhead(call))) ------------------------------

    def _record(
        self, permit: Any, failed: bool | None, duration: float, exc: BaseException | None = None
    ) -> None:
        if self.breaker is not None:
            self.breaker.record(permit, failed, duration, exc=exc)

    def _refused(self, retry_after: float) -> CircuitBreakerOpen:
        self.rejected += 1
        assert self.breaker is not None
        logger.info(
            "seawall.protect.rejected",
            call=self.name,
            reason="circuit_open",
            breaker=self.breaker.name,
            retry_after=round(retry_after, 3),
        )
        return self.breaker.refusal(retry_after)

    def _classify(self, exc: BaseException) -> bool | None:
        if isinstance(exc, BulkheadFull) or not isinstance(exc, Exception):
            return None  # our own refusal, or a cancellation: says nothing of the downstream
        if self.breaker is not None:
            return self.breaker.failure_of(exc)
        return True

    def _attempt(self, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        self.attempts += 1
        breaker = self.breaker
        permit = None
        if breaker is not None:
            permit = breaker._permit()
            if type(permit) is float:
                raise self._refused(permit)
        timed = self._timed
        clock = self._clock
        start = clock() if timed else 0.0
        try:
            bulkhead = self.bulkhead
            if bulkhead is None:
                result = func(*args, **kwargs)
            else:
                bulkhead.acquire()
                try:
                    result = func(*args, **kwargs)
                finally:
                    bulkhead.release()
        except BaseException as exc:
            if breaker is not None:
                duration = clock() - start if timed else None
                breaker.record(permit, self._classify(exc), duration, exc=exc)
            raise
        if not timed and self.retry_if_result is None:
            if breaker is not None:
                breaker._succeeded(permit)  # the untimed closed-state fast path
            return result
        duration = clock() - start if timed else None
        failed = self._bad_result(result)
        if self.timeout is not None and duration is not None and duration > self.timeout:
            failed = True
            self._overran(duration, cancelled=False)
        if breaker is not None:
            breaker.record(permit, failed, duration)
        return result

    async def _aattempt(self, func: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
        self.attempts += 1
        permit = None
        breaker = self.breaker
        if breaker is not None:
            permit = await breaker.aacquire()
            if type(permit) is float:
                raise self._refused(permit)
        clock = self._clock
        start = clock()
        try:
            try:
                result = await self._abulk(func, args, kwargs)
            except (asyncio.TimeoutError, TimeoutError):
                self._overran(clock() - start, cancelled=True)
                raise
        except BaseException as exc:
            failed = self._classify(exc)
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                failed = True
            if breaker is not None:
                await breaker.arecord(permit, failed, clock() - start, exc=exc)
            raise
        failed = self._bad_result(result) if self.retry_if_result is not None else False
        if breaker is not None:
            await breaker.arecord(permit, failed, clock() - start)
        return result

    async def _abulk(self, func: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
        """The call through the bulkhead, the timeout bounding the call itself.

        A wait for a slot is bounded by the timeout too, and one that runs out
        is the bulkhead's refusal (:class:`BulkheadFull`, not counted by a
        breaker): the downstream was never called, and local congestion must
        not open its breaker.
        """
        bulkhead, timeout = self.bulkhead, self.timeout
        if bulkhead is not None:
            if timeout is None:
                await bulkhead.aacquire()
            else:
                try:
                    await _with_timeout(bulkhead.aacquire(), timeout)
                except (asyncio.TimeoutError, TimeoutError):
                    self.rejected += 1
                    bulkhead.rejected += 1
                    msg = f"No slot within the {timeout:g} s timeout."
                    raise BulkheadFull(msg, bulkhead=self.name) from None
        try:
            if timeout is None:
                return await func(*args, **kwargs)
            return await _with_timeout(func(*args, **kwargs), timeout)
        finally:
            if bulkhead is not None:
                bulkhead.release()

    def _overran(self, duration: float, *, cancelled: bool) -> None:
        self.timeouts += 1
        logger.warning(
            "seawall.protect.timeout",
            call=self.name,
            timeout=self.timeout,
            duration_ms=round(duration * 1000.0, 3),
            cancelled=cancelled,
        )

    # -- the whole pipeline -----------------------------------------------------------

    def _first_failed(self, exc: BaseException | None, result: Any) -> bool:
        """Whether the first attempt's outcome calls for the retry loop."""
        if self.retry == 0:
            return False
        if exc is not None:
            return self._retryable(exc)
        return self._bad_result(result)

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run *func* through the pipeline (sync)."""
        self.calls += 1
        retrying: Any = None
        try:
            try:
                result = self._attempt(func, args, kwargs)
            except Exception as exc:
                if not self._first_failed(exc, None):
                    raise
                first: BaseException | None = exc
                result = None
            else:
                if self.retry_if_result is None or not self._first_failed(None, result):
                    self.successes += 1
                    return result
                first = None
            wait = self._first_wait(first)
            self._retry_logged(2, wait, first)
            self._sleep(wait)
            retrying = self._retrying.copy()
            result = retrying(self._attempt, func, args, kwargs)
        except Exception as exc:
            return self._gave_up(exc, _attempts(retrying))
        self._recovered(_attempts(retrying))
        return result

    async def acall(self, func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Await *func* through the pipeline."""
        self.calls += 1
        retrying: Any = None
        try:
            try:
                result = await self._aattempt(func, args, kwargs)
            except Exception as exc:
                if not self._first_failed(exc, None):
                    raise
                first: BaseException | None = exc
                result = None
            else:
                if not self._first_failed(None, result):
                    self.successes += 1
                    return result
                first = None
            wait = self._first_wait(first)
            self._retry_logged(2, wait, first)
            await self._asleep(wait)
            retrying = self._aretrying.copy()
            result = await retrying(self._aattempt, func, args, kwargs)
        except Exception as exc:
            value = self._gave_up(exc, _attempts(retrying))
            if inspect.isawaitable(value):
                value = await value
            return value
        self._recovered(_attempts(retrying))
        return result

    def _first_wait(self, exc: BaseException | None) -> float:
        wait = self.backoff_for(1)
        hinted = retry_after_of(exc) if exc is not None else None
        return wait if hinted is None else max(wait, hinted)

    def _recovered(self, attempts: int) -> None:
        """Count a success that needed retries, and say after how many attempts."""
        self.successes += 1
        logger.info("seawall.protect.recovered", call=self.name, attempts=attempts)

    def _gave_up(self, exc: Exception, attempts: int = 1) -> Any:
        """Fall back, or re-raise *exc* (the caller is inside its ``except``).

        *attempts*: the calls made (a refused attempt included).
        """
        rejected = isinstance(exc, (CircuitOpen, BulkheadFull))
        if isinstance(exc, BulkheadFull):
            self.rejected += 1
        error = type(exc).__name__
        if not rejected:
            self.failures += 1
            logger.warning("seawall.protect.failed", call=self.name, error=error, attempts=attempts)
        if self.fallback is _NO_FALLBACK or not isinstance(exc, self.fallback_on):
            raise exc
        self.fallbacks += 1
        logger.info("seawall.protect.fallback", call=self.name, error=error, attempts=attempts)
        fallback = self.fallback
        return fallback(exc) if callable(fallback) else fallback

    # -- decorator and context managers -----------------------------------------------

    def __call__(self, func: F) -> F:
        """Decorate a sync or async function."""
        if self.name is None:
            qualname = getattr(func, "__qualname__", type(func).__qualname__)
            self.name = f"{func.__module__}.{qualname}"
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.acall(func, *args, **kwargs)

            async_wrapper.protect = self  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self.call(func, *args, **kwargs)

        wrapper.protect = self  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    def _check_block(self) -> None:
        if self.retry or self.fallback is not _NO_FALLBACK:
            msg = (
                "protect(...) as a context manager applies breaker, timeout and bulkhead only: "
                "retry and fallback need a function to call again or replace (use the decorator)"
            )
            raise ConfigurationError(msg)

    @contextlib.contextmanager
    def _block(self) -> Iterator[None]:
        self._check_block()
        self.calls += 1
        self.attempts += 1
        permit = None
        if self.breaker is not None:
            permit = self.breaker.acquire()
            if type(permit) is float:
                raise self._refused(permit)
        if self.bulkhead is not None:
            try:
                self.bulkhead.acquire()
            except BaseException as exc:
                # A full bulkhead says nothing of the downstream: hand the
                # permit back uncounted, or a half-open probe would be lost.
                self.rejected += isinstance(exc, BulkheadFull)
                self._record(permit, None, 0.0)
                raise
        start = self._clock()
        try:
            yield
        except BaseException as exc:
            self.failures += 1
            self._record(permit, self._classify(exc), self._clock() - start, exc)
            raise
        finally:
            if self.bulkhead is not None:
                self.bulkhead.release()
        duration = self._clock() - start
        failed = self.timeout is not None and duration > self.timeout
        if failed:
            self._overran(duration, cancelled=False)
        self.successes += 1
        self._record(permit, failed, duration)

    @contextlib.asynccontextmanager
    async def _ablock(self) -> AsyncIterator[None]:
        self._check_block()
        self.calls += 1
        self.attempts += 1
        permit = None
        breaker = self.breaker
        if breaker is not None:
            permit = await breaker.aacquire()
            if type(permit) is float:
                raise self._refused(permit)
        if self.bulkhead is not None:
            try:
                await self.bulkhead.aacquire()
            except BaseException as exc:
                self.rejected += isinstance(exc, BulkheadFull)
                if breaker is not None:
                    await breaker.arecord(permit, None, 0.0)  # see _block
                raise
        start = self._clock()
        try:
            if self.timeout is not None:
                async with _deadline(self.timeout):
                    yield
            else:
                yield
        except BaseException as exc:
            self.failures += 1
            failed = self._classify(exc)
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                failed = True
                self._overran(self._clock() - start, cancelled=True)
            if breaker is not None:
                await breaker.arecord(permit, failed, self._clock() - start, exc=exc)
            raise
        finally:
            if self.bulkhead is not None:
                self.bulkhead.release()
        self.successes += 1
        if breaker is not None:
            await breaker.arecord(permit, False, self._clock() - start)

    def _opened(self, block: Any) -> None:
        _cms.set((*_cms.get(), (self, block)))
        with self._open_lock:
            self._open.append(block)

    def _closing(self) -> Any:
        """The block the ending ``with`` opened: this policy's innermost one here.

        By policy, not the innermost of any: two generators each in a block of
        their own may end in either order. In a context that did not open it
        (a copy made for another thread), the last one this policy opened.
        """
        stack = _cms.get()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] is self:
                block = stack[i][1]
                _cms.set(stack[:i] + stack[i + 1 :])
                break
        else:
            with self._open_lock:
                return self._open.pop()
        with self._open_lock:
            if block in self._open:
                self._open.remove(block)
        return block

    def __enter__(self) -> None:
        block = self._block()
        block.__enter__()
        self._opened(block)

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._closing().__exit__(*exc_info)  # type: ignore[no-any-return]

    async def __aenter__(self) -> None:
        block = self._ablock()
        await block.__aenter__()
        self._opened(block)

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._closing().__aexit__(*exc_info)  # type: ignore[no-any-return]


def _attempts(retrying: Any) -> int:
    """The attempts a call made: the first, plus those its tenacity loop ran."""
    if retrying is None:
        return 1
    return 1 + int(retrying.statistics.get("attempt_number", 0))


async def _with_timeout(call: Awaitable[Any], seconds: float) -> Any:
    async with _deadline(seconds):
        return await call


@overload
def protect(func: F, /) -> F: ...


@overload
def protect(
    func: None = None,
    /,
    *,
    retry: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    retry_if_result: Callable[[Any], bool] | None = None,
    backoff: float = 0.1,
    backoff_max: float = 10.0,
    jitter: float = 0.1,
    max_retry_after: float = 30.0,
    breaker: str | Breaker | None = None,
    breaker_options: Mapping[str, Any] | None = None,
    timeout: float | timedelta | None = None,
    bulkhead: int | Bulkhead | None = None,
    bulkhead_queue: int = 0,
    bulkhead_wait: float | None = None,
    fallback: Any = _NO_FALLBACK,
    fallback_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    name: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.perf_counter,
) -> Policy: ...


def protect(func: Any = None, /, **options: Any) -> Any:
    """Protect an outbound call: fallback(retry(breaker(timeout(bulkhead(call))))).

    Use as ``@protect(...)`` on a sync or async function, bare ``@protect``,
    or as ``with protect(...):`` / ``async with protect(...):`` around a block
    (breaker, timeout and bulkhead only). See the module documentation and
    docs/outbound.md.

    Args:
        func: the function, when used bare as ``@protect``.
        **options: the settings below (keyword-only).
        retry: retries after the first attempt (``3``: at most 4 calls).
        retry_on: exception types worth retrying.
        retry_if_result: ``(result) -> bool``: retry (and count a breaker
            failure) when true.
        backoff: the first retry's base wait (seconds), doubled each retry.
        backoff_max: the largest base wait.
        jitter: up to this many random seconds added to each wait.
        max_retry_after: a ``Retry-After`` longer than this is not waited
            for: the call gives up (to its fallback) at once.
        breaker: a breaker name (from :data:`breakers`) or a ``Breaker``.
        breaker_options: settings for a named breaker created here.
        timeout: seconds per attempt (async: cancelled; sync: overrun counted).
        bulkhead: max concurrent calls (or a shared :class:`Bulkhead`).
        bulkhead_queue: callers allowed to wait for a slot.
        bulkhead_wait: longest wait for a slot (``None``: as long as needed).
        fallback: a value, or a callable taking the exception, returned when
            the call gives up.
        fallback_on: exception types the fallback replaces.
        name: the name in logs and stats (default: the function's).
        sleep, asleep, clock: injected for tests.
    """
    policy = Policy(**options)
    if func is not None:
        return policy(func)
    return policy
