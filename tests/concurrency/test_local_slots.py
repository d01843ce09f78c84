"""LocalSlots: the in-process counters and FIFO wait queue (no server, no sleep)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from seawall._concurrency.local import GLOBAL_FULL, KEY_FULL, OK, QUEUE_FULL, LocalSlots, Waiter


class TestAcquire:
    def test_global_limit(self) -> None:
        """The slot after the last free one is refused as GLOBAL_FULL."""
        pool = LocalSlots(2, None, 0)
        assert [pool.try_acquire("a") for _ in range(3)] == [OK, OK, GLOBAL_FULL]
        assert pool.in_flight == 2

    def test_per_key_limit_leaves_other_keys_alone(self) -> None:
        """A key at its own limit is refused as KEY_FULL; other keys still get slots."""
        pool = LocalSlots(10, 1, 0)
        assert pool.try_acquire("a") == OK
        assert pool.try_acquire("a") == KEY_FULL
        assert pool.try_acquire("b") == OK
        assert pool.per_key_counts == {"a": 1, "b": 1}

    def test_release_frees_and_forgets_idle_keys(self) -> None:
        """Releasing the last slot of a key deletes its counter (memory bounded by in-flight)."""
        pool = LocalSlots(1, 1, 0)
        pool.try_acquire("a")
        pool.release("a")
        assert pool.in_flight == 0
        assert pool.per_key_counts == {}
        assert pool.try_acquire("b") == OK

    def test_orphans_are_settled_by_the_next_caller(self) -> None:
        """A slot given back from a finalizer is freed on the next acquire, without a lock there."""
        pool = LocalSlots(1, None, 0)
        pool.try_acquire("a")
        pool.orphan("a")
        assert pool.in_flight == 1  # not yet settled
        assert pool.try_acquire("b") == OK


class TestQueue:
    def test_enqueue_takes_a_free_slot_at_once(self) -> None:
        pool = LocalSlots(1, None, 1)
        assert pool.enqueue("a", lambda: None) == OK

    def test_queue_is_bounded(self) -> None:
        """Past queue_size waiters, enqueue answers QUEUE_FULL."""
        pool = LocalSlots(1, None, 1)
        pool.try_acquire("x")
        assert isinstance(pool.enqueue("a", lambda: None), Waiter)
        assert pool.enqueue("b", lambda: None) == QUEUE_FULL

    def test_release_hands_the_slot_to_the_first_waiter(self) -> None:
        """A release goes to the queue in FIFO order, so newcomers cannot overtake it."""
        pool = LocalSlots(1, None, 5)
        pool.try_acquire("x")
        woken: list[str] = []
        first = pool.enqueue("a", lambda: woken.append("a"))
        second = pool.enqueue("b", lambda: woken.append("b"))
        assert isinstance(first, Waiter)
        assert isinstance(second, Waiter)
        pool.release("x")
        assert woken == ["a"]
        assert first.granted
        assert not second.granted
        assert pool.in_flight == 1
        assert pool.try_acquire("newcomer") == GLOBAL_FULL
        assert pool.leave(first) is True  # granted: it keeps the slot
        assert pool.leave(second) is False
        assert pool.waiting == 0

    def test_waiter_blocked_by_its_key_does_not_block_others(self) -> None:
        """The first *eligible* waiter gets the slot."""
        pool = LocalSlots(2, 1, 5)
        pool.try_acquire("a")
        pool.try_acquire("b")
        woken: list[str] = []
        pool.enqueue("a", lambda: woken.append("a"))  # still blocked by key a
        pool.enqueue("c", lambda: woken.append("c"))
        pool.release("b")
        assert woken == ["c"]

    def test_reset_wakes_waiters_without_granting(self) -> None:
        pool = LocalSlots(1, None, 5)
        pool.try_acquire("x")
        woken: list[str] = []
        waiter = pool.enqueue("a", lambda: woken.append("a"))
        assert isinstance(waiter, Waiter)
        pool.reset()
        assert woken == ["a"]
        assert not waiter.granted
        assert pool.in_flight == 0


ops = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "release", "enqueue", "leave", "orphan"]),
        st.sampled_from("abc"),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(max_in_flight=st.integers(1, 4), per_key=st.one_of(st.none(), st.integers(1, 3)), steps=ops)
def test_limits_are_never_exceeded(
    max_in_flight: int, per_key: int | None, steps: list[tuple[str, str]]
) -> None:
    """For any sequence of operations, counts stay within both limits and match the holders."""
    pool = LocalSlots(max_in_flight, per_key, 3)
    held: list[str] = []
    waiters: list[Waiter] = []
    for op, key in steps:
        if op == "acquire":
            if pool.try_acquire(key) == OK:
                held.append(key)
        elif op == "enqueue":
            got = pool.enqueue(key, lambda: None)
            if got == OK:
                held.append(key)
            elif isinstance(got, Waiter):
                waiters.append(got)
        elif op == "leave" and waiters:
            w = waiters.pop(0)
            if pool.leave(w):
                held.append(w.key)
        elif op in ("release", "orphan") and key in held:
            held.remove(key)
            (pool.release if op == "release" else pool.orphan)(key)
        # Granted waiters hold their slot from the moment of the grant.
        granted = [w for w in waiters if w.granted]
        for w in granted:
            waiters.remove(w)
            held.append(w.key)
        pool.try_acquire("\0probe") == OK and pool.release("\0probe")  # settles orphans
        granted = [w for w in waiters if w.granted]
        for w in granted:
            waiters.remove(w)
            held.append(w.key)
        assert pool.in_flight == len(held) <= max_in_flight
        if per_key is not None:
            for k in "abc":
                assert held.count(k) == pool.per_key_counts.get(k, 0) <= per_key
