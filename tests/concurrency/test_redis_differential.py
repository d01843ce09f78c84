"""Differential: slots shared through the real Redis answer as slots in this process do.

``LocalSlots`` and ``RedisSlots`` (a script, releases sent with the next
acquire) are two implementations of the same counting: a global limit, a
per-key limit, which of the two is full. Generated sequences of acquires and
releases, over keys and no key, must get the same answer from both, through
the sync client and through the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall._concurrency.local import LocalSlots
from seawall._concurrency.shared import RedisSlots, SlotIds
from tests.conftest import REDIS_URL, delete_keys, require_redis

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from(["a", "b", "c", None])),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=20)),
    ),
    min_size=1,
    max_size=40,
)


def _run(
    ops: list[tuple[str, Any]],
    local: LocalSlots,
    shared: RedisSlots,
    *,
    use_async: bool,
    send_releases: bool,
) -> None:
    ids = SlotIds()
    loop = asyncio.new_event_loop() if use_async else None
    held: list[tuple[str | None, list[str], str]] = []
    try:
        for step, (op, arg) in enumerate(ops):
            if op == "release":
                if not held:
                    continue
                key, keys, slot_id = held.pop(arg % len(held))
                local.release(key)
                # release_later, not release(): the flusher thread would race
                # the next acquire, which the answers here must not depend on.
                shared.release_later(keys, slot_id)
                if send_releases:
                    if loop is not None:
                        assert loop.run_until_complete(shared.asend_pending())
                    else:
                        assert shared.send_pending()
                continue
            keys, slot_id = shared.keys_for(arg), ids.new()
            want = local.try_acquire(arg)
            if loop is not None:
                got = loop.run_until_complete(shared.aacquire(keys, slot_id))
            else:
                got = shared.acquire(keys, slot_id)
            assert got == want, (step, op, arg, ops)
            if got == 1:
                held.append((arg, keys, slot_id))
    finally:
        if loop is not None:
            loop.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    max_in_flight=st.integers(min_value=1, max_value=4),
    per_key=st.one_of(st.none(), st.integers(min_value=1, max_value=3)),
    use_async=st.booleans(),
    send_releases=st.booleans(),
)
def test_redis_slots_answer_as_local_slots_do(
    ops: list[tuple[str, Any]],
    max_in_flight: int,
    per_key: int | None,
    use_async: bool,
    send_releases: bool,
) -> None:
    """Same limits, same acquires and releases: the same OK / global full / key full."""
    require_redis()
    prefix = f"seawall-diff-{uuid.uuid4().hex[:12]}"
    local = LocalSlots(max_in_flight, per_key, queue_size=0)
    shared = RedisSlots(
        REDIS_URL,
        key_prefix=prefix,
        max_in_flight=max_in_flight,
        per_key=per_key,
        slot_ttl=600.0,
        timeout=2.0,
    )
    try:
        _run(ops, local, shared, use_async=use_async, send_releases=send_releases)
    finally:
        shared.close()
        delete_keys(REDIS_URL, prefix)
