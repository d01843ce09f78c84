"""A bounded, clock-injected in-process store for rate limits.

Theory of operation
-------------------
Every rate-limit counter of the process lives in one ``OrderedDict`` kept in
least-recently-used order, guarded by one lock (a hit holds it for a few
hundred nanoseconds; WSGI threads must not interleave a check and its
consumption, or two requests could take the last unit).

Invariants:

1. At most ``max_keys`` entries exist. Inserting one more evicts the least
   recently used entry and counts it in :attr:`BoundedMemoryStorage.evictions`.
   A flood of distinct client keys therefore costs bounded memory; the price
   is that an evicted client starts afresh (documented).
2. Expiry costs O(expired) work: an entry touched after its expiry is reset
   on the spot, and each insertion first drops expired entries from the LRU
   end, stopping at the first live one. There is no timer thread and no scan
   of every key (limits' ``MemoryStorage`` runs a 10 ms timer that walks
   every key).
3. Time comes from the injected clock only, so tests drive it with
   :class:`~seawall.testing.ManualClock`.

``BoundedMemoryStorage`` subclasses limits' ``MemoryStorage`` and keeps its
storage interface (``incr``/``get``/``acquire_entry``/``get_moving_window``
and the sliding-window methods inherited from limits), so limits' own
strategies run on it unchanged. What changed and why: the ``__init__`` starts
no timer thread (invariant 2), counters live in the bounded LRU map
(invariant 1), time is injected (invariant 3), and :meth:`hit_many` checks
and consumes every limit of a request under one lock, all or nothing, and
returns the header numbers with the decision (:meth:`hit_fixed` is its one
fixed-window limit case, which the layer calls directly).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from math import floor
from typing import Any

from limits.storage import MemoryStorage

from seawall._ratelimit.quota import FIXED, MOVING, SLIDING, Banned, HitResult, Quota

__all__ = ["BoundedMemoryStorage"]

_EPS = 1e-9


class BoundedMemoryStorage(MemoryStorage):
    """limits' in-memory storage with a key bound, LRU eviction and O(expired) expiry.

    Args:
        max_keys: at most this many counters are kept; the least recently
            used is evicted beyond that (counted in :attr:`evictions`).
        clock: seconds, ``time.time``-like. limits' strategies compare the
            storage's expiries with ``time.time()``, so keep the default when
            using them; :class:`~seawall.RateLimit` passes its own clock.
    """

    # limits' storage registry reads this list (a list, as in the base class).
    STORAGE_SCHEME = ["seawall+memory"]  # noqa: RUF012

    def __init__(
        self,
        uri: str | None = None,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        # MemoryStorage.__init__ would start its scanning timer thread: set up
        # our own state and run only the base Storage initialiser.
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        self._bind_entries()
        self._lock = threading.Lock()
        self._clock = clock
        self.max_keys = max_keys
        #: Entries dropped to stay within *max_keys*.
        self.evictions = 0
        #: Live bans: ban key -> when it ends (clock seconds). Apart from the
        #: counters so a layer's fast path can skip every check while it is
        #: empty (see :meth:`strike`); bounded by *max_keys* too.
        self.bans: dict[str, float] = {}
        super(MemoryStorage, self).__init__(uri, wrap_exceptions=False, **options)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["_move_to_end"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind_entries()
        self._lock = threading.Lock()

    def _bind_entries(self) -> None:
        # Method lookups on an OrderedDict are not specialised by CPython 3.11:
        # bound once, the hot path's call costs ~130 instructions less.
        # _entries is only ever cleared in place, so this stays valid.
        self._move_to_end = self._entries.move_to_end

    def __len__(self) -> int:
        return len(self._entries)

    # -- bookkeeping (call with the lock held) ---------------------------------

    def _insert(self, key: str, entry: list[Any], now: float) -> None:
        entries = self._entries
        # A key whose window expired is still in the map, at its old place:
        # its new entry must go to the recent end, and replacing it needs no room.
        entries.pop(key, None)
        # Invariant 2: drop expired entries from the LRU end, O(expired).
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][0] > now:
                break
            del entries[oldest]
        if len(entries) >= self.max_keys:
            entries.popitem(last=False)
            self.evictions += 1
        entries[key] = entry

    # -- the fast path -----------------------------------------------------------

    def hit_many(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """Check every quota for its key and consume *cost* from all of them, or none.

        Returns ``(allowed, stats)`` with one ``(remaining, reset, retry)``
        per quota: units left, seconds until the quota resets, and (for a
        quota that refused) seconds until *cost* units would be admitted.
        With *consume* false nothing is consumed: the answer says whether
        *cost* units would be admitted now (``count_when`` rules count later).
        While the key *ban* is live the answer is :class:`Banned`.
        """
        if strategy == FIXED and len(quotas) == 1 and consume and ban is None:
            stat = self.hit_fixed(keys[0], quotas[0], cost)
            return stat[2] == 0.0, [stat]
        now = self._clock()
        # acquire/release rather than ``with``: a third of the cost per hit.
        lock = self._lock
        lock.acquire()
        try:
            if ban is not None:
                until = self.bans.get(ban)
                if until is not None:
                    if until > now:
                        return Banned.of(until - now, len(quotas))
                    self.bans.pop(ban, None)
            if strategy == FIXED:
                return self._fixed(keys, quotas, cost, now, consume)
            if strategy == MOVING:
                return self._moving(keys, quotas, cost, now, consume)
            if strategy == SLIDING:
                return self._sliding(keys, quotas, cost, now, consume)
            return self._gcra(keys, quotas, cost, now, consume)
        finally:
            lock.release()

    def hit_fixed(self, key: str, quota: Quota, cost: int) -> tuple[int, float, float]:
        """:meth:`hit_many` for one fixed-window quota: its ``(remaining, reset, retry)``.

        *retry* is ``0.0`` exactly when the request is admitted: a refusal
        always waits for the rest of the window, a positive time. The
        layer's common case (one limit, memory, fixed window) calls this
        directly, without the lists of :meth:`hit_many`.
        """
        # Callables kept in the instance are read into locals before the
        # call: CPython 3.11 cannot specialise ``self._clock()`` (a method
        # load of an instance attribute), a plain attribute load it can.
        clock = self._clock
        now = clock()
        lock = self._lock
        lock.acquire()
        try:
            try:
                # A subscript, not get(): no method call and no None test
                # (~250 instructions). The KeyError costs more, but only a
                # client's first request (or one after an eviction) misses,
                # and that path inserts a new entry anyway.
                entry = self._entries[key]
            except KeyError:
                return self._start_fixed(key, quota, cost, now)
            expiry = entry[0]
            if expiry > now:
                # A live window: the path of nearly every request.
                move_to_end = self._move_to_end
                move_to_end(key)
                amount = quota.amount
                used = entry[1] + cost
                if used <= amount:
                    entry[1] = used
                    return amount - used, expiry - now, 0.0
                reset = expiry - now
                return max(0, amount - entry[1]), reset, reset
            return self._start_fixed(key, quota, cost, now)
        finally:
            lock.release()

    def _start_fixed(
        self, key: str, quota: Quota, cost: int, now: float
    ) -> tuple[int, float, float]:
        """:meth:`_fixed` for one quota whose window is not live (no entry, or expired).

        Call with the lock held. A client's first request takes this path:
        without :meth:`_fixed`'s lists and loops it costs about half as much.
        """
        amount = quota.amount
        window = quota.window
        if cost > amount:
            return amount, window, window
        if cost:
            self._insert(key, [now + window, cost], now)
        return amount - cost, window, 0.0

    def _fixed(
        self,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        now: float,
        consume: bool = True,
    ) -> HitResult:
        entries = self._entries
        found: list[list[Any] | None] = []
        allowed = True
        for key, quota in zip(keys, quotas, strict=True):
            entry = entries.get(key)
            if entry is not None:
                if entry[0] <= now:
                    entry = None
                else:
                    entries.move_to_end(key)
            found.append(entry)
            if (entry[1] if entry is not None else 0) + cost > quota.amount:
                allowed = False
        stats = []
        for key, quota, entry in zip(keys, quotas, found, strict=True):
            if entry is None:
                if allowed and cost and consume:
                    self._insert(key, [now + quota.window, cost], now)
                    stats.append((quota.amount - cost, quota.window, 0.0))
                else:
                    retry = quota.window if cost > quota.amount else 0.0
                    stats.append((quota.amount, quota.window, retry))
                continue
            reset = entry[0] - now
            if allowed:
                if consume:
                    entry[1] += cost
                stats.append((quota.amount - entry[1], reset, 0.0))
            else:
                over = entry[1] + cost > quota.amount
                stats.append((max(0, quota.amount - entry[1]), reset, reset if over else 0.0))
        return allowed, stats

    def _moving(
        self,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        now: float,
        consume: bool = True,
    ) -> HitResult:
        entries = self._entries
        found: list[list[Any] | None] = []
        allowed = True
        for key, quota in zip(keys, quotas, strict=True):
            entry = entries.get(key)
            if entry is not None:
                entries.move_to_end(key)
                stamps = entry[1]
                horizon = now - quota.window
                while stamps and stamps[0] <= horizon:
                    stamps.popleft()
            found.append(entry)
            if (len(entry[1]) if entry is not None else 0) + cost > quota.amount:
                allowed = False
        stats = []
        for key, quota, entry in zip(keys, quotas, found, strict=True):
            window = quota.window
            if allowed and cost and consume:
                if entry is None:
                    entry = [0.0, deque()]
                    self._insert(key, entry, now)
                stamps = entry[1]
                stamps.extend([now] * cost)
                entry[0] = now + window
                stats.append((quota.amount - len(stamps), stamps[0] + window - now, 0.0))
                continue
            stamps = entry[1] if entry is not None else deque()
            used = len(stamps)
            reset = (stamps[0] + window - now) if stamps else window
            over = used + cost - quota.amount
            if over <= 0:
                retry = 0.0
            elif cost > quota.amount:
                retry = window
            else:
                # The over-th oldest entry must leave the window first.
                retry = stamps[over - 1] + window - now
            stats.append((max(0, quota.amount - used), reset, retry))
        return allowed, stats

    def _sliding(
        self,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        now: float,
        consume: bool = True,
    ) -> HitResult:
        entries = self._entries
        found: list[list[Any] | None] = []
        weights: list[float] = []
        allowed = True
        for key, quota in zip(keys, quotas, strict=True):
            window = quota.window
            index = floor(now / window)
            entry = entries.get(key)
            if entry is not None:
                entries.move_to_end(key)
                # entry = [expiry, window index, current count, previous count]
                if entry[1] != index:
                    entry[3] = entry[2] if entry[1] == index - 1 else 0
                    entry[2] = 0
                    entry[1] = index
                    entry[0] = (index + 2) * window
            weight = 1.0 - (now - index * window) / window
            weights.append(weight)
            found.append(entry)
            used = floor(entry[3] * weight + entry[2] + _EPS) if entry is not None else 0
            if used + cost > quota.amount:
                allowed = False
        stats = []
        for key, quota, entry, weight in zip(keys, quotas, found, weights, strict=True):
            window = quota.window
            index = floor(now / window)
            if allowed and cost and consume:
                if entry is None:
                    entry = [(index + 2) * window, index, 0, 0]
                    self._insert(key, entry, now)
                entry[2] += cost
            cur, prev = (entry[2], entry[3]) if entry is not None else (0, 0)
            used = floor(prev * weight + cur + _EPS)
            reset = (index + 1) * window - now
            over = not allowed and used + cost > quota.amount
            retry = _sliding_retry(quota, cur, prev, weight, cost) if over else 0.0
            stats.append((max(0, quota.amount - used), reset, retry))
        return allowed, stats

    def _gcra(
        self,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        now: float,
        consume: bool = True,
    ) -> HitResult:
        entries = self._entries
        found: list[list[Any] | None] = []
        allowed = True
        for key, quota in zip(keys, quotas, strict=True):
            entry = entries.get(key)
            if entry is not None:
                entries.move_to_end(key)
            found.append(entry)
            tat = max(entry[0], now) if entry is not None else now
            if tat + cost * quota.interval - quota.window > now + _EPS:
                allowed = False
        stats = []
        for key, quota, entry in zip(keys, quotas, found, strict=True):
            interval = quota.interval
            tat = max(entry[0], now) if entry is not None else now
            if allowed and cost and consume:
                tat += cost * interval
                if entry is None:
                    self._insert(key, [tat], now)
                else:
                    entry[0] = tat
                retry = 0.0
            else:
                retry = max(0.0, tat + cost * interval - quota.window - now)
            remaining = max(0, floor((quota.window - (tat - now)) / interval + _EPS))
            stats.append((remaining, tat - now, retry))
        return allowed, stats

    def strike(self, strikes: str, ban: str, after: int, within: float, duration: float) -> bool:
        """Count one refusal on *strikes*; the *after*-th within *within* s bans for *duration* s.

        Returns whether this strike started a ban (the strikes then start over).
        """
        now = self._clock()
        with self._lock:
            entry = self._live(strikes, now)
            if entry is None:
                entry = [now + within, 0]
                self._insert(strikes, entry, now)
            entry[1] += 1
            if entry[1] < after:
                return False
            del self._entries[strikes]
            bans = self.bans
            if len(bans) >= self.max_keys:
                for key in [k for k, until in bans.items() if until <= now]:
                    del bans[key]
                while len(bans) >= self.max_keys:
                    del bans[next(iter(bans))]  # the oldest ban goes first
            bans.pop(ban, None)
            bans[ban] = now + duration
            return True

    # -- limits' storage interface (fixed and moving windows) -------------------

    def _live(self, key: str, now: float) -> list[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add *amount* to counter *key*, starting a window of *expiry* seconds if new."""
        now = self._clock()
        with self._lock:
            entry = self._live(key, now)
            if entry is None:
                entry = [now + expiry, 0]
                self._insert(key, entry, now)
            entry[1] += amount
            return int(entry[1])

    def decr(self, key: str, amount: int = 1) -> int:
        """Take *amount* from counter *key* (not below zero)."""
        with self._lock:
            entry = self._live(key, self._clock())
            if entry is None:
                return 0
            entry[1] = max(0, entry[1] - amount)
            return int(entry[1])

    def get(self, key: str) -> int:
        """The value of counter *key* (0 if absent or expired)."""
        with self._lock:
            entry = self._live(key, self._clock())
            return 0 if entry is None else int(entry[1])

    def get_expiry(self, key: str) -> float:
        """When counter *key* expires (clock seconds)."""
        now = self._clock()
        with self._lock:
            entry = self._live(key, now)
            return now if entry is None else float(entry[0])

    def clear(self, key: str) -> None:
        """Forget *key* (a counter or a ban)."""
        with self._lock:
            self._entries.pop(key, None)
            self.bans.pop(key, None)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Moving window: record *amount* entries for *key* unless *limit* would be passed."""
        if amount > limit:
            return False
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = [now + expiry, deque()]
                self._insert(key, entry, now)
            else:
                self._entries.move_to_end(key)
            stamps = entry[1]
            while stamps and stamps[0] <= now - expiry:
                stamps.popleft()
            if len(stamps) + amount > limit:
                return False
            stamps.extend([now] * amount)
            entry[0] = now + expiry
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """Moving window: ``(start of the window, entries in it)`` for *key*."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return now, 0
            stamps = [s for s in entry[1] if s > now - expiry]
            return (stamps[0], len(stamps)) if stamps else (now, 0)

    def check(self) -> bool:
        """Always healthy: nothing can fail here."""
        return True

    def reset(self) -> int | None:
        """Forget every key; return how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self.bans.clear()
            return count


def _sliding_retry(quota: Quota, cur: int, prev: int, weight: float, cost: int) -> float:
    """Seconds until ``floor(prev * weight + cur) + cost <= amount`` (sliding counter)."""
    window = quota.window
    amount = quota.amount
    if cost > amount:
        return window
    elapsed = (1.0 - weight) * window
    room = amount - cost - cur
    # Admitted once floor(prev * weight + cur) + cost <= amount, that is once
    # prev * weight < room + 1; a millisecond past that boundary is the
    # earliest time it holds, so Retry-After is exact, never early.
    if room >= 0 and prev > 0:
        # Still in this window: wait for the previous window's weight to fall.
        return max(0.0, window * (1.0 - (room + 1) / prev) - elapsed) + 0.001
    # The current window alone is too full: it becomes the previous one.
    wait = window - elapsed
    if cur > 0:
        wait += max(0.0, window * (1.0 - (amount - cost + 1) / cur))
    return wait + 0.001
