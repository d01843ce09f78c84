"""Differential: a breaker shared through the real Redis decides as the local engine does.

The local engine and the Redis scripts are two implementations of the same
state machine (count and time windows, minimum calls, failure and slow-call
rates, consecutive failures, half-open probes, epochs that drop late
outcomes). Generated settings and scripts of acquires, outcomes given back
out of order (failed, succeeded, ignored; slow or not) and clock moves run
against both, with one :class:`ManualClock`, through the sync client or the
event loop; every refusal, state and transition must be the same.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall._breaker import Breaker
from seawall.testing import ManualClock
from tests.breaker.test_properties import Recorder
from tests.conftest import REDIS_URL, delete_keys, require_redis

STEPS = st.lists(
    st.one_of(
        st.just(("acquire",)),
        st.tuples(
            st.just("record"),
            st.sampled_from([False, True, None]),  # failed; None: an ignored outcome
            st.integers(0, 50),  # which held permit
            st.sampled_from([0.1, 3.0]),  # duration: slow from 2 s
        ),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.4, 1.0, 2.5, 7.0, 40.0])),
    ),
    max_size=80,
)

CONFIGS = st.fixed_dictionaries(
    {
        "minimum_number_of_calls": st.integers(1, 8),
        "sliding_window_size": st.integers(1, 10),
        "sliding_window_type": st.sampled_from(["count", "time"]),
        "permitted_calls_in_half_open": st.integers(1, 4),
        "wait_in_open": st.sampled_from([1.0, 5.0, 30.0]),
        "failure_rate_threshold": st.sampled_from([None, 0.2, 0.5, 1.0]),
        "slow_call_rate_threshold": st.sampled_from([None, 0.5, 1.0]),
        "fail_max": st.sampled_from([None, 1, 3]),
    }
)


def _run(
    config: dict[str, Any],
    steps: list[tuple[Any, ...]],
    prefix: str,
    *,
    use_async: bool,
    start_open: bool,
) -> None:
    if config["failure_rate_threshold"] is None and config["fail_max"] is None:
        config = {**config, "failure_rate_threshold": 0.5}
    clock = ManualClock(1_000_000.0)
    listeners = Recorder(), Recorder()
    common = {**config, "slow_call_duration": 2.0, "clock": clock}
    local = Breaker("twin", listeners=[listeners[0]], **common)
    shared = Breaker(
        "twin",
        listeners=[listeners[1]],
        storage=REDIS_URL,
        key_prefix=prefix,
        storage_timeout=2.0,
        **common,
    )
    if start_open:
        # So that short scripts reach HALF_OPEN and its probes often.
        local.open()
        shared.open()
    loop = asyncio.new_event_loop() if use_async else None
    held: list[tuple[Any, Any]] = []
    try:
        for index, step in enumerate(steps):
            where = (index, step)
            if step[0] == "acquire":
                ours = local.acquire()
                if loop is not None:
                    theirs = loop.run_until_complete(shared.aacquire())
                else:
                    theirs = shared.acquire()
                assert isinstance(ours, float) == isinstance(theirs, float), where
                if isinstance(ours, float) and isinstance(theirs, float):
                    assert abs(ours - theirs) < 0.01, where
                else:
                    held.append((ours, theirs))
            elif step[0] == "record" and held:
                ours, theirs = held.pop(step[2] % len(held))
                local.record(ours, step[1], step[3])
                if loop is not None:
                    loop.run_until_complete(shared.arecord(theirs, step[1], step[3]))
                else:
                    shared.record(theirs, step[1], step[3])
            elif step[0] == "advance":
                clock.advance(step[1])
            assert shared.current_state == local.current_state, where
            assert listeners[1].changes == listeners[0].changes, where
        assert shared.shared is not None
        assert shared.shared.errors == 0
    finally:
        if loop is not None:
            loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, steps=STEPS, use_async=st.booleans(), start_open=st.booleans())
def test_the_shared_breaker_decides_as_the_local_one(
    config: dict[str, Any], steps: list[tuple[Any, ...]], use_async: bool, start_open: bool
) -> None:
    """Same settings, same script, one clock: the same refusals, states and transitions."""
    require_redis()
    prefix = f"seawall-diff-{uuid.uuid4().hex[:12]}"
    try:
        _run(config, steps, prefix, use_async=use_async, start_open=start_open)
    finally:
        delete_keys(REDIS_URL, prefix)
