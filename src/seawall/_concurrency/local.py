"""In-process concurrency slots with a bounded FIFO wait queue.

Theory of operation:

1. A request needs one global slot and, when ``per_key`` is set, one slot of
   its key. Both are counted under one ``threading.Lock`` (WSGI servers run
   requests on many threads; the lock is held for a few dict operations).
2. A request that finds no slot may wait (``max_wait``) in one FIFO queue
   of at most ``queue_size`` waiters. A release never frees a slot a waiter
   could use: it *hands it over* to the first eligible waiter under the
   lock, so a newcomer can never overtake the queue, and the counts never
   exceed the limits, even for an instant.
3. Waking is the waiter's own business (a ``threading.Event`` on a WSGI
   thread, an ``asyncio.Event`` set through ``call_soon_threadsafe`` on the
   event loop): the pool only calls the ``wake`` callable it was given.
4. A waiter that times out takes the lock and leaves the queue, unless it
   was granted a slot in the meantime, in which case it keeps it.
5. Slots whose release was lost (a request torn down before
   ``on_complete`` ran) come back through :meth:`LocalSlots.orphan`, which
   only appends to a deque: it may run in a finalizer, where taking the
   lock could deadlock. The next acquire or release settles them.

Invariants: ``0 <= in_flight <= max_in_flight``; every per-key count is
``<= per_key`` and ``> 0`` (zero counts are deleted, so memory is bounded
by the requests in flight, not by the keys ever seen). A request whose key
is ``None`` counts only against the global limit.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["GLOBAL_FULL", "KEY_FULL", "OK", "QUEUE_FULL", "LocalSlots", "Waiter"]

#: Outcomes of an acquire attempt (ints: cheap to compare on the hot path,
#: and the same codes the Redis script answers).
OK: Final = 1
GLOBAL_FULL: Final = 0
KEY_FULL: Final = -1
QUEUE_FULL: Final = -2


class Waiter:
    """One request waiting for a slot: its key, and whether it got one."""

    __slots__ = ("granted", "key", "wake")

    def __init__(self, key: str | None, wake: Callable[[], object]) -> None:
        self.key = key
        self.wake = wake
        self.granted = False


class LocalSlots:
    """Slots counted in this process: *max_in_flight* in all, *per_key* per key."""

    __slots__ = (
        "_lock",
        "_orphans",
        "_queue",
        "in_flight",
        "max_in_flight",
        "per_key",
        "per_key_counts",
        "queue_size",
    )

    def __init__(self, max_in_flight: int, per_key: int | None, queue_size: int) -> None:
        self.max_in_flight = max_in_flight
        self.per_key = per_key
        self.queue_size = queue_size
        self.in_flight = 0
        self.per_key_counts: dict[str, int] = {}
        self._queue: deque[Waiter] = deque()
        self._orphans: deque[str | None] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many requests are queued."""
        return len(self._queue)

    def _take(self, key: str | None) -> int:
        # Caller holds the lock.
        if self.in_flight >= self.max_in_flight:
            return GLOBAL_FULL
        if self.per_key is not None and key is not None:
            n = self.per_key_counts.get(key, 0)
            if n >= self.per_key:
                return KEY_FULL
            self.per_key_counts[key] = n + 1
        self.in_flight += 1
        return OK

    def try_acquire(self, key: str | None) -> int:
        """Take a slot for *key* if one is free; return :data:`OK` or why not."""
        with self._lock:
            if self._orphans:
                self._settle_orphans()
            if self.per_key is None and self.in_flight < self.max_in_flight:
                # The hot path (global limit only), without the _take() call.
                self.in_flight += 1
                return OK
            return self._take(key)

    def enqueue(self, key: str | None, wake: Callable[[], object]) -> Waiter | int:
        """Take a slot now, or join the queue; :data:`OK`, a waiter, or :data:`QUEUE_FULL`."""
        with self._lock:
            if self._orphans:
                self._settle_orphans()
            got = self._take(key)
            if got == OK:
                return OK
            if len(self._queue) >= self.queue_size:
                return QUEUE_FULL
            waiter = Waiter(key, wake)
            self._queue.append(waiter)
            return waiter

    def leave(self, waiter: Waiter) -> bool:
        """Give up waiting; return whether the waiter was granted a slot after all."""
        with self._lock:
            if waiter.granted:
                return True
            # Not granted means still queued: granting removes under this lock.
            self._queue.remove(waiter)
            return False

    def release(self, key: str | None) -> None:
        """Give back the slot *key* held; hand it over to a waiter if one can use it."""
        with self._lock:
            if self.per_key is None:
                self.in_flight -= 1
            else:
                self._free(key)
            if self._orphans:
                self._settle_orphans()
            if self._queue:
                self._grant_waiters()

    def orphan(self, key: str | None) -> None:
        """Release *key*'s slot later, without taking the lock (safe in a finalizer)."""
        self._orphans.append(key)

    def _free(self, key: str | None) -> None:
        self.in_flight -= 1
        if self.per_key is not None and key is not None:
            n = self.per_key_counts.get(key, 0) - 1
            if n > 0:
                self.per_key_counts[key] = n
            else:
                self.per_key_counts.pop(key, None)

    def _settle_orphans(self) -> None:
        while self._orphans:
            try:
                key = self._orphans.popleft()
            except IndexError:  # pragma: no cover - raced with another settler
                break
            self._free(key)
        if self._queue:
            self._grant_waiters()

    def _grant_waiters(self) -> None:
        # Hand free slots to the first waiters that can use them (FIFO among
        # the eligible: a waiter blocked by its own key's limit does not
        # block waiters of other keys).
        queue = self._queue
        while queue and self.in_flight < self.max_in_flight:
            for waiter in queue:
                if self._take(waiter.key) == OK:
                    waiter.granted = True
                    queue.remove(waiter)
                    waiter.wake()
                    break
            else:
                return

    def reset(self) -> None:
        """Forget every slot and waiter (tests; requests in flight keep running)."""
        with self._lock:
            self.in_flight = 0
            self.per_key_counts.clear()
            self._orphans.clear()
            for waiter in self._queue:
                waiter.wake()
            self._queue.clear()
