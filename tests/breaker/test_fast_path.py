"""The closed-state fast path: quiet epochs, the lock-free admission, and their invariants.

A healthy breaker (CLOSED, a count window full of successes) lets a success
through with one flag read and no lock (``_Epoch.quiet``). These tests check
that the flag is only ever set when a success truly changes nothing, and that
a breaker taking the fast path behaves exactly as one that never does.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall import CircuitBreaker, Outcome
from seawall._breaker import CLOSED, OPEN, Breaker
from seawall._breaker.window import CountWindow
from seawall._core.request import RequestView
from seawall.testing import ManualClock
from tests.apps import client_for
from tests.breaker.apps import routed


def ok() -> str:
    return "ok"


class Down(RuntimeError):
    pass


def fail() -> None:
    raise Down("down")


def call(b: Breaker, func: Any) -> None:
    with contextlib.suppress(Down, Exception):
        b.call(func)


class TestQuietEpochs:
    def test_a_full_window_of_successes_is_quiet_until_a_failure(self, clock: ManualClock) -> None:
        """Quiet once the window is full of successes; a failure ends it; successes restore it."""
        b = Breaker("q", sliding_window_size=4, minimum_number_of_calls=4, clock=clock)
        for _ in range(3):
            call(b, ok)
            assert not b._epoch.quiet  # not full yet
        call(b, ok)
        assert b._epoch.quiet
        call(b, fail)
        assert not b._epoch.quiet
        assert b.current_state == CLOSED  # 1 of 4 failed: under the 50% threshold
        for _ in range(3):
            call(b, ok)
            assert not b._epoch.quiet  # the failure is still in the window
        call(b, ok)
        assert b._epoch.quiet

    def test_quiet_successes_are_counted(self, clock: ManualClock) -> None:
        """The fast path still counts every success; the window stays full."""
        b = Breaker("q", sliding_window_size=4, minimum_number_of_calls=4, clock=clock)
        for _ in range(14):
            call(b, ok)
        stats = b.stats()
        assert stats["successes"] == stats["calls"] == b.calls == 14
        assert stats["window"]["calls"] == 4
        assert stats["window"]["failures"] == 0

    def test_calls_is_successes_failures_and_ignored(self, clock: ManualClock) -> None:
        """Refusals are not calls; ignored outcomes are."""
        b = Breaker("q", fail_max=2, clock=clock)
        call(b, ok)
        permit = b.acquire()
        b.record(permit, None)
        call(b, fail)
        call(b, fail)
        call(b, ok)  # refused: open
        assert (b.successes, b.failures, b.ignored, b.rejected) == (1, 2, 1, 1)
        assert b.calls == 4
        b.reset()
        assert b.calls == 0

    def test_a_transition_during_a_call_makes_its_quiet_permit_stale(
        self, clock: ManualClock
    ) -> None:
        """Admitted while quiet, the breaker opens before the call ends: the success is dropped."""
        b = Breaker("q", sliding_window_size=2, minimum_number_of_calls=2, clock=clock)
        call(b, ok)
        call(b, ok)
        assert b._epoch.quiet
        b.call(b.open)
        assert b.current_state == OPEN
        assert b.stale == 1
        assert b.successes == 3

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"sliding_window_type": "time", "sliding_window_size": 2},
            {"slow_call_rate_threshold": 0.5, "slow_call_duration": 10.0},
        ],
    )
    def test_timed_breakers_are_never_quiet(
        self, clock: ManualClock, kwargs: dict[str, Any]
    ) -> None:
        """A time window or a slow-call threshold needs every outcome recorded."""
        b = Breaker("q", minimum_number_of_calls=2, clock=clock, **kwargs)
        for _ in range(250):
            call(b, ok)
        assert not b._epoch.quiet

    def test_closed_epoch_follows_the_state(self, clock: ManualClock) -> None:
        """The lock-free admission is the current epoch while closed, else nothing."""
        b = Breaker("q", wait_in_open=5, clock=clock)
        assert b._closed_epoch is b._epoch
        b.open()
        assert b._closed_epoch is None
        clock.advance(5)
        assert b.acquire() is b._epoch  # a half-open probe
        assert b._closed_epoch is None
        b.close()
        assert b._closed_epoch is b._epoch

    def test_a_shared_breaker_has_no_lock_free_admission(self) -> None:
        """With Redis, every permit is decided there while it answers."""
        b = Breaker("q", storage="redis://127.0.0.1:1/0")
        assert b._closed_epoch is None


class TestLayer:
    def _request(self, path: str = "/") -> RequestView:
        return RequestView(method="GET", path=path)

    def _ok(self) -> Outcome:
        return Outcome(status=200, exception=None, duration=0.001, ttfb=0.001, route="/")

    def test_a_request_admitted_before_a_transition_is_dropped(self, clock: ManualClock) -> None:
        """The layer's inline success honours the epoch, as Breaker.call does."""
        layer = CircuitBreaker(sliding_window_size=2, minimum_number_of_calls=2, clock=clock)
        for _ in range(2):
            request = self._request()
            assert layer.on_request(request) is None
            layer.on_complete(request, self._ok())
        found = layer.breaker()
        assert found._epoch.quiet
        request = self._request()
        layer.on_request(request)
        layer.open()
        layer.on_complete(request, self._ok())
        assert found.stale == 1
        assert found.current_state == OPEN
        assert found.successes == 3

    def test_quiet_successes_reach_listeners(self, clock: ManualClock) -> None:
        """The inline success tells pybreaker listeners, as _succeeded does."""
        seen: list[str] = []

        class Listener:
            def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
                pass

            def success(self, cb: Any) -> None:
                seen.append("success")

            def failure(self, cb: Any, exc: Any) -> None:
                seen.append("failure")

            def state_change(self, cb: Any, old: Any, new: Any) -> None:
                pass

        layer = CircuitBreaker(sliding_window_size=2, minimum_number_of_calls=2, clock=clock)
        layer.breaker().add_listener(Listener())  # type: ignore[arg-type]
        for _ in range(5):
            request = self._request()
            layer.on_request(request)
            layer.on_complete(request, self._ok())
        assert layer.breaker()._epoch.quiet
        assert seen == ["success"] * 5

    def test_adapter_routes_beyond_max_routes_share_other(
        self, interface: str, clock: ManualClock
    ) -> None:
        """request.route set before the app: known templates are read directly, new ones bounded."""

        class Adapter:
            name = "adapter"
            order = 150

            def on_request(self, request: Any) -> None:
                request.route = "/t" + request.path

        layer = CircuitBreaker(per="route", max_routes=2, fail_max=1, clock=clock)
        client = client_for(routed(interface, [layer, Adapter()]))
        for path in ("/a", "/b", "/c", "/d", "/a", "/c"):
            assert client.get(path).status_code == 200
        assert set(layer.stats()["breakers"]) == {"/t/a", "/t/b", "<other>"}
        assert layer.stats()["breakers"]["<other>"]["successes"] == 3
        assert layer.stats()["breakers"]["/t/a"]["successes"] == 2


