"""@seawall.protect: fallback(retry(breaker(timeout(bulkhead(call))))) for outbound calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import seawall
from seawall import CircuitOpen, ConfigurationError
from seawall.resilience import Bulkhead, BulkheadFull, breakers, protect, retry_after_of
from seawall.testing import ManualClock


class Down(ConnectionError):
    pass


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after


class Sleeps:
    """An injected sleep that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)


class Downstream:
    def __init__(self, fail: int = 10**9, result: Any = "ok") -> None:
        self.calls = 0
        self.fail = fail
        self.result = result

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls <= self.fail:
            raise Down("connection refused")
        return self.result


class TestAcceptance:
    def test_failing_downstream_with_retry_breaker_and_fallback(
        self, clock: ManualClock, logs: list[dict[str, Any]]
    ) -> None:
        """retry=3 + a fail_max=6 breaker: 4 attempts, then 2 + refusal, then no call at all."""
        downstream = Downstream()
        sleeps = Sleeps()
        charge = protect(
            retry=3,
            breaker="payments",
            breaker_options={"fail_max": 6, "wait_in_open": 30, "clock": clock},
            fallback="queued",
            sleep=sleeps,
            backoff=0.1,
            jitter=0,
        )(downstream)

        assert charge("card") == "queued"
        assert downstream.calls == 4  # 1 attempt + 3 retries, counted exactly
        assert sleeps.waits == [0.1, 0.2, 0.4]  # exponential backoff
        assert breakers["payments"].current_state == "closed"

        assert charge("card") == "queued"
        assert downstream.calls == 6  # the 6th failure opens the breaker ...
        assert breakers["payments"].current_state == "open"
        assert len(sleeps.waits) == 5  # ... and its refusal is never retried

        assert charge("card") == "queued"
        assert downstream.calls == 6  # fast-fail: the downstream is not touched
        stats = charge.protect.stats()  # type: ignore[attr-defined]
        assert stats["attempts"] == 8
        assert stats["retries"] == 5
        assert stats["fallbacks"] == 3
        assert stats["rejected"] == 2
        retries = [e for e in logs if e["event"] == "seawall.protect.retry"]
        assert [e["attempt"] for e in retries] == [2, 3, 4, 2, 3]
        assert any(e["event"] == "seawall.protect.rejected" for e in logs)
        # Each call's outcome, with the attempts it made (a refused one included).
        failed = [e["attempts"] for e in logs if e["event"] == "seawall.protect.failed"]
        fallbacks = [e["attempts"] for e in logs if e["event"] == "seawall.protect.fallback"]
        assert failed == [4]  # calls 2 and 3 ended on the breaker's refusal, not a failure
        assert fallbacks == [4, 3, 1]

    def test_async_failing_downstream(self, clock: ManualClock) -> None:
        """The same pipeline on asyncio."""
        calls = 0
        sleeps = Sleeps()

        @protect(
            retry=3,
            breaker="async-payments",
            breaker_options={"fail_max": 6, "clock": clock},
            fallback=lambda exc: f"fallback after {type(exc).__name__}",
            asleep=sleeps.asleep,
            backoff=0,
            jitter=0,
        )
        async def charge() -> str:
            nonlocal calls
            calls += 1
            raise Down

        async def main() -> list[str]:
            return [await charge() for _ in range(3)]

        assert asyncio.run(main()) == [
            "fallback after Down",
            # attempts 5 and 6 fail, the 6th opens, the 7th is refused: the last error
            "fallback after CircuitBreakerOpen",
            "fallback after CircuitBreakerOpen",
        ]
        assert calls == 6

    def test_the_issue_example_with_a_failure_rate_breaker(
        self, clock: ManualClock, logs: list[dict[str, Any]]
    ) -> None:
        """protect(retry=3, breaker=..., timeout=2.0, fallback=None) over a rate breaker.

        Minimum 8 calls, threshold 50%: the 8th failed attempt (the last retry of
        the second call) opens it; the third call never reaches the downstream.
        """
        calls = 0
        sleeps = Sleeps()

        @protect(
            retry=3,
            breaker="rate-payments",
            timeout=2.0,
            fallback=None,
            breaker_options={
                "failure_rate_threshold": 0.5,
                "minimum_number_of_calls": 8,
                "sliding_window_size": 20,
                "clock": clock,
            },
            asleep=sleeps.asleep,
            jitter=0,
        )
        async def charge(card: str) -> str:
            nonlocal calls
            calls += 1
            raise Down(card)

        breaker = breakers["rate-payments"]

        async def main() -> None:
            assert await charge("a") is None
            assert calls == 4
            assert breaker.stats()["window"]["calls"] == 4
            assert breaker.current_state == "closed"
            assert await charge("b") is None
            assert calls == 8
            assert breaker.current_state == "open"
            assert await charge("c") is None
            assert calls == 8  # refused at once: the downstream is not touched

        asyncio.run(main())
        stats = charge.protect.stats()  # type: ignore[attr-defined]
        assert stats["attempts"] == 9  # 4 + 4 + the refused one
        assert stats["retries"] == 6
        assert (stats["fallbacks"], stats["rejected"], stats["failures"]) == (3, 1, 2)
        assert (breaker.failures, breaker.rejected) == (8, 1)
        assert len(sleeps.waits) == 6  # the refusal was never retried
        opened = [e for e in logs if e["event"] == "seawall.breaker.opened"]
        assert [(e["reason"], e["calls"], e["failures"]) for e in opened] == [
            ("failure_rate", 8, 8)
        ]


