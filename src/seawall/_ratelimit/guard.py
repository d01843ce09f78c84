"""A small breaker around a remote storage.

Theory of operation
-------------------
``up``: every request calls the storage. The first failure (an error or a
timeout) turns the guard ``down`` and logs ``seawall.ratelimit.storage_down``
once. ``down``: requests do not call the storage at all (they apply the
``on_storage_error`` policy at no cost) except one probe per *probe*
seconds; a probe that succeeds turns the guard ``up`` again and logs
``seawall.ratelimit.storage_up`` once.

Invariants:

1. An outage costs at most one storage timeout per probe period (plus the
   calls already in flight when it began), never one per request.
2. One log line per transition, never one per request.
3. Recovery needs no restart: the first successful probe closes the guard,
   so service is back to shared limits within *probe* seconds of the
   storage returning.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from seawall._log import logger

__all__ = ["StorageGuard"]


class StorageGuard:
    """Decide whether to call the storage; learn from each call's outcome.

    Args:
        probe: seconds between probes while the storage is down.
        clock: ``time.monotonic``-like.
        storage: a redacted description of the storage, for the log lines.
    """

    __slots__ = ("_lock", "clock", "errors", "next_probe", "probe", "state", "storage", "trips")

    def __init__(self, *, probe: float, clock: Callable[[], float], storage: str) -> None:
        self.probe = probe
        self.clock = clock
        self.storage = storage
        self.state = "up"
        self.next_probe = 0.0
        #: Failed or timed-out storage calls.
        self.errors = 0
        #: Transitions to ``down``.
        self.trips = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether this request may call the storage (always when up; one probe per period)."""
        if self.state == "up":
            return True
        now = self.clock()
        with self._lock:
            if now >= self.next_probe:
                # This request is the probe: push the next one a period away so
                # the requests behind it keep using the fallback.
                self.next_probe = now + self.probe
                return True
        return False

    def succeeded(self) -> None:
        """A storage call succeeded: come back up if down."""
        if self.state == "up":
            return
        with self._lock:
            if self.state == "up":
                return
            self.state = "up"
        logger.info("seawall.ratelimit.storage_up", storage=self.storage)

    def failed(self, exc: BaseException) -> None:
        """A storage call failed or timed out: go down (once) until a probe succeeds."""
        self.errors += 1
        with self._lock:
            if self.state == "down":
                self.next_probe = max(self.next_probe, self.clock() + self.probe)
                return
            self.state = "down"
            self.trips += 1
            self.next_probe = self.clock() + self.probe
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        # warning, as ConcurrencyLimit's and the breakers' storage_down: the
        # service still answers (on_storage_error), degraded, not broken.
        logger.warning(
            "seawall.ratelimit.storage_down",
            storage=self.storage,
            error=type(cause).__name__,
            probe_every=self.probe,
        )

    def reset(self) -> None:
        """Forget the state (tests)."""
        with self._lock:
            self.state = "up"
            self.next_probe = 0.0
            self.errors = 0
            self.trips = 0
