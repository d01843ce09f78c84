"""The bounded memory storage: strategies, truthful reset/retry, LRU bound, limits interop."""

from __future__ import annotations

import pytest
from limits import parse
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from seawall._ratelimit.memory import BoundedMemoryStorage
from seawall._ratelimit.quota import FIXED, GCRA, MOVING, SLIDING, parse_quotas
from seawall.testing import ManualClock

ALL = [
    pytest.param(FIXED, id="fixed-window"),
    pytest.param(MOVING, id="moving-window"),
    pytest.param(SLIDING, id="sliding-window-counter"),
    pytest.param(GCRA, id="gcra"),
]


def admitted(storage: BoundedMemoryStorage, strategy: int, quotas: tuple, key: str = "k") -> bool:
    allowed, _ = storage.hit_many(strategy, [key] * len(quotas), quotas, 1)
    return allowed


class TestStrategies:
    @pytest.mark.parametrize("strategy", ALL)
    def test_admits_the_limit_then_refuses(self, strategy: int) -> None:
        """A fresh key gets exactly `amount` requests, the next one is refused."""
        clock = ManualClock(1000.0)
        storage = BoundedMemoryStorage(clock=clock)
        quotas = parse_quotas("5/minute", "d")
        results = [admitted(storage, strategy, quotas) for _ in range(6)]
        assert results == [True] * 5 + [False]

    @pytest.mark.parametrize("strategy", ALL)
    def test_retry_is_truthful(self, strategy: int) -> None:
        """Waiting the reported retry time admits the request; a little less does not."""
        clock = ManualClock(1000.0)
        storage = BoundedMemoryStorage(clock=clock)
        quotas = parse_quotas("4/minute", "d")
        for _ in range(3):
            assert admitted(storage, strategy, quotas)
        clock.advance(13.0)
        assert admitted(storage, strategy, quotas)
        allowed, [(remaining, _, retry)] = storage.hit_many(strategy, ["k"], quotas, 1)
        assert not allowed
        assert remaining == 0
        assert 0 < retry <= 60
        clock.advance(retry - 0.5)
        assert not admitted(storage, strategy, quotas)
        clock.advance(0.5)
        assert admitted(storage, strategy, quotas)

    def test_fixed_window_resets_at_window_end(self) -> None:
        """A fixed window reports the time left in the window, not the full window."""
        clock = ManualClock(1000.0)
        storage = BoundedMemoryStorage(clock=clock)
        quotas = parse_quotas("2/minute", "d")
        storage.hit_many(FIXED, ["k"], quotas, 1)
        clock.advance(45)
        allowed, [(remaining, reset, retry)] = storage.hit_many(FIXED, ["k"], quotas, 1)
        assert (allowed, remaining, reset, retry) == (True, 0, 15.0, 0.0)
        allowed, [(remaining, reset, retry)] = storage.hit_many(FIXED, ["k"], quotas, 1)
        assert (allowed, remaining, reset, retry) == (False, 0, 15.0, 15.0)

    def test_moving_window_retry_is_the_oldest_entry_leaving(self) -> None:
        """Moving window: retry is when the oldest counted request leaves the window."""
        clock = ManualClock(1000.0)
        storage = BoundedMemoryStorage(clock=clock)
        quotas = parse_quotas("2/minute", "d")
        storage.hit_many(MOVING, ["k"], quotas, 1)
        clock.advance(10)
        storage.hit_many(MOVING, ["k"], quotas, 1)
        clock.advance(20)
        allowed, [(_, _, retry)] = storage.hit_many(MOVING, ["k"], quotas, 1)
        assert not allowed
        assert retry == pytest.approx(30.0)

    def test_gcra_spaces_requests_after_a_burst(self) -> None:
        """GCRA: a burst of `amount`, then one request per emission interval."""
        clock = ManualClock(1000.0)
        storage = BoundedMemoryStorage(clock=clock)
        quotas = parse_quotas("6/minute", "d")  # one per 10 s
        assert all(admitted(storage, GCRA, quotas) for _ in range(6))
        allowed, [(_, _, retry)] = storage.hit_many(GCRA, ["k"], quotas, 1)
        assert not allowed
        assert retry == pytest.approx(10.0)
        clock.advance(10.0)
        assert admitted(storage, GCRA, quotas)
        assert not admitted(storage, GCRA, quotas)

    @pytest.mark.parametrize("strategy", ALL)
    def test_all_or_nothing_across_limits(self, strategy: int) -> None:
        """A request refused by one limit uses none of the others."""
        clock = ManualClock(1000.0)
        storage = BoundedMemoryStorage(clock=clock)
        quotas = parse_quotas("2/second;10/minute", "d")
        keys = ["k1", "k2"]
        assert storage.hit_many(strategy, keys, quotas, 1)[0]
        assert storage.hit_many(strategy, keys, quotas, 1)[0]
        allowed, stats = storage.hit_many(strategy, keys, quotas, 1)
        assert not allowed
        assert stats[1][0] == 8  # the minute quota still has 8 left: nothing consumed
        assert stats[0][2] > 0
        assert stats[1][2] == 0.0

    @pytest.mark.parametrize("strategy", ALL)
    def test_cost_larger_than_the_limit_never_passes(self, strategy: int) -> None:
        """A cost above the limit is refused, even on a fresh key."""
        storage = BoundedMemoryStorage(clock=ManualClock())
        quotas = parse_quotas("3/minute", "d")
        allowed, [(remaining, _, retry)] = storage.hit_many(strategy, ["k"], quotas, 4)
        assert not allowed
        assert remaining == 3
        assert retry > 0

    @pytest.mark.parametrize("strategy", ALL)
    def test_cost_counts_units(self, strategy: int) -> None:
        """A request of cost 3 uses three units."""
        storage = BoundedMemoryStorage(clock=ManualClock())
        quotas = parse_quotas("10/minute", "d")
        _, [(remaining, _, _)] = storage.hit_many(strategy, ["k"], quotas, 3)
        assert remaining == 7


