"""ConcurrencyLimit: at most N requests in flight, in all and per key.

Theory of operation:

1. ``on_request`` takes a slot (global, plus one of the request's key when
   ``per_key`` is set) and keeps a *hold* in ``request.state[self]``;
   ``on_complete`` gives it back. The drivers call ``on_complete`` after the
   last byte, an exception, a client disconnect, a cancellation and WSGI
   ``close()``, so every admitted request releases exactly once.
2. On ``memory://`` the slots are counters of this process
   (:class:`~seawall._concurrency.local.LocalSlots`): taking one is a few
   dict operations under a lock, done right in the hook (no I/O, no
   effect), so the admitted path yields nothing. Waiting for a slot
   (``max_wait``) is an effect that sleeps in the driver: on a WSGI thread
   or on the event loop.
3. On Redis the slots are shared by every worker
   (:class:`~seawall._concurrency.shared.RedisSlots`): acquiring is an
   effect (one Lua round trip, sync or async client); releasing is
   fire-and-forget because ``on_complete`` cannot yield effects and must
   not make the request wait: the release rides on this process's next
   acquire, or a flusher thread sends it. Slots expire after ``slot_ttl``,
   so a worker that dies cannot hold them forever.
4. A hold whose ``on_complete`` never came (the request was torn down
   before the driver got that far) gives its slot back when it is garbage
   collected: a safety net, not the normal path.

Invariant: a request holds at most one slot of this layer, and releases it
at most once (the hold marks itself released).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any, ClassVar, Literal

from seawall._concurrency.local import GLOBAL_FULL, KEY_FULL, OK, QUEUE_FULL, LocalSlots
from seawall._concurrency.shared import (
    Gate,
    LocalWait,
    RedisAcquire,
    RedisSlots,
    SlotIds,
    parse_storage,
)
from seawall._core.layer import ORDER, Outcome
from seawall._core.request import RequestView
from seawall._log import logger
from seawall._wire import require_redis
from seawall._workers import watch
from seawall.exceptions import ConfigurationError, Overloaded, StorageError
from seawall.keys import is_async_key, resolve_key
from seawall.storage import _redact

__all__ = ["ConcurrencyLimit"]

KeyFunc = Callable[[RequestView], "str | None"]

_POLICIES = ("allow", "deny", "local")


class _LocalHold:
    """A slot of a :class:`LocalSlots` pool, released once (or by the finalizer)."""

    __slots__ = ("key", "pool", "released")

    def __init__(self, pool: LocalSlots, key: str | None) -> None:
        self.pool = pool
        self.key = key
        self.released = False

    def release(self) -> None:
        """Give the slot back (once)."""
        if not self.released:
            self.released = True
            self.pool.release(self.key)

    def __del__(self) -> None:
        if not self.released:
            self.released = True
            # Never take the pool's lock in a finalizer: queue it for the next caller.
            self.pool.orphan(self.key)


class _SharedHold:
    """A slot in Redis, released once (or by the finalizer)."""

    __slots__ = ("keys", "released", "slot_id", "slots")

    def __init__(self, slots: RedisSlots, keys: list[str], slot_id: str) -> None:
        self.slots = slots
        self.keys = keys
        self.slot_id = slot_id
        self.released = False

    def release(self) -> None:
        """Queue the slot's release (once); see :meth:`RedisSlots.release`."""
        if not self.released:
            self.released = True
            self.slots.release(self.keys, self.slot_id)

    def __del__(self) -> None:
        if not self.released:
            self.released = True
            self.slots.release_later(self.keys, self.slot_id)