# One step: take a permit; give one back (ok / failed / ignored) by record();
# give one back as an untimed success by the fast path; a whole call; a manual
# transition; or let time pass.
_outcome = st.tuples(st.just("call"), st.sampled_from([False, False, False, True]))
steps = st.lists(
    st.one_of(
        _outcome,
        _outcome,
        st.just(("acquire",)),
        st.tuples(st.just("succeed"), st.integers(0, 50)),
        st.tuples(st.just("record"), st.sampled_from([False, True, None]), st.integers(0, 50)),
        st.tuples(st.just("manual"), st.sampled_from(["open", "close", "half_open"])),
        st.tuples(st.just("advance"), st.floats(0.0, 40.0)),
    ),
    min_size=10,
    max_size=150,
)

configs = st.fixed_dictionaries(
    {
        "minimum_number_of_calls": st.integers(1, 6),
        "sliding_window_size": st.integers(1, 6),
        "sliding_window_type": st.sampled_from(["count", "count", "time"]),
        "permitted_calls_in_half_open": st.integers(1, 3),
        "wait_in_open": st.floats(0.5, 30.0),
        "failure_rate_threshold": st.sampled_from([0.2, 0.5, 1.0]),
        "fail_max": st.sampled_from([None, None, 2]),
    }
)


def _step(b: Breaker, held: list[Any], step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "acquire":
        permit = b.acquire()
        if not isinstance(permit, float):
            held.append(permit)
    elif kind == "record" and held:
        b.record(held.pop(step[2] % len(held)), step[1])
    elif kind == "succeed" and held:
        permit = held.pop(step[1] % len(held))
        if b._needs_time:
            b.record(permit, False, 0.0)
        else:
            b._succeeded(permit)  # what the layer does with an untimed success
    elif kind == "call":
        call(b, fail if step[1] else ok)
    elif kind == "manual":
        getattr(b, step[1])()
    elif kind == "advance":
        b._clock.advance(step[1])  # type: ignore[attr-defined]


def _check_invariants(b: Breaker, held: list[Any]) -> None:
    epoch = b._epoch
    assert b._closed_epoch is (epoch if epoch.state == CLOSED else None)
    if epoch.quiet:
        window = b._window
        assert isinstance(window, CountWindow)
        assert not b._needs_time
        assert epoch.state == CLOSED
        assert window.calls == window.size
        assert window.failures == 0
        assert window.slow == 0
        assert b._consecutive == 0
    for permit in held:
        if permit is not epoch:
            assert not permit.quiet  # stale permits never take the fast path


@settings(max_examples=300, deadline=None)
@given(config=configs, script=steps)
def test_the_fast_path_changes_nothing(
    config: dict[str, Any], script: list[tuple[Any, ...]]
) -> None:
    """A breaker with quiet epochs and one without answer every step alike.

    The reference never sets ``quiet`` (every success takes the lock and
    moves the window's cursor): the states, window figures, counters and
    stale counts must stay identical, step by step.
    """
    fast = Breaker("fast", clock=ManualClock(), **config)
    slow = Breaker("slow", clock=ManualClock(), **config)
    slow._settles = False
    held_fast: list[Any] = []
    held_slow: list[Any] = []
    for step in script:
        _step(fast, held_fast, step)
        _step(slow, held_slow, step)
        _check_invariants(fast, held_fast)
        assert not slow._epoch.quiet
        a, b = fast.stats(), slow.stats()
        assert a == b, step
        assert fast.stale == slow.stale
        assert [type(p) for p in held_fast] == [type(p) for p in held_slow]