class TestRetry:
    def test_success_after_retries(self, logs: list[dict[str, Any]]) -> None:
        """Two failures then success: the result comes back, 3 attempts, logged as recovered."""
        downstream = Downstream(fail=2)
        call = protect(retry=3, sleep=Sleeps(), jitter=0, name="flaky")(downstream)
        assert call() == "ok"
        assert downstream.calls == 3
        recovered = [e for e in logs if e["event"] == "seawall.protect.recovered"]
        assert [(e["call"], e["attempts"]) for e in recovered] == [("flaky", 3)]
        assert call() == "ok"  # a first-time success: counted, not logged
        assert len([e for e in logs if e["event"] == "seawall.protect.recovered"]) == 1
        stats = call.protect.stats()  # type: ignore[attr-defined]
        assert (stats["calls"], stats["attempts"], stats["successes"]) == (2, 4, 2)

    def test_only_configured_exceptions_are_retried(self) -> None:
        """retry_on=(TimeoutError,): a ConnectionError is raised at once."""
        downstream = Downstream()
        call = protect(retry=3, retry_on=TimeoutError, sleep=Sleeps())(downstream)
        with pytest.raises(Down):
            call()
        assert downstream.calls == 1

    def test_retry_on_result(self) -> None:
        """retry_if_result retries bad answers and returns the last one when out of retries."""
        answers = iter([503, 503, 200])
        call = protect(retry=3, retry_if_result=lambda r: r >= 500, sleep=Sleeps())(
            lambda: next(answers)
        )
        assert call() == 200
        always = protect(retry=2, retry_if_result=lambda r: r >= 500, sleep=Sleeps())(lambda: 503)
        assert always() == 503

    def test_retry_after_carried_by_the_exception_is_honoured(self) -> None:
        """A Retry-After of 3 s lengthens the backoff; one beyond max_retry_after stops."""
        sleeps = Sleeps()
        attempts = iter([Throttled(3), Throttled(0), None])

        def flaky() -> str:
            exc = next(attempts)
            if exc is not None:
                raise exc
            return "ok"

        call = protect(retry=3, backoff=0.1, jitter=0, sleep=sleeps)(flaky)
        assert call() == "ok"
        assert sleeps.waits == [3.0, 0.2]

        def too_long() -> None:
            raise Throttled(600)

        hurried = protect(retry=3, max_retry_after=30, sleep=sleeps)(too_long)
        with pytest.raises(Throttled):
            hurried()
        assert len(sleeps.waits) == 2

    def test_retry_after_header_of_a_response(self) -> None:
        """httpx/requests errors carry the response: its Retry-After header is read."""
        import httpx

        request = httpx.Request("GET", "http://x")
        response = httpx.Response(503, headers={"Retry-After": "7"}, request=request)
        exc = httpx.HTTPStatusError("busy", request=request, response=response)
        assert retry_after_of(exc) == 7.0
        assert retry_after_of(ValueError()) is None

    def test_no_fallback_reraises(self) -> None:
        """Without a fallback the last error propagates."""
        call = protect(retry=1, sleep=Sleeps())(Downstream())
        with pytest.raises(Down):
            call()

    def test_bad_retry_setting(self) -> None:
        """retry must be a whole number of retries."""
        with pytest.raises(ConfigurationError, match="retry"):
            protect(retry=-1)