class TestBound:
    def test_lru_eviction_is_bounded_and_counted(self) -> None:
        """Past max_keys the least recently used key goes, and the eviction is counted."""
        clock = ManualClock()
        storage = BoundedMemoryStorage(max_keys=3, clock=clock)
        quotas = parse_quotas("1/minute", "d")
        for key in ("a", "b", "c"):
            assert admitted(storage, FIXED, quotas, key)
        assert not admitted(storage, FIXED, quotas, "a")  # touch a: b is now the oldest
        assert admitted(storage, FIXED, quotas, "d")
        assert len(storage) == 3
        assert storage.evictions == 1
        assert admitted(storage, FIXED, quotas, "b")  # b was evicted: it starts afresh
        assert not admitted(storage, FIXED, quotas, "a")

    def test_expired_entries_are_dropped_without_eviction(self) -> None:
        """Expired keys at the LRU end are removed on insertion, not counted as evictions."""
        clock = ManualClock()
        storage = BoundedMemoryStorage(max_keys=3, clock=clock)
        quotas = parse_quotas("1/second", "d")
        for key in ("a", "b", "c"):
            admitted(storage, FIXED, quotas, key)
        clock.advance(2)
        admitted(storage, FIXED, quotas, "d")
        assert len(storage) == 1
        assert storage.evictions == 0

    def test_a_renewed_window_counts_as_the_most_recent_use(self) -> None:
        """A key whose window expired and restarts moves to the recent end (LRU stays LRU)."""
        clock = ManualClock()
        storage = BoundedMemoryStorage(max_keys=3, clock=clock)
        short, long = parse_quotas("1/second", "s"), parse_quotas("1/hour", "l")
        assert admitted(storage, FIXED, long, "b")
        assert admitted(storage, FIXED, short, "a")
        assert admitted(storage, FIXED, long, "c")
        clock.advance(2)
        assert admitted(storage, FIXED, short, "a")  # a new window: a is the newest use
        assert storage.evictions == 0  # renewing a key frees no room and takes none
        assert admitted(storage, FIXED, long, "d")  # full: the oldest use, b, goes
        assert storage.evictions == 1
        assert len(storage) == 3
        assert not admitted(storage, FIXED, long, "c")
        assert not admitted(storage, FIXED, short, "a")  # a kept its count
        assert admitted(storage, FIXED, long, "b")  # b was evicted: it starts afresh

    def test_many_keys_stay_within_bound(self) -> None:
        """A flood of distinct keys never grows the storage beyond max_keys."""
        storage = BoundedMemoryStorage(max_keys=1000, clock=ManualClock())
        quotas = parse_quotas("5/minute", "d")
        for i in range(5000):
            storage.hit_many(MOVING, [f"k{i}"], quotas, 1)
        assert len(storage) == 1000
        assert storage.evictions == 4000


class TestLimitsInterop:
    def test_fixed_window_strategy_of_limits_runs_on_it(self) -> None:
        """limits' own FixedWindowRateLimiter works on the bounded storage."""
        limiter = FixedWindowRateLimiter(BoundedMemoryStorage())
        item = parse("2/minute")
        assert [limiter.hit(item, "x") for _ in range(3)] == [True, True, False]
        stats = limiter.get_window_stats(item, "x")
        assert stats.remaining == 0
        assert 0 < stats.reset_time - __import__("time").time() <= 60

    def test_moving_window_strategy_of_limits_runs_on_it(self) -> None:
        """limits' own MovingWindowRateLimiter works on the bounded storage."""
        limiter = MovingWindowRateLimiter(BoundedMemoryStorage())
        item = parse("2/minute")
        assert [limiter.hit(item, "x") for _ in range(3)] == [True, True, False]
        assert limiter.get_window_stats(item, "x").remaining == 0
        limiter.clear(item, "x")
        assert limiter.hit(item, "x")

    def test_counter_interface(self) -> None:
        """incr/decr/get/get_expiry/clear/reset behave like limits' MemoryStorage."""
        clock = ManualClock(50.0)
        storage = BoundedMemoryStorage(clock=clock)
        assert storage.incr("c", 10) == 1
        assert storage.incr("c", 10, amount=2) == 3
        assert storage.decr("c") == 2
        assert storage.get("c") == 2
        assert storage.get_expiry("c") == 60.0
        clock.advance(10)
        assert storage.get("c") == 0
        assert storage.decr("c") == 0
        storage.incr("d", 10)
        storage.clear("d")
        assert storage.get("d") == 0
        storage.incr("e", 10)
        assert storage.reset() == 1
        assert storage.check()
