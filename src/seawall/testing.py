"""Helpers for testing seawall, and apps that use it, with pytest or unittest.

- :class:`ManualClock`: a clock that moves only when told, for any ``clock=``.
- :func:`reset`: forget every layer's state and statistics between tests.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["ManualClock", "reset"]


class ManualClock:
    """A clock that stands still until :meth:`advance` (thread-safe).

    Pass it as ``clock=`` to any layer; call it like ``time.monotonic``.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current time in seconds."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by *seconds*; return the new time."""
        if seconds < 0:
            msg = "a clock never goes back"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to *now* (not earlier than the current time)."""
        self.advance(now - self._now)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


def reset(app: Any) -> None:
    """Reset every layer of a wrapped *app* that can be reset (state and stats).

    *app* is what ``Seawall(...)`` returned, or a framework app carrying one.
    """
    from seawall.stats import find_seawall

    wall = find_seawall(app)
    for layer in wall.stack.layers:
        fn = getattr(layer, "reset", None)
        if callable(fn):
            fn()
