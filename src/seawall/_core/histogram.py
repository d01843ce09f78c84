"""A bounded log-bucketed histogram and a sliding-window counter (pure, clock injected)."""

from __future__ import annotations

import math
from bisect import bisect_right as _bisect
from collections.abc import Callable

__all__ = ["LogHistogram", "SlidingCounter"]


class LogHistogram:
    """Durations in log-linear buckets: bounded memory, percentiles within ~5%.

    Each power of two is split in 8 equal buckets; values below ~7.6 µs
    share the first bucket and values above ~17 minutes the last, so a
    histogram is 216 counters whatever the number of samples.
    """

    __slots__ = ("_counts", "max", "total")

    _SUB = 8
    _MIN_EXP = -16  # 2**-17 s ~ 7.6 us
    _MAX_EXP = 10  # 2**10 s ~ 17 min
    _SIZE = (_MAX_EXP - _MIN_EXP + 1) * _SUB

    def __init__(self) -> None:
        self._counts = [0] * self._SIZE
        self.total = 0.0
        self.max = 0.0

    def record(self, value: float) -> None:
        """Add one sample (seconds)."""
        # The bucket is found by bisecting the precomputed lower bounds: one
        # C call, where computing it from frexp() took a dozen bytecodes.
        # Timing inlines this for its duration and ttfb (twice per request):
        # a change here goes there too.
        self._counts[_bisect(_BOUNDS, value)] += 1
        self.total += value
        if value > self.max:
            self.max = value

    @property
    def count(self) -> int:
        """How many samples were recorded (summed on read: record() stays lean)."""
        return sum(self._counts)

    @classmethod
    def _middle(cls, index: int) -> float:
        exp, sub = divmod(index, cls._SUB)
        return math.ldexp((sub + 8.5) / 16.0, exp + cls._MIN_EXP)

    def percentile(self, q: float) -> float:
        """The *q*-th percentile (0-100) in seconds; ``0.0`` when empty."""
        count = self.count
        if not count:
            return 0.0
        rank = max(1, math.ceil(count * q / 100.0))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                # Middle of the bucket, capped by the largest value seen.
                return min(self._middle(index), self.max)
        return self.max  # pragma: no cover

    def mean(self) -> float:
        """The mean of all samples in seconds; ``0.0`` when empty."""
        count = self.count
        return self.total / count if count else 0.0


def _lower_bounds() -> list[float]:
    # Bucket i (i >= 1) starts at (8 + i % 8) / 16 * 2**(i // 8 + _MIN_EXP):
    # the same split as math.frexp's mantissa in 8 steps. bisect_right over
    # these gives the bucket of a value (0 for anything below the second).
    sub = LogHistogram._SUB
    low = LogHistogram._MIN_EXP
    return [
        math.ldexp((sub + i % sub) / (2.0 * sub), i // sub + low)
        for i in range(1, LogHistogram._SIZE)
    ]


_BOUNDS = _lower_bounds()


class SlidingCounter:
    """Events in the last *window* seconds, in *buckets* time slices.

    Old slices are cleared lazily as time moves on: O(slices passed) per call,
    never a scan of past events.
    """

    __slots__ = ("_clock", "_counts", "_last", "_width", "buckets", "window")

    def __init__(
        self, window: float = 60.0, buckets: int = 60, clock: Callable[[], float] | None = None
    ) -> None:
        import time

        self.window = window
        self.buckets = buckets
        self._width = window / buckets
        self._counts = [0] * buckets
        self._clock = clock or time.monotonic
        self._last = int(self._clock() / self._width)

    def _advance(self) -> int:
        slot = int(self._clock() / self._width)
        gap = slot - self._last
        if gap > 0:
            for i in range(1, min(gap, self.buckets) + 1):
                self._counts[(self._last + i) % self.buckets] = 0
            self._last = slot
        return slot

    def add(self, n: int = 1) -> None:
        """Count *n* events now."""
        slot = self._advance()
        self._counts[slot % self.buckets] += n

    def total(self) -> int:
        """Events within the window."""
        self._advance()
        return sum(self._counts)

    def rate(self) -> float:
        """Events per second over the window."""
        return self.total() / self.window
