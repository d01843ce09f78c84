"""Sliding windows of call outcomes: the last N calls, or the last N seconds.

Both keep running totals, so recording a call and reading the figures are
O(1) (the time window clears at most N stale buckets when time jumps, each
bucket once). Each outcome is a code: bit 0 failed, bit 1 slow.

Neither is thread-safe on its own: the breaker records under its lock.
"""

from __future__ import annotations

__all__ = ["FAILED", "SLOW", "CountWindow", "TimeWindow"]

FAILED = 1
SLOW = 2


class CountWindow:
    """The outcomes of the last *size* calls (resilience4j ``COUNT_BASED``)."""

    __slots__ = ("_pos", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = [-1] * size  # -1: an empty slot
        self._pos = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, code: int, now: float) -> None:
        """Add one outcome, evicting the oldest once the window is full."""
        ring = self._ring
        pos = self._pos
        old = ring[pos]
        if old >= 0:
            self.calls -= 1
            self.failures -= old & FAILED
            self.slow -= (old & SLOW) >> 1
        ring[pos] = code
        self._pos = pos + 1 if pos + 1 < self.size else 0
        self.calls += 1
        self.failures += code & FAILED
        self.slow += (code & SLOW) >> 1

    def totals(self, now: float) -> tuple[int, int, int]:
        """``(calls, failures, slow)`` in the window."""
        return self.calls, self.failures, self.slow

    def clear(self) -> None:
        """Forget every outcome."""
        self._ring = [-1] * self.size
        self._pos = 0
        self.calls = self.failures = self.slow = 0


class TimeWindow:
    """The outcomes of the last *size* seconds, in one-second buckets (``TIME_BASED``).

    As in resilience4j, the window is *size* whole-second buckets: a call is
    forgotten between ``size - 1`` and ``size`` seconds after it was recorded.
    """

    __slots__ = ("_calls", "_fail", "_last", "_sec", "_slow", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        """Forget every outcome."""
        n = self.size
        self._sec = [-1] * n
        self._calls = [0] * n
        self._fail = [0] * n
        self._slow = [0] * n
        self._last = -1
        self.calls = self.failures = self.slow = 0

    def _advance(self, sec: int) -> None:
        last = self._last
        if sec <= last:
            return
        n = self.size
        # Clear the buckets time skipped over, each at most once.
        start = max(last + 1, sec - n + 1)
        for s in range(start, sec + 1):
            i = s % n
            if self._sec[i] != s:
                self.calls -= self._calls[i]
                self.failures -= self._fail[i]
                self.slow -= self._slow[i]
                self._sec[i] = s
                self._calls[i] = self._fail[i] = self._slow[i] = 0
        self._last = sec

    def record(self, code: int, now: float) -> None:
        """Add one outcome at time *now* (seconds)."""
        sec = int(now)
        last = self._last
        if sec > last:
            self._advance(sec)
            last = sec
        # A clock that went back a little (another thread's older reading)
        # lands in the newest bucket rather than resurrect an expired one.
        i = (sec if sec < last else last) % self.size
        self._calls[i] += 1
        self.calls += 1
        if code:  # the common success touches two counters only
            failed = code & FAILED
            slow = (code & SLOW) >> 1
            self._fail[i] += failed
            self._slow[i] += slow
            self.failures += failed
            self.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """``(calls, failures, slow)`` in the last *size* seconds before *now*."""
        sec = int(now)
        if sec > self._last:
            self._advance(sec)
        return self.calls, self.failures, self.slow