class ConcurrencyLimit:
    r"""Answer 503 once *max_in_flight* requests are in flight (in all, or per key).

    Args:
        max_in_flight: the most requests in flight at once, across workers
            when *storage* is Redis, else in this process.
        per_key: also at most this many in flight per key (``None``: no
            per-key limit).
        key: what *per_key* counts by: a sync key function
            ``key(request) -> str | None``, ``"client"`` (default: the client
            identity every layer shares), ``"header:X-API-Key"``, ``"path"``
            or ``"method"`` (see :mod:`seawall.keys`); ``None`` from the
            function exempts the request from the per-key limit.
        max_wait: seconds a request may wait for a slot before being refused
            (``0``: refuse at once).
        queue_size: the most requests waiting at once in this process
            (default: *max_in_flight*); more are refused at once.
        storage: ``"memory://"`` (this process) or a Redis URI (``redis://``,
            ``rediss://``, ``redis+unix://``, ``redis+cluster://``,
            ``redis+sentinel://``, ``valkey://``) to share the limits across
            workers.
        key_prefix: namespaces the Redis keys, so several apps can share one Redis.
        slot_ttl: seconds a Redis slot lives if never released (a worker
            died); keep it above your slowest request.
        on_storage_error: when Redis fails or times out: ``"allow"`` the
            request, ``"deny"`` it (503), or count it ``"local"``\\ ly, each
            worker allowing its share (``limit // workers``).
        storage_timeout: seconds any one Redis call may take.
        workers: how many workers share the limits (sizes the ``"local"``
            fallback; default: ``$WEB_CONCURRENCY``, else 1).
        shadow: decide and count, log would-be refusals, but let every request through.
        retry_after: the ``Retry-After`` (seconds) a refused client is given.
        storage_probe: while Redis is down, try it again once per this many seconds.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "concurrency"
    order: ClassVar[int] = ORDER["concurrency"]

    def __init__(
        self,
        max_in_flight: int,
        *,
        per_key: int | None = None,
        key: KeyFunc | str | None = None,
        max_wait: float = 0.0,
        queue_size: int | None = None,
        storage: str = "memory://",
        key_prefix: str = "seawall",
        slot_ttl: float = 30.0,
        on_storage_error: Literal["allow", "deny", "local"] = "allow",
        storage_timeout: float = 0.02,
        workers: int | None = None,
        shadow: bool = False,
        retry_after: float = 1,
        storage_probe: float = 1.0,
    ) -> None:
        _check_int("max_in_flight", max_in_flight, 1)
        if per_key is not None:
            _check_int("per_key", per_key, 1)
        if queue_size is not None:
            _check_int("queue_size", queue_size, 0)
        if workers is None:
            workers = _default_workers()
        _check_int("workers", workers, 1)
        for label, value, low in (
            ("max_wait", max_wait, 0.0),
            ("retry_after", retry_after, 0.0),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
                msg = f"{label}: expected a number of seconds >= {low:g}, got {value!r}"
                raise ConfigurationError(msg)
        for label, value in (
            ("slot_ttl", slot_ttl),
            ("storage_timeout", storage_timeout),
            ("storage_probe", storage_probe),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                msg = f"{label}: expected a positive number of seconds, got {value!r}"
                raise ConfigurationError(msg)
        if on_storage_error not in _POLICIES:
            msg = f"on_storage_error: expected 'allow', 'deny' or 'local', got {on_storage_error!r}"
            raise ConfigurationError(msg)
        key_func = resolve_key(key)
        if is_async_key(key_func):
            msg = "key: ConcurrencyLimit needs a sync key function (no I/O at admission)"
            raise ConfigurationError(msg)
        if not isinstance(storage, str):
            msg = f"storage: expected a storage URI string, got {storage!r}"
            raise ConfigurationError(msg)
        scheme = parse_storage(storage)

        self.max_in_flight = max_in_flight
        self.per_key = per_key
        self.max_wait = float(max_wait)
        self.queue_size = max_in_flight if queue_size is None else queue_size
        self.storage = storage
        self.key_prefix = key_prefix
        self.slot_ttl = float(slot_ttl)
        self.on_storage_error = on_storage_error
        self.storage_timeout = float(storage_timeout)
        self.workers = workers
        self.shadow = shadow
        self.retry_after = retry_after
        self._key: KeyFunc = key_func
        self._keyed = per_key is not None
        self._wait = self.max_wait > 0 and self.queue_size > 0
        self._local = LocalSlots(max_in_flight, per_key, self.queue_size)
        self._shared: RedisSlots | None = None
        self._fallback: LocalSlots | None = None
        self._ids: SlotIds | None = None
        self._gate = Gate(self.queue_size)
        if scheme is None:
            # Per-process slots: say so once if several workers serve the app.
            watch("ConcurrencyLimit")
        else:
            require_redis("storage")
            self._shared = RedisSlots(
                storage,
                key_prefix=key_prefix,
                max_in_flight=max_in_flight,
                per_key=per_key,
                slot_ttl=self.slot_ttl,
                timeout=self.storage_timeout,
                probe=storage_probe,
            )
            self._ids = SlotIds()
            if on_storage_error == "local":
                self._fallback = LocalSlots(
                    max(1, max_in_flight // workers),
                    None if per_key is None else max(1, per_key // workers),
                    0,
                )
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.admitted = 0
        self.rejected = 0
        self.shadowed = 0
        self.waited = 0
        self.storage_errors = 0
        self.fallback = 0

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit({self.max_in_flight}, per_key={self.per_key}, "
            f"max_wait={self.max_wait:g}, storage={_redact(self.storage)!r}, shadow={self.shadow})"
        )

    # -- hooks ----------------------------------------------------------------

    def on_request(self, request: RequestView) -> Generator[Any, Any, None] | None:
        """Take a slot, wait for one (an effect), or refuse with 503."""
        key = self._key(request) if self._keyed else None
        if self._shared is not None:
            return self._acquire_shared(request, key)
        pool = self._local
        got = pool.try_acquire(key)
        if got == OK:
            request.state[self] = _LocalHold(pool, key)
            self.admitted += 1
            return None
        if self._wait:
            return self._wait_local(request, key)
        self._full(request, got)
        return None

    def _wait_local(self, request: RequestView, key: str | None) -> Generator[Any, Any, None]:
        got = yield LocalWait(self._local, key, self.max_wait)
        if got != QUEUE_FULL:
            self.waited += 1  # refused at once, the queue being full: no wait
        if got == OK:
            request.state[self] = _LocalHold(self._local, key)
            self.admitted += 1
            return None
        self._full(request, got)
        return None

    def _acquire_shared(self, request: RequestView, key: str | None) -> Generator[Any, Any, None]:
        shared = self._shared
        ids = self._ids
        assert shared is not None
        assert ids is not None
        keys = shared.keys_for(key)
        slot_id = ids.new()
        if self._wait:
            effect = RedisAcquire(shared, keys, slot_id, self.max_wait, self._gate)
        else:
            effect = RedisAcquire(shared, keys, slot_id)
        try:
            got = yield effect
        except StorageError:
            self.storage_errors += 1
            self._storage_failed(request, key)
            return None
        if got == OK:
            request.state[self] = _SharedHold(shared, keys, slot_id)
            self.admitted += 1
            return None
        self._full(request, got)
        return None

    def _storage_failed(self, request: RequestView, key: str | None) -> None:
        policy = self.on_storage_error
        if policy == "allow":
            self.fallback += 1
        elif policy == "local" and self._fallback is not None:
            got = self._fallback.try_acquire(key)
            if got != OK:
                self._full(request, got)  # raises, unless in shadow mode
                return
            request.state[self] = _LocalHold(self._fallback, key)
            self.fallback += 1
        else:
            self._full(request, GLOBAL_FULL, detail="The service cannot take more requests now.")

    def _full(self, request: RequestView, why: int, detail: str | None = None) -> None:
        scope = "key" if why == KEY_FULL else "global"
        if self.shadow:
            self.shadowed += 1
            logger.info(
                "seawall.concurrency.shadow_rejected",
                scope=scope,
                max_in_flight=self.max_in_flight,
                per_key=self.per_key,
            )
            return None
        self.rejected += 1
        logger.debug("seawall.concurrency.rejected", scope=scope, queue_full=why == QUEUE_FULL)
        if detail is None:
            detail = (
                "Too many requests of this client are in progress."
                if scope == "key"
                else "Too many requests are in progress."
            )
        raise Overloaded(
            detail,
            retry_after=self.retry_after,
            extensions={
                "limit": self.per_key if scope == "key" else self.max_in_flight,
                "scope": scope,
            },
        )

    def on_complete(self, request: RequestView, outcome: Outcome) -> None:
        """Give the request's slot back (completion, exception, disconnect, ``close()``)."""
        hold = request.state.pop(self, None)
        if hold is not None:
            hold.release()

    # -- introspection and lifecycle ------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests holding a slot of this process (memory storage or local fallback)."""
        return self._local.in_flight + (self._fallback.in_flight if self._fallback else 0)

    def stats(self) -> dict[str, Any]:
        """Counters and the current state (for ``seawall.stats()``)."""
        shared = self._shared
        out: dict[str, Any] = {
            "max_in_flight": self.max_in_flight,
            "per_key": self.per_key,
            "storage": "memory" if shared is None else shared.scheme,
            "in_flight": self.in_flight,
            "waiting": self._local.waiting + self._gate.waiting,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "shadowed": self.shadowed,
            "waited": self.waited,
            "storage_errors": self.storage_errors,
            "fallback": self.fallback,
        }
        if shared is not None:
            out["storage_down"] = bool(shared.down_until)
            out["release_errors"] = shared.release_errors
            out["last_error"] = shared.last_error
        return out

    def reset(self) -> None:
        """Forget local slots and statistics (Redis slots expire on their own)."""
        self._local.reset()
        if self._fallback is not None:
            self._fallback.reset()
        self._reset_counters()

    def close(self) -> None:
        """Send pending releases and close the sync Redis client (no-op on memory)."""
        if self._shared is not None:
            self._shared.close()

    async def aclose(self) -> None:
        """Wait for pending releases and close the running loop's Redis client."""
        if self._shared is not None:
            await self._shared.aclose()

    def flush(self, timeout: float = 1.0) -> bool:
        """Wait up to *timeout* s for releases queued by WSGI threads to reach Redis."""
        return True if self._shared is None else self._shared.flush(timeout)


def _default_workers() -> int:
    try:
        return max(1, int(os.environ.get("WEB_CONCURRENCY", "1")))
    except ValueError:
        return 1


def _check_int(label: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        msg = f"{label}: expected a whole number >= {low}, got {value!r}"
        raise ConfigurationError(msg)
