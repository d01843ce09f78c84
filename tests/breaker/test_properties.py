"""Hypothesis properties of the state machine, for any sequence of calls and clock moves."""

from __future__ import annotations

import contextlib
from typing import Any

import pybreaker
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall import CircuitOpen
from seawall._breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from seawall.testing import ManualClock

# One step: take a permit, give one back (ok / failed / ignored), or let time pass.
steps = st.lists(
    st.one_of(
        st.just(("acquire",)),
        st.tuples(st.just("record"), st.sampled_from([False, True, None]), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.floats(0.0, 40.0)),
    ),
    max_size=120,
)

configs = st.fixed_dictionaries(
    {
        "minimum_number_of_calls": st.integers(1, 12),
        "sliding_window_size": st.integers(1, 15),
        "sliding_window_type": st.sampled_from(["count", "time"]),
        "permitted_calls_in_half_open": st.integers(1, 5),
        "wait_in_open": st.floats(0.5, 30.0),
        "failure_rate_threshold": st.sampled_from([0.2, 0.5, 1.0]),
    }
)


class Recorder(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.changes.append((old_state.name, new_state.name))


def drive(
    config: dict[str, Any], script: list[tuple[Any, ...]], start_open: bool = False
) -> tuple[Breaker, Recorder, int]:
    """Run *script*; return the breaker, its transitions and the most probes seen out at once."""
    clock = ManualClock()
    recorder = Recorder()
    b = Breaker("p", clock=clock, listeners=[recorder], **config)
    if start_open:
        b.open()  # so that short scripts reach HALF_OPEN often
    held: list[Any] = []
    most_probes = 0
    for step in script:
        if step[0] == "acquire":
            permit = b.acquire()
            if not isinstance(permit, float):
                held.append(permit)
        elif step[0] == "record" and held:
            permit = held.pop(step[2] % len(held))
            b.record(permit, step[1])
        elif step[0] == "advance":
            clock.advance(step[1])
        epoch = b._epoch
        if epoch.state == HALF_OPEN:
            most_probes = max(most_probes, epoch.probes - epoch.done)
    return b, recorder, most_probes


@settings(max_examples=200, deadline=None)
@given(config=configs, script=steps)
def test_never_opens_before_the_minimum_number_of_calls(
    config: dict[str, Any], script: list[tuple[Any, ...]]
) -> None:
    """Every CLOSED -> OPEN happens with at least the minimum number of calls in the window.

    Checked at each opening (not only the first: the window starts empty
    again after every transition), against the window figures the stats API
    showed just before the outcome that tripped it.
    """
    clock = ManualClock()
    recorder = Recorder()
    b = Breaker("p", clock=clock, listeners=[recorder], **config)
    minimum = config["minimum_number_of_calls"]
    size = config["sliding_window_size"]
    count_window = config["sliding_window_type"] == "count"
    if count_window:
        minimum = min(minimum, size)
    held: list[Any] = []
    openings = 0
    for step in script:
        if step[0] == "acquire":
            permit = b.acquire()
            if not isinstance(permit, float):
                held.append(permit)
        elif step[0] == "record" and held:
            before = b.stats()
            b.record(held.pop(step[2] % len(held)), step[1])
            if b.transitions["opened"] > before["transitions"]["opened"] and (
                before["state"] == CLOSED
            ):
                openings += 1
                assert step[1] is not None  # an ignored outcome never decides
                calls = before["window"]["calls"] + 1
                assert (min(calls, size) if count_window else calls) >= minimum
        elif step[0] == "advance":
            clock.advance(step[1])
    # Every CLOSED -> OPEN was checked above (none slipped through another path).
    assert openings == recorder.changes.count((CLOSED, OPEN))


@settings(max_examples=100, deadline=None)
@given(config=configs, script=steps, start_open=st.booleans())
def test_no_open_to_closed_without_half_open(
    config: dict[str, Any], script: list[tuple[Any, ...]], start_open: bool
) -> None:
    """Every transition is one of closed->open, open->half-open, half-open->open|closed."""
    _, recorder, _ = drive(config, script, start_open)
    if start_open:
        del recorder.changes[0]  # the manual closed->open
    allowed = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}
    assert set(recorder.changes) <= allowed
    for (_, new), (old, _) in zip(recorder.changes, recorder.changes[1:], strict=False):
        assert new == old  # each change starts where the last one ended


@settings(max_examples=100, deadline=None)
@given(config=configs, script=steps, start_open=st.booleans())
def test_half_open_permits_never_exceed_the_configured_count(
    config: dict[str, Any], script: list[tuple[Any, ...]], start_open: bool
) -> None:
    """At no time are more probes out than permitted_calls_in_half_open."""
    _, _, most = drive(config, script, start_open)
    assert most <= config["permitted_calls_in_half_open"]


class Down(Exception):
    pass


def _ok() -> None:
    return None


def _fail() -> None:
    raise Down


@settings(max_examples=100, deadline=None)
@given(
    config=configs,
    script=st.lists(st.one_of(st.booleans(), st.floats(0.0, 20.0)), max_size=80),
)
def test_the_fast_call_path_decides_like_acquire_and_record(
    config: dict[str, Any], script: list[bool | float]
) -> None:
    """call() (with its closed-state shortcut) and acquire()/record() agree at every step."""
    clock = ManualClock()
    fast = Breaker("fast", clock=clock, **config)
    slow = Breaker("slow", clock=clock, **config)
    for step in script:
        if isinstance(step, float):
            clock.advance(step)
            continue
        # Down or the refusal: the outcomes are compared through the stats below.
        with contextlib.suppress(Down, CircuitOpen):
            fast.call(_fail if step else _ok)
        permit = slow.acquire()
        if not isinstance(permit, float):
            slow.record(permit, step)
        else:
            slow.rejected += 1
        a, b = fast.stats(), slow.stats()
        for key in ("state", "window", "transitions", "rejected", "failures", "successes"):
            assert a[key] == b[key], key