class TestTimeoutAndBulkhead:
    def test_async_timeout_cancels_and_counts_a_breaker_failure(self, clock: ManualClock) -> None:
        """A hung async call is cancelled after timeout; the breaker counts it."""

        @protect(timeout=0.01, breaker="slow", breaker_options={"fail_max": 1, "clock": clock})
        async def hang() -> None:
            await asyncio.sleep(5)

        async def main() -> None:
            with pytest.raises(TimeoutError):
                await hang()
            with pytest.raises(CircuitOpen):
                await hang()

        asyncio.run(main())
        assert hang.protect.stats()["timeouts"] == 1  # type: ignore[attr-defined]

    def test_sync_overrun_is_counted_not_interrupted(self, logs: list[dict[str, Any]]) -> None:
        """A sync call past its timeout returns its result; the overrun is a breaker failure."""
        ticks = iter([0.0, 5.0, 10.0, 15.0])
        call = protect(
            timeout=1.0, breaker="sync-slow", breaker_options={"fail_max": 1},
            clock=lambda: next(ticks),
        )(lambda: "late")  # fmt: skip
        assert call() == "late"
        assert breakers["sync-slow"].current_state == "open"
        event = next(e for e in logs if e["event"] == "seawall.protect.timeout")
        assert event["cancelled"] is False

    def test_bulkhead_threads(self) -> None:
        """2 slots, 1 queued: the 4th concurrent caller is refused at once."""
        release = threading.Event()
        entered = threading.Semaphore(0)

        def work() -> str:
            entered.release()
            release.wait(5)
            return "done"

        call = protect(bulkhead=2, bulkhead_queue=1)(work)
        results: list[Any] = []

        def run() -> None:
            try:
                results.append(call())
            except BulkheadFull as exc:
                results.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        entered.acquire(timeout=5)
        entered.acquire(timeout=5)
        bulkhead = call.protect.bulkhead  # type: ignore[attr-defined]
        for _ in range(500):
            if bulkhead.waiting == 1:
                break
            threading.Event().wait(0.002)
        with pytest.raises(BulkheadFull):
            call()
        release.set()
        for t in threads:
            t.join(5)
        assert results == ["done", "done", "done"]
        assert bulkhead.stats()["rejected"] == 1
        assert bulkhead.active == 0

    def test_bulkhead_async_waits_without_blocking_the_loop(self) -> None:
        """1 slot, 5 queued: all six coroutines finish, one at a time."""
        bulkhead = Bulkhead(1, max_queue=5)
        running = 0
        most = 0

        @protect(bulkhead=bulkhead)
        async def work() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001)
            running -= 1

        async def main() -> None:
            await asyncio.gather(*(work() for _ in range(6)))
            with pytest.raises(BulkheadFull):
                await asyncio.gather(*(work() for _ in range(7)))

        asyncio.run(main())
        assert most == 1
        assert bulkhead.rejected == 1

    def test_bulkhead_wait_runs_out(self) -> None:
        """A queued coroutine gives up after bulkhead_wait."""
        bulkhead = Bulkhead(1, max_queue=1, max_wait=0.01)

        async def main() -> None:
            await bulkhead.aacquire()
            with pytest.raises(BulkheadFull):
                await bulkhead.aacquire()
            bulkhead.release()
            await bulkhead.aacquire()  # the slot was not leaked
            bulkhead.release()

        asyncio.run(main())
        assert bulkhead.active == 0


class TestContextManager:
    def test_sync_block(self, clock: ManualClock) -> None:
        """with protect(breaker=...): failures count, open refuses the block."""
        guard = protect(breaker="block", breaker_options={"fail_max": 1, "clock": clock})
        with pytest.raises(Down), guard:
            raise Down
        with pytest.raises(CircuitOpen), guard:
            pass

    def test_async_block_with_timeout(self) -> None:
        """async with protect(timeout=...): the block is cancelled."""

        async def main() -> None:
            with pytest.raises(TimeoutError):
                async with protect(timeout=0.01):
                    await asyncio.sleep(5)

        asyncio.run(main())

    def test_a_full_bulkhead_hands_the_probe_permit_back(self, clock: ManualClock) -> None:
        """Half-open with one probe: a block refused by its bulkhead does not use the probe up."""
        from seawall._breaker import Breaker

        breaker = Breaker("probe", fail_max=1, wait_in_open=5, clock=clock)
        breaker.open()
        clock.advance(5)
        bulkhead = Bulkhead(1)
        bulkhead.acquire()  # the only slot is taken
        guard = protect(breaker=breaker, bulkhead=bulkhead)
        with pytest.raises(BulkheadFull), guard:
            pass
        assert guard.stats()["rejected"] == 1
        bulkhead.release()
        with guard:  # the probe permit is still there: this block is the probe
            pass
        assert breaker.current_state == "closed"

        async def main() -> None:
            breaker.open()
            clock.advance(5)
            await bulkhead.aacquire()
            with pytest.raises(BulkheadFull):
                async with guard:
                    pass
            bulkhead.release()
            async with guard:
                pass

        asyncio.run(main())
        assert breaker.current_state == "closed"

    def test_retry_needs_a_function(self) -> None:
        """A block cannot be retried: say so rather than silently not retrying."""
        with pytest.raises(ConfigurationError, match="decorator"), protect(retry=2):
            pass


