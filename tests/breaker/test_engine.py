"""The breaker engine driven by a manual clock: no sleeps, no server."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pybreaker
import pytest

from seawall import CircuitOpen, ConfigurationError
from seawall._breaker import CLOSED, HALF_OPEN, OPEN, Breaker, CircuitBreakerOpen
from seawall.testing import ManualClock


class Down(RuntimeError):
    pass


class Business(ValueError):
    pass


def fail() -> None:
    raise Down("downstream is down")


def ok() -> str:
    return "ok"


def run(b: Breaker, outcomes: str) -> list[str]:
    """Call *b* once per letter: ``f`` fails, ``s`` succeeds; return what happened."""
    seen = []
    for letter in outcomes:
        try:
            b.call(fail if letter == "f" else ok)
        except Down:
            seen.append("failed")
        except CircuitOpen:
            seen.append("refused")
        else:
            seen.append("ok")
    return seen


class TestConsecutive:
    def test_fail_max_opens_after_that_many_consecutive_failures(self, clock: ManualClock) -> None:
        """fail_max=3: two failures, a success, three failures: opens on the last one."""
        b = Breaker("t", fail_max=3, clock=clock)
        run(b, "ffsff")
        assert b.current_state == CLOSED
        assert b.fail_counter == 2
        run(b, "f")
        assert b.current_state == OPEN
        assert run(b, "s") == ["refused"]

    def test_any_failed_probe_reopens_in_the_consecutive_form(self, clock: ManualClock) -> None:
        """With fail_max, one failed probe reopens even with several permitted."""
        b = Breaker("t", fail_max=1, permitted_calls_in_half_open=3, wait_in_open=10, clock=clock)
        run(b, "f")
        clock.advance(10)
        assert run(b, "sf") == ["ok", "failed"]
        assert b.current_state == OPEN


class TestFailureRate:
    def test_never_judged_before_the_minimum_number_of_calls(self, clock: ManualClock) -> None:
        """Four failures out of four stay closed when five calls are the minimum."""
        b = Breaker("t", failure_rate_threshold=0.5, minimum_number_of_calls=5, clock=clock)
        run(b, "ffff")
        assert b.current_state == CLOSED
        run(b, "s")  # 4/5 = 80% >= 50%
        assert b.current_state == OPEN

    def test_rate_below_threshold_stays_closed(self, clock: ManualClock) -> None:
        """2 failures in 5 calls is 40%: under a 50% threshold."""
        b = Breaker("t", failure_rate_threshold=50, minimum_number_of_calls=5, clock=clock)
        run(b, "sfsfs")
        assert b.current_state == CLOSED
        assert b.stats()["window"]["failure_rate"] == 0.4

    def test_count_window_forgets_the_oldest_call(self, clock: ManualClock) -> None:
        """A window of 4: old failures slide out and the rate stays under the threshold."""
        b = Breaker(
            "t",
            failure_rate_threshold=0.75,
            minimum_number_of_calls=4,
            sliding_window_size=4,
            clock=clock,
        )
        run(b, "ffssfss")
        assert b.current_state == CLOSED
        window = b.stats()["window"]
        assert (window["calls"], window["failures"]) == (4, 1)

    def test_count_window_smaller_than_minimum_decides_when_full(self, clock: ManualClock) -> None:
        """resilience4j: a count window of 3 with a minimum of 10 judges at 3 calls."""
        b = Breaker("t", minimum_number_of_calls=10, sliding_window_size=3, clock=clock)
        run(b, "fff")
        assert b.current_state == OPEN

    def test_time_window_forgets_calls_older_than_its_size(self, clock: ManualClock) -> None:
        """Failures from 10 s ago are out of a 10-second window."""
        b = Breaker(
            "t",
            failure_rate_threshold=0.5,
            minimum_number_of_calls=4,
            sliding_window_type="time",
            sliding_window_size=10,
            clock=clock,
        )
        run(b, "fff")
        clock.advance(10)
        run(b, "sss")
        assert b.current_state == CLOSED
        assert b.stats()["window"]["calls"] == 3
        run(b, "ff")  # 2 failures / 5 calls = 40%
        assert b.current_state == CLOSED
        run(b, "f")  # 3/6 = 50%
        assert b.current_state == OPEN

    def test_time_window_keeps_calls_within_its_size(self, clock: ManualClock) -> None:
        """Failures 5 s ago still count in a 10-second window."""
        b = Breaker(
            "t",
            minimum_number_of_calls=4,
            sliding_window_type="time",
            sliding_window_size=10,
            clock=clock,
        )
        run(b, "ff")
        clock.advance(5)
        run(b, "sf")
        assert b.current_state == OPEN


class TestSlowCalls:
    def test_slow_call_rate_opens(self, clock: ManualClock) -> None:
        """Calls of 2 s or more are slow; 3 of 4 slow reaches a 0.75 threshold."""
        b = Breaker(
            "t",
            failure_rate_threshold=None,
            slow_call_rate_threshold=0.75,
            slow_call_duration=timedelta(seconds=2),
            minimum_number_of_calls=4,
            clock=clock,
        )

        def slow() -> None:
            clock.advance(2)

        for func in (slow, ok, slow):
            b.call(func)
        assert b.current_state == CLOSED
        b.call(slow)
        assert b.current_state == OPEN
        assert b.stats()["slow_calls"] == 3


class TestHalfOpen:
    def test_open_refuses_with_the_time_left_as_retry_after(self, clock: ManualClock) -> None:
        """Open for 30 s; 12 s later a call is refused with Retry-After 18."""
        b = Breaker("t", fail_max=1, wait_in_open=30, clock=clock)
        run(b, "f")
        clock.advance(12)
        with pytest.raises(CircuitBreakerOpen) as info:
            b.call(ok)
        assert info.value.retry_after == pytest.approx(18)
        assert ("Retry-After", "18") in info.value.headers
        assert info.value.status == 503
        assert info.value.problem_type == "temporary-reduced-capacity"

    def test_exactly_the_permitted_probes_pass(self, clock: ManualClock) -> None:
        """Two probes permitted: the third concurrent call is refused until they answer."""
        b = Breaker("t", fail_max=1, permitted_calls_in_half_open=2, wait_in_open=5, clock=clock)
        run(b, "f")
        clock.advance(5)
        first, second, third = b.acquire(), b.acquire(), b.acquire()
        assert isinstance(third, float)
        assert not isinstance(first, float)
        assert not isinstance(second, float)
        assert b.current_state == HALF_OPEN
        b.record(first, False)
        assert b.current_state == HALF_OPEN
        b.record(second, False)
        assert b.current_state == CLOSED

    def test_failure_rate_over_probes_decides(self, clock: ManualClock) -> None:
        """4 probes, 50%: one failure of four closes, two reopen."""
        b = Breaker(
            "t",
            failure_rate_threshold=0.5,
            minimum_number_of_calls=1,
            permitted_calls_in_half_open=4,
            wait_in_open=1,
            clock=clock,
        )
        run(b, "f")
        clock.advance(1)
        assert run(b, "fsss") == ["failed", "ok", "ok", "ok"]
        assert b.current_state == CLOSED
        b.open()
        clock.advance(1)
        assert run(b, "ff") == ["failed", "failed"]
        assert b.current_state == OPEN

    def test_an_ignored_probe_frees_its_permit(self, clock: ManualClock) -> None:
        """A probe that ends in an excluded exception lets another probe go."""
        b = Breaker("t", fail_max=1, wait_in_open=1, exclude=[Business], clock=clock)
        run(b, "f")
        clock.advance(1)

        def business() -> None:
            raise Business

        with pytest.raises(Business):
            b.call(business)
        assert b.current_state == HALF_OPEN
        assert b.call(ok) == "ok"
        assert b.current_state == CLOSED

    def test_lost_probes_are_given_out_again(self, clock: ManualClock) -> None:
        """A probe that never answers does not wedge the breaker half-open."""
        b = Breaker("t", fail_max=1, wait_in_open=2, max_wait_in_half_open=5, clock=clock)
        run(b, "f")
        clock.advance(2)
        lost = b.acquire()
        assert not isinstance(lost, float)
        assert isinstance(b.acquire(), float)
        clock.advance(5)
        fresh = b.acquire()
        assert not isinstance(fresh, float)
        b.record(lost, False)  # from an older epoch: dropped
        assert b.current_state == HALF_OPEN
        b.record(fresh, False)
        assert b.current_state == CLOSED

    def test_outcome_of_a_call_admitted_before_opening_is_dropped(self, clock: ManualClock) -> None:
        """A success that ends after the breaker opened neither closes nor counts."""
        b = Breaker("t", fail_max=1, clock=clock)
        early = b.acquire()
        run(b, "f")
        assert b.current_state == OPEN
        b.record(early, False)
        assert b.current_state == OPEN
        assert b.stale == 1


class TestManualAndEvents:
    def test_manual_open_close_reset(self, clock: ManualClock) -> None:
        """open() refuses, close() admits, reset() zeroes the counters."""
        b = Breaker("t", clock=clock)
        b.open()
        assert run(b, "s") == ["refused"]
        b.close()
        assert run(b, "s") == ["ok"]
        b.half_open()
        assert b.current_state == HALF_OPEN
        b.reset()
        stats = b.stats()
        assert stats["state"] == CLOSED
        assert stats["calls"] == stats["rejected"] == 0

    def test_transitions_are_logged_counted_and_told_to_listeners(
        self, clock: ManualClock, logs: list[dict[str, Any]]
    ) -> None:
        """opened, half_open, closed: one log line each, counted, pybreaker listeners told."""
        changes: list[tuple[str, str]] = []

        class Listener(pybreaker.CircuitBreakerListener):
            def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
                changes.append((old_state.name, new_state.name))

        b = Breaker("pay", fail_max=2, wait_in_open=3, listeners=[Listener()], clock=clock)
        run(b, "ff")
        clock.advance(3)
        run(b, "s")
        assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
        events = [e["event"] for e in logs if e["event"].startswith("seawall.breaker.")]
        assert events == [
            "seawall.breaker.opened",
            "seawall.breaker.half_open",
            "seawall.breaker.closed",
        ]
        opened = next(e for e in logs if e["event"] == "seawall.breaker.opened")
        assert opened["breaker"] == "pay"
        assert opened["reason"] == "consecutive_failures"
        assert b.stats()["transitions"] == {"opened": 1, "half_open": 1, "closed": 1}

    def test_a_failing_listener_does_not_break_calls(
        self, clock: ManualClock, logs: list[dict[str, Any]]
    ) -> None:
        """A listener that raises is logged; the breaker still opens."""

        class Bad(pybreaker.CircuitBreakerListener):
            def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
                raise RuntimeError("listener bug")

        b = Breaker("t", fail_max=1, listeners=[Bad()], clock=clock)
        run(b, "f")
        assert b.current_state == OPEN
        assert any(e["event"] == "seawall.breaker.listener_failed" for e in logs)


class TestPybreakerInterface:
    def test_is_a_pybreaker_breaker(self, clock: ManualClock) -> None:
        """Code written for pybreaker works: isinstance, its error, decorator, calling()."""
        b = Breaker("t", fail_max=1, clock=clock)
        assert isinstance(b, pybreaker.CircuitBreaker)

        @b
        def guarded() -> str:
            return "ok"

        assert guarded() == "ok"
        with pytest.raises(Down), b.calling():
            fail()
        with pytest.raises(pybreaker.CircuitBreakerError):
            guarded()
        assert b.state.name == OPEN
        assert b.current_state == OPEN

    def test_pybreaker_listeners_hear_every_call(self, clock: ManualClock) -> None:
        """before_call, success and failure reach a pybreaker listener, sync and async."""
        heard: list[Any] = []

        class Listener(pybreaker.CircuitBreakerListener):
            def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
                heard.append(("before", func.__name__, args))

            def success(self, cb: Any) -> None:
                heard.append(("success", cb.name))

            def failure(self, cb: Any, exc: BaseException) -> None:
                heard.append(("failure", type(exc).__name__))

        b = Breaker("heard", fail_max=5, clock=clock)
        b.add_listener(Listener())
        b.call(ok)
        with pytest.raises(Down):
            b.call(fail)
        excluded = Breaker("ex", fail_max=5, exclude=[Business], listeners=b.listeners)

        def business(n: int) -> None:
            raise Business

        with pytest.raises(Business):
            excluded.call(business, 7)  # excluded: neither a success nor a failure

        async def aok() -> str:
            return "ok"

        asyncio.run(b.call_async(aok))
        with b.calling():
            pass
        assert heard == [
            ("before", "ok", ()),
            ("success", "heard"),
            ("before", "fail", ()),
            ("failure", "Down"),
            ("before", "business", (7,)),
            ("before", "aok", ()),
            ("success", "heard"),
            ("success", "heard"),
        ]
        b.remove_listener(b.listeners[0])
        b.call(ok)
        assert len(heard) == 8

    def test_excluded_exceptions_are_not_failures(self, clock: ManualClock) -> None:
        """pybreaker's exclusions (types and predicates) are honoured."""
        b = Breaker("t", fail_max=1, exclude=[Business, lambda e: "benign" in str(e)], clock=clock)

        def business() -> None:
            raise Business

        def benign() -> None:
            raise Down("benign")

        with pytest.raises(Business):
            b.call(business)
        with pytest.raises(Down):
            b.call(benign)
        assert b.current_state == CLOSED
        assert b.stats()["ignored"] == 2

    def test_call_async_on_asyncio(self, clock: ManualClock) -> None:
        """call_async and the decorator work on asyncio (pybreaker's need Tornado)."""
        b = Breaker("t", fail_max=1, clock=clock)

        @b
        async def boom() -> None:
            raise Down

        async def main() -> None:
            with pytest.raises(Down):
                await boom()
            with pytest.raises(CircuitOpen):
                await b.call_async(asyncio.sleep, 0)

        asyncio.run(main())

    def test_async_context_manager(self, clock: ManualClock) -> None:
        """acalling() guards an async block."""
        b = Breaker("t", fail_max=1, clock=clock)

        async def main() -> None:
            async with b.acalling():
                await asyncio.sleep(0)
            with pytest.raises(Down):
                async with b.acalling():
                    raise Down
            with pytest.raises(CircuitOpen):
                async with b.acalling():
                    pass

        asyncio.run(main())


class TestConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "key"),
        [
            pytest.param({"failure_rate_threshold": 0}, "failure_rate_threshold", id="zero rate"),
            pytest.param({"failure_rate_threshold": 150}, "failure_rate_threshold", id="150%"),
            pytest.param({"sliding_window_type": "calls"}, "sliding_window_type", id="type"),
            pytest.param({"sliding_window_size": 0}, "sliding_window_size", id="size"),
            pytest.param({"minimum_number_of_calls": 0}, "minimum_number_of_calls", id="min"),
            pytest.param({"permitted_calls_in_half_open": 0}, "permitted_calls", id="probes"),
            pytest.param({"wait_in_open": -1}, "wait_in_open", id="wait"),
            pytest.param({"fail_max": 0}, "fail_max", id="fail_max"),
            pytest.param({"storage": "mongodb://x:secret@h"}, "storage", id="storage"),
        ],
    )
    def test_bad_settings_name_the_key(self, kwargs: dict[str, Any], key: str) -> None:
        """Each bad setting raises ConfigurationError naming it (never echoing a password)."""
        with pytest.raises(ConfigurationError, match=key) as info:
            Breaker("t", **kwargs)
        assert "secret" not in str(info.value)

    def test_percentages_and_fractions_agree(self) -> None:
        """50 and 0.5 are the same threshold."""
        assert (
            Breaker("a", failure_rate_threshold=50).config
            == Breaker("b", failure_rate_threshold=0.5).config
        )
