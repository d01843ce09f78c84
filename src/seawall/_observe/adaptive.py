"""An adaptive concurrency limit that learns the service's latency (Gradient2).

After Netflix concurrency-limits' ``Gradient2Limit`` with its windowed
sampling (``WindowedLimit``), the algorithm Envoy's adaptive concurrency
filter also follows:

1. Requests' latencies are gathered in windows (at least *window* seconds
   and *min_samples* samples, at most *max_samples*); each window gives one
   *short* latency, its mean.
2. A *long* latency is an exponential average of the short ones over about
   *long_window* windows: the service's latency when it is not queueing.
   While the service queues (short > tolerance * long) the average moves ten
   times slower: plain Gradient2 lets a sustained overload teach it that
   slow is normal, and the limit drifts up with it (bufferbloat). A genuine
   change of the service's latency is still learned, over ten long windows.
3. ``gradient = clamp(tolerance * long / short, 0.5, 1.0)``: 1 while the
   service answers as fast as usual (up to *tolerance* times slower), less
   when requests queue. ``new = limit * gradient + queue``, smoothed:
   ``limit = limit * (1 - smoothing) + new * smoothing``, clamped to
   ``[min_limit, max_limit]``. With no queueing the limit grows by
   ``queue * smoothing`` per window; under queueing it shrinks to about
   ``tolerance`` times the concurrency the service handles at its usual latency.
4. The limit does not grow while the service is not using half of it
   (app-limited): an idle service would otherwise learn an absurd limit.
5. When latency falls back after long overload (``long > 2 * short``), the
   long average decays 5% per window so the limit recovers quickly.

Pure: the caller passes the time and the in-flight count; no clock, no lock.
"""

from __future__ import annotations

import math

__all__ = ["Gradient2"]


class Gradient2:
    """The Gradient2 limit: ``sample()`` latencies, read :attr:`limit`.

    Args:
        initial_limit: the limit before anything is learned.
        min_limit: never below this.
        max_limit: never above this.
        tolerance: how much slower than usual still counts as not queueing.
        smoothing: how fast the limit moves toward each window's estimate.
        window: minimum seconds per sampling window.
        min_samples: minimum samples per window.
        max_samples: a window closes at this many samples whatever its age.
        long_window: windows averaged into the long latency.
        queue: headroom added above the estimate (``None``: grows with the
            square root of the limit, at least 2).
    """

    __slots__ = (
        "_count",
        "_long_n",
        "_max_inflight",
        "_start",
        "_sum",
        "initial_limit",
        "limit",
        "long_rtt",
        "long_window",
        "max_limit",
        "max_samples",
        "min_limit",
        "min_samples",
        "queue",
        "short_rtt",
        "smoothing",
        "tolerance",
        "updates",
        "window",
    )

    def __init__(
        self,
        *,
        initial_limit: float = 20,
        min_limit: float = 4,
        max_limit: float = 1000,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        window: float = 1.0,
        min_samples: int = 10,
        max_samples: int = 1000,
        long_window: int = 100,
        queue: float | None = None,
    ) -> None:
        self.initial_limit = float(initial_limit)
        self.limit = float(initial_limit)
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.window = window
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.long_window = long_window
        self.queue = queue
        self.long_rtt = 0.0
        self.short_rtt = 0.0
        self.updates = 0
        self._long_n = 0
        self._start: float | None = None
        self._sum = 0.0
        self._count = 0
        self._max_inflight = 0

    def __repr__(self) -> str:
        return (
            f"Gradient2(limit={self.limit:.1f}, long_ms={self.long_rtt * 1000:.2f}, "
            f"short_ms={self.short_rtt * 1000:.2f})"
        )

    def sample(self, rtt: float, inflight: int, now: float) -> bool:
        """Record one request's latency (seconds) and the in-flight count it saw.

        Returns whether a window closed and the limit was updated.
        """
        if self._start is None:
            self._start = now
        self._sum += rtt
        self._count += 1
        if inflight > self._max_inflight:
            self._max_inflight = inflight
        count = self._count
        if count < self.max_samples and (
            count < self.min_samples or now - self._start < self.window
        ):
            return False
        short = self._sum / count
        inflight_max = self._max_inflight
        self._start, self._sum, self._count, self._max_inflight = now, 0.0, 0, 0
        self.update(short, inflight_max)
        return True

    def update(self, short: float, inflight: int) -> float:
        """Apply one window's mean latency *short*; return the new limit."""
        self.updates += 1
        self.short_rtt = short
        if short <= 0:
            return self.limit
        # Warm-up: the fastest of the first windows (the limit may be growing
        # into queueing while they pass), then an exponential average.
        if self._long_n < 10:
            self._long_n += 1
            self.long_rtt = short if self._long_n == 1 else min(self.long_rtt, short)
        else:
            factor = 2.0 / (self.long_window + 1)
            if short > self.tolerance * self.long_rtt:
                # Queueing: learn "slow is normal" ten times slower, or a
                # sustained overload drifts the baseline up and the limit with it.
                factor /= 10.0
            self.long_rtt += (short - self.long_rtt) * factor
        if self.long_rtt / short > 2.0:
            self.long_rtt *= 0.95
        limit = self.limit
        if inflight < limit / 2:
            return limit  # app-limited: no evidence for a higher limit
        gradient = max(0.5, min(1.0, self.tolerance * self.long_rtt / short))
        queue = self.queue if self.queue is not None else max(2.0, math.sqrt(limit))
        new = limit * gradient + queue
        new = limit * (1.0 - self.smoothing) + new * self.smoothing
        self.limit = max(self.min_limit, min(self.max_limit, new))
        return self.limit

    def reset(self) -> None:
        """Forget everything learned."""
        self.limit = self.initial_limit
        self.long_rtt = self.short_rtt = 0.0
        self.updates = self._long_n = 0
        self._start = None
        self._sum, self._count, self._max_inflight = 0.0, 0, 0