def test_public_name() -> None:
    """seawall.protect is the decorator of this module."""
    assert seawall.protect is protect


class TestTimeoutBoundsTheCall:
    """The timeout bounds the downstream call, not the wait for a bulkhead slot.

    A call that timed out while queued (never reaching the downstream) was
    recorded as a breaker failure, so local congestion could open it; and a
    queued call that then ran in time was cut short by the wait it did.
    """

    def test_a_queued_call_gets_its_whole_timeout(self) -> None:
        name = f"queued-{id(self)}"
        breakers.get(name, failure_rate_threshold=0.5, minimum_number_of_calls=100)

        @protect(timeout=0.1, bulkhead=Bulkhead(1, max_queue=5), breaker=name)
        async def held(seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

        async def both() -> list[Any]:
            return await asyncio.gather(held(0.08), held(0.05), return_exceptions=True)

        assert asyncio.run(both()) == [0.08, 0.05]
        assert breakers[name].failures == 0

    def test_a_wait_past_the_timeout_is_the_bulkheads_refusal(self) -> None:
        name = f"waited-{id(self)}"
        breakers.get(name, failure_rate_threshold=0.5, minimum_number_of_calls=100)
        bulkhead = Bulkhead(1, max_queue=5)

        @protect(timeout=0.05, bulkhead=bulkhead, breaker=name)
        async def held(seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

        async def both() -> list[Any]:
            return await asyncio.gather(held(0.2), held(0.01), return_exceptions=True)

        first, second = asyncio.run(both())
        assert isinstance(first, TimeoutError)  # the call itself overran: a failure
        assert isinstance(second, BulkheadFull)  # never called: not the downstream's fault
        assert breakers[name].failures == 1
        assert bulkhead.rejected == 1


class TestBlocksEndTheirOwn:
    """Each ``with protect(...)`` ends the block it opened.

    The open blocks sat on one stack for all policies, popped innermost
    first: of two generators each in a block of its own, the first to end
    released the other's slot; and a sync generator that Starlette steps
    through on worker threads (each with a copy of the context) found no
    block to end at all (IndexError).
    """

    def test_interleaved_generators_release_their_own_slots(self) -> None:
        first, second = Bulkhead(1), Bulkhead(1)
        guard_a, guard_b = protect(bulkhead=first), protect(bulkhead=second)

        def rows(guard: Any) -> Any:
            with guard:
                yield 1
                yield 2

        a, b = rows(guard_a), rows(guard_b)
        next(a)
        next(b)
        list(a)  # a ends first, while b's block is the innermost
        assert (first.active, second.active) == (0, 1)
        list(b)
        assert (first.active, second.active) == (0, 0)

    def test_a_generator_stepped_on_other_threads_ends_its_block(self) -> None:
        import contextvars
        from concurrent.futures import ThreadPoolExecutor

        bulkhead = Bulkhead(2)
        guard = protect(bulkhead=bulkhead)

        def rows() -> Any:
            with guard:
                yield 1
                yield 2

        gen = rows()
        with ThreadPoolExecutor(2) as pool:
            # As Starlette's iterate_in_threadpool: each step in a copied context.
            got = [pool.submit(contextvars.copy_context().run, next, gen, None).result()]
            got.append(pool.submit(contextvars.copy_context().run, next, gen, None).result())
            got.append(pool.submit(contextvars.copy_context().run, next, gen, None).result())
        assert got == [1, 2, None]
        assert bulkhead.active == 0
        assert guard.stats()["failures"] == 0
