"""Rate-limit storages: one URI serves the WSGI (sync) and the ASGI (async) path.

``storage_for(uri)`` returns a backend whose :meth:`hit` runs on a WSGI
thread with limits' sync storage and whose :meth:`ahit` runs on the event
loop with limits' ``limits.aio`` storage (for Redis, with
``implementation="redispy"``: redis-py's asyncio client, so nothing blocks
the loop). Supported URIs:

=====================================  =========================================
``memory://``                          this process, bounded (``max_keys``, LRU)
``redis://``, ``rediss://``,           one Redis; every limit of a request and
``redis+unix://``, ``valkey://``       its header numbers in one round trip
``redis+sentinel://``                  through Sentinel (limits' URI syntax)
``redis+cluster://``                   Redis Cluster (keys share a ``{client}`` slot)
``memcached://`` and other limits      limits' own strategies, one call per limit
URIs                                   (not atomic across limits; no GCRA)
=====================================  =========================================

Every remote call is bounded by *timeout* (redis-py socket and connect
timeouts, no retries) and any failure surfaces as
:class:`~seawall.exceptions.StorageError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from math import ceil
from typing import Any, ClassVar, Protocol

from seawall._ratelimit.lua import SCRIPTS, STRIKE
from seawall._ratelimit.memory import BoundedMemoryStorage
from seawall._ratelimit.quota import FIXED, GCRA, MOVING, SLIDING, Banned, HitResult, Quota
from seawall._wire import (
    DEADLINE,
    AsyncConnections,
    Connections,
    NeverRaised,
    PerLoop,
    akept,
    evalsha_head,
    fixed_frame,
    frame,
    kept,
    no_script_error,
    pexpire_frame,
    require_redis,
    setup_timeout,
)
from seawall.exceptions import ConfigurationError, StorageError

__all__ = [
    "BoundedMemoryStorage",
    "LimitsBackend",
    "MemoryBackend",
    "RedisBackend",
    "StorageBackend",
    "storage_for",
]

_REDIS_SCHEMES = frozenset(
    {
        "redis",
        "rediss",
        "redis+unix",
        "redis+sentinel",
        "redis+cluster",
        "valkey",
        "valkeys",
        "valkey+unix",
        "valkey+sentinel",
        "valkey+cluster",
    }
)


class StorageBackend(Protocol):
    """What :class:`~seawall.RateLimit` needs of a storage."""

    #: ``False`` for in-process storage (never fails, needs no breaker).
    remote: bool

    def hit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """Check and consume *cost* from every quota, all or nothing (sync).

        With *consume* false, only check: would *cost* units be admitted now?
        While the key *ban* lives the answer is :class:`Banned` (nothing consumed).
        """

    def strike(self, strikes: str, ban: str, after: int, within: float, duration: float) -> bool:
        """Count a refusal; the *after*-th within *within* s starts a ban of *duration* s."""

    async def astrike(
        self, strikes: str, ban: str, after: int, within: float, duration: float
    ) -> bool:
        """The same on the event loop."""

    def forget(self, keys: Sequence[str]) -> None:
        """Delete *keys* (lifting a ban)."""

    async def ahit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """The same on the event loop."""


class MemoryBackend:
    """The in-process backend: a :class:`BoundedMemoryStorage`.

    Its :meth:`ahit` calls the sync path directly: it does no I/O and holds
    its lock for well under a microsecond, so it never blocks the loop.
    """

    remote = False

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.storage = BoundedMemoryStorage(max_keys=max_keys, clock=clock)
        self.hit = self.storage.hit_many  # type: ignore[method-assign]

    def hit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """Check and consume (replaced by the storage's bound method in ``__init__``)."""
        return self.storage.hit_many(strategy, keys, quotas, cost, consume, ban)  # pragma: no cover

    async def ahit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """Check and consume; no I/O, so no await inside."""
        return self.storage.hit_many(strategy, keys, quotas, cost, consume, ban)

    def strike(self, strikes: str, ban: str, after: int, within: float, duration: float) -> bool:
        """Count a refusal; see :meth:`BoundedMemoryStorage.strike`."""
        return self.storage.strike(strikes, ban, after, within, duration)

    async def astrike(
        self, strikes: str, ban: str, after: int, within: float, duration: float
    ) -> bool:
        """The same; no I/O."""
        return self.storage.strike(strikes, ban, after, within, duration)

    def forget(self, keys: Sequence[str]) -> None:
        """Delete *keys*."""
        for key in keys:
            self.storage.clear(key)

    def __repr__(self) -> str:
        return f"MemoryBackend(max_keys={self.storage.max_keys})"


#: Costs and key counts as RESP arguments: bytes go through redis-py's
#: encoder untouched, where an int costs a repr and an encode per call.
_SMALL = tuple(str(i).encode() for i in range(64))


def _resp_int(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 64 else str(n).encode()


def _args(quotas: Sequence[Quota], cost: int, consume: bool = True) -> list[bytes]:
    args = [_resp_int(cost)]
    for quota in quotas:
        args += quota.wire
    if not consume:
        args.append(b"0")  # the scripts' trailing "test only" flag
    return args


def _ms(seconds: float) -> int:
    """Whole milliseconds, at least 1 (a TTL of 0 would delete the key)."""
    return max(1, ceil(seconds * 1000))


def _result(raw: Any, quotas: int) -> HitResult:
    # The scripts return integers, which redis-py gives as ints.
    if raw[0] == -1:  # the ban key lives: {-1, its PTTL in ms}
        return Banned.of(raw[1] / 1000, quotas)
    if len(raw) == 4:  # one quota: most rules
        return raw[0] == 1, [(raw[1], raw[2] / 1e6, raw[3] / 1e6)]
    stats = []
    for i in range(1, len(raw), 3):
        stats.append((raw[i], raw[i + 1] / 1e6, raw[i + 2] / 1e6))
    return raw[0] == 1, stats


def _fixed(count: int, ttl_ms: int, quota: Quota) -> HitResult:
    """What the fixed-window script answers, from ``INCR`` and ``PTTL`` replies.

    For one quota and a cost of 1, counting first and comparing after admits
    exactly the requests the script admits: once a request finds the count
    past the amount, every later one in the window does too, so a refused
    request's unit (which the script gives back) never admits anyone.
    """
    reset = (ttl_ms if ttl_ms >= 0 else quota.window_ms) / 1000
    amount = quota.amount
    if count <= amount:
        return True, [(amount - count, reset, 0.0)]
    return False, [(0, reset, reset)]


class _AsyncSide:
    """What :class:`RedisBackend` keeps per event loop: its asyncio client and scripts."""

    __slots__ = ("conn", "deadline", "fast", "scripts", "storage")

    def __init__(
        self,
        storage: Any,
        conn: Any,
        scripts: dict[int, Any],
        fast: AsyncConnections | None,
        deadline: Callable[[float], Any] | None,
    ) -> None:
        #: limits' storage, kept: it owns the connection pool.
        self.storage = storage
        self.conn = conn
        self.scripts = scripts
        #: Connections kept out of redis-py's pool (:mod:`seawall._wire`), if the client allows.
        self.fast = fast
        #: ``asyncio.timeout`` when ahit bounds its calls itself (no socket timeout).
        self.deadline = deadline


class RedisBackend:
    """Redis (standalone, Sentinel, Cluster; Valkey) through limits' storages.

    limits builds the clients (URI parsing, TLS, Sentinel, Cluster); seawall
    registers its own scripts (:mod:`seawall._ratelimit.lua`) on them so one
    request costs one round trip. The async client is made per event loop
    (redis-py's asyncio connections belong to the loop that opened them).

    Args:
        uri: the storage URI.
        timeout: seconds any one call may take (socket and connect timeouts).
        options: extra keyword arguments for the redis-py client.
    """

    remote = True

    def __init__(self, uri: str, *, timeout: float = 0.02, options: dict[str, Any] | None = None):
        self.uri = uri
        self._client_uri = _redis_client_uri(uri)
        self.timeout = timeout
        self._setup = setup_timeout(timeout)
        self.options = dict(options or {})
        self._sync: Any = None
        self._sync_conn: Any = None
        self._sync_scripts: dict[int, Any] = {}
        # redis-py's NoScriptError, bound when a client is built (redis is an extra).
        self._no_script: type[Exception] = NeverRaised
        self._sync_fast: Connections | None = None
        #: The asyncio side of each event loop that uses this backend.
        self._asides: PerLoop[_AsyncSide] = PerLoop(self._new_async_side)
        #: Each script's ``EVALSHA <sha>``, framed once (the SHA is the same on both paths).
        self._heads: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"RedisBackend({_redact(self.uri)!r}, timeout={self.timeout})"

    def _client_options(self, asynchronous: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }
        scheme = self._client_uri.split("://", 1)[0]
        if scheme.startswith("redis") and "cluster" not in scheme:
            # redis-py retries three times with backoff by default: an outage
            # would then cost several timeouts per call instead of one.
            if asynchronous:
                from redis.asyncio.retry import Retry as AsyncRetry
                from redis.backoff import NoBackoff

                opts["retry"] = AsyncRetry(NoBackoff(), 0)
                # ahit bounds the whole call itself (seawall._wire.DEADLINE),
                # and opening a connection apart (seawall._wire.setup_timeout).
                opts["socket_timeout"] = None
                opts["socket_connect_timeout"] = self._setup
            else:
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                opts["retry"] = Retry(NoBackoff(), 0)
        opts.update(self.options)
        return opts

    def _sync_client(self) -> dict[int, Any]:
        if self._sync is None:
            from limits.storage import storage_from_string

            try:
                storage = storage_from_string(self._client_uri, **self._client_options(False))
                conn = storage.get_connection()  # type: ignore[union-attr]
            except Exception as exc:
                msg = f"cannot reach the rate-limit storage: {type(exc).__name__}"
                raise StorageError(msg) from exc
            self._sync_scripts = {code: conn.register_script(src) for code, src in SCRIPTS.items()}
            self._heads = {code: evalsha_head(s.sha) for code, s in self._sync_scripts.items()}
            self._sync_fast = kept(conn)
            self._sync_conn = conn
            self._no_script = no_script_error()
            self._sync = storage
        return self._sync_scripts

    def _new_async_side(self) -> _AsyncSide:
        """The asyncio client of the running loop (see :attr:`_asides`).

        One per loop, never one slot for all: an async view under a WSGI
        server runs each request on a new loop, in whichever thread serves
        it, and a client bound to another thread's loop fails there.
        """
        from limits.storage import storage_from_string

        options = self._client_options(True)
        try:
            storage = storage_from_string(
                "async+" + self._client_uri, implementation="redispy", **options
            )
            conn = storage.bridge.get_connection()  # type: ignore[union-attr]
        except Exception as exc:
            msg = f"cannot reach the rate-limit storage: {type(exc).__name__}"
            raise StorageError(msg) from exc
        scripts = {code: conn.register_script(src) for code, src in SCRIPTS.items()}
        self._heads = {code: evalsha_head(s.sha) for code, s in scripts.items()}
        self._no_script = no_script_error()
        deadline = DEADLINE if options["socket_timeout"] is None else None
        return _AsyncSide(storage, conn, scripts, akept(conn), deadline)

    def hit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """One script call (one round trip) for every quota of the request."""
        scripts = self._sync_client()
        fast = self._sync_fast
        if ban is not None:
            keys = [*keys, ban]  # the scripts check it first (seawall._ratelimit.lua)
        elif fast is not None and strategy == FIXED and cost == 1 and len(quotas) == 1 and consume:
            # The default rule, without a script (seawall._wire.fixed_frame).
            quota, key = quotas[0], keys[0]
            try:
                _, count, ttl = fast.call(fixed_frame(key, quota), 3)
                if ttl == -1:
                    # The window ran out between SET and INCR, which made a
                    # counter with no TTL: give it one (rare: one more round trip).
                    fast.call(pexpire_frame(key, quota))
            except Exception as exc:
                msg = f"rate-limit storage call failed: {type(exc).__name__}"
                raise StorageError(msg) from exc
            return _fixed(count, ttl, quota)
        try:
            # EVALSHA on a kept connection (seawall._wire), or
            # straight through the client where that cannot be used: redis-py's
            # Script.__call__ costs about 25k more instructions per call
            # (measured with callgrind). The Script still loads the source when
            # the server does not know it yet (first call, SCRIPT FLUSH, a failover).
            try:
                if fast is not None:
                    raw = fast.call(frame(self._heads[strategy], keys, quotas, cost, consume))
                else:
                    raw = self._sync_conn.execute_command(
                        "EVALSHA",
                        scripts[strategy].sha,
                        _resp_int(len(keys)),
                        *keys,
                        *_args(quotas, cost, consume),
                    )
            except self._no_script:
                raw = scripts[strategy](keys=keys, args=_args(quotas, cost, consume))
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return _result(raw, len(quotas))

    async def ahit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """The same on the event loop, with redis-py's asyncio client.

        The call (every write and read, and the script load when the server
        lost the script) is bounded by one deadline of the storage timeout
        (:class:`seawall._wire.Deadline`, which a busy event loop does not
        trip), in place of redis-py's per-operation socket timeouts (Redis
        Cluster clients keep those). A new connection opens before it.
        """
        side = self._asides.get()
        deadline = side.deadline
        try:
            if deadline is not None:
                fast = side.fast
                if fast is not None and not fast.free:
                    # A new connection opens under its own bound (seawall._wire.setup_timeout).
                    await fast.open(self._setup)
                async with deadline(self.timeout):
                    return await self._ahit(side, strategy, keys, quotas, cost, consume, ban)
            return await self._ahit(side, strategy, keys, quotas, cost, consume, ban)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc

    async def _ahit(
        self,
        side: _AsyncSide,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool,
        ban: str | None,
    ) -> HitResult:
        fast = side.fast
        if ban is not None:
            keys = [*keys, ban]
        elif fast is not None and strategy == FIXED and cost == 1 and len(quotas) == 1 and consume:
            quota, key = quotas[0], keys[0]
            _, count, ttl = await fast.call(fixed_frame(key, quota), 3)
            if ttl == -1:
                await fast.call(pexpire_frame(key, quota))
            return _fixed(count, ttl, quota)
        try:
            if fast is not None:
                raw = await fast.call(frame(self._heads[strategy], keys, quotas, cost, consume))
            else:
                raw = await side.conn.execute_command(
                    "EVALSHA",
                    side.scripts[strategy].sha,
                    _resp_int(len(keys)),
                    *keys,
                    *_args(quotas, cost, consume),
                )
        except self._no_script:
            raw = await side.scripts[strategy](keys=keys, args=_args(quotas, cost, consume))
        return _result(raw, len(quotas))

    def strike(self, strikes: str, ban: str, after: int, within: float, duration: float) -> bool:
        """Count a refusal on Redis (one script call); see :data:`seawall._ratelimit.lua.STRIKE`."""
        args = (after, _ms(within), _ms(duration))
        try:
            scripts = self._sync_client()
            try:
                raw = self._sync_conn.execute_command(
                    "EVALSHA", scripts[STRIKE].sha, 2, strikes, ban, *args
                )
            except self._no_script:
                raw = scripts[STRIKE](keys=[strikes, ban], args=args)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return bool(raw)

    async def astrike(
        self, strikes: str, ban: str, after: int, within: float, duration: float
    ) -> bool:
        """The same with the asyncio client, bounded by the storage timeout."""
        args = (after, _ms(within), _ms(duration))
        try:
            side = self._asides.get()
            deadline = side.deadline
            if deadline is not None:
                async with deadline(self.timeout):
                    raw = await self._astrike(side, [strikes, ban], args)
            else:
                raw = await self._astrike(side, [strikes, ban], args)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return bool(raw)

    async def _astrike(self, side: _AsyncSide, keys: list[str], args: Any) -> Any:
        try:
            return await side.conn.execute_command(
                "EVALSHA", side.scripts[STRIKE].sha, 2, *keys, *args
            )
        except self._no_script:
            return await side.scripts[STRIKE](keys=keys, args=args)

    def forget(self, keys: Sequence[str]) -> None:
        """Delete *keys* (one ``DEL`` per key: they may sit on different Cluster slots)."""
        try:
            self._sync_client()
            for key in keys:
                self._sync_conn.delete(key)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc

    def clear(self, patterns: Sequence[str]) -> int:
        """Delete every key matching one of the ``SCAN`` *patterns*; return how many.

        For tests (:meth:`seawall.RateLimit.reset`): one ``SCAN`` pass per
        pattern (redis-py's Cluster client scans every primary), one ``DEL``
        per key (keys of several clients sit on several Cluster slots).
        """
        try:
            self._sync_client()
            conn = self._sync_conn
            deleted = 0
            for pattern in patterns:
                keys = list(conn.scan_iter(match=pattern, count=1000))
                for key in keys:
                    deleted += conn.delete(key)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return deleted

    def close(self) -> None:
        """Close the sync connection pool (the async one closes with its loop)."""
        if self._sync is not None:
            if self._sync_fast is not None:
                self._sync_fast.close()
                self._sync_fast = None
            conn = self._sync.get_connection()
            conn.close()
            self._sync = None


class LimitsBackend:
    """Any other limits storage (memcached, MongoDB...), with limits' own strategies.

    One call per limit and per header number, and not atomic across the
    limits of a rule (a request refused by its second limit has used its
    first); GCRA is not available. Prefer Redis where that matters.
    """

    remote = True

    _STRATEGY_NAMES: ClassVar[dict[int, str]] = {
        FIXED: "fixed-window",
        MOVING: "moving-window",
        SLIDING: "sliding-window-counter",
    }

    def __init__(self, uri: str, *, options: dict[str, Any] | None = None) -> None:
        self.uri = uri
        self.options = dict(options or {})
        self._sync: dict[int, Any] | None = None
        #: limits' async strategies per event loop: its clients are bound to one.
        self._async: PerLoop[dict[int, Any]] = PerLoop(lambda: self._limiters(True))

    def __repr__(self) -> str:
        return f"LimitsBackend({_redact(self.uri)!r})"

    @staticmethod
    def _item(quota: Quota) -> Any:
        from limits import RateLimitItemPerSecond

        return RateLimitItemPerSecond(quota.amount, max(1, round(quota.window)))

    def _limiters(self, asynchronous: bool) -> dict[int, Any]:
        import limits.aio.strategies
        import limits.strategies
        from limits.storage import storage_from_string

        module: Any = limits.aio.strategies if asynchronous else limits.strategies
        uri = ("async+" + self.uri) if asynchronous else self.uri
        storage = storage_from_string(uri, **self.options)
        return {
            code: module.STRATEGIES[name](storage) for code, name in self._STRATEGY_NAMES.items()
        }

    def hit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """Test every limit, then hit them unless *consume* is false (several calls)."""
        try:
            if self._sync is None:
                self._sync = self._limiters(False)
            limiter = self._sync[strategy]
            if ban is not None and limiter.storage.get(ban) > 0:
                left = max(0.0, limiter.storage.get_expiry(ban) - time.time())
                return Banned.of(left, len(quotas))
            items = [self._item(q) for q in quotas]
            allowed = all(
                limiter.test(item, key, cost=cost) for item, key in zip(items, keys, strict=True)
            )
            if allowed and consume:
                allowed = all(
                    limiter.hit(item, key, cost=cost) for item, key in zip(items, keys, strict=True)
                )
            now = time.time()
            stats = []
            for item, key in zip(items, keys, strict=True):
                window = limiter.get_window_stats(item, key)
                reset = max(0.0, window.reset_time - now)
                over = not allowed and window.remaining < cost
                stats.append((window.remaining, reset, reset if over else 0.0))
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return allowed, stats

    async def ahit(
        self,
        strategy: int,
        keys: Sequence[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> HitResult:
        """The same with limits' async storage."""
        try:
            limiter = self._async.get()[strategy]
            if ban is not None and await limiter.storage.get(ban) > 0:
                left = max(0.0, await limiter.storage.get_expiry(ban) - time.time())
                return Banned.of(left, len(quotas))
            items = [self._item(q) for q in quotas]
            allowed = True
            for item, key in zip(items, keys, strict=True):
                allowed = allowed and await limiter.test(item, key, cost=cost)
            if allowed and consume:
                for item, key in zip(items, keys, strict=True):
                    allowed = allowed and await limiter.hit(item, key, cost=cost)
            now = time.time()
            stats = []
            for item, key in zip(items, keys, strict=True):
                window = await limiter.get_window_stats(item, key)
                reset = max(0.0, window.reset_time - now)
                over = not allowed and window.remaining < cost
                stats.append((window.remaining, reset, reset if over else 0.0))
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return allowed, stats

    def strike(self, strikes: str, ban: str, after: int, within: float, duration: float) -> bool:
        """Count a refusal with limits' storage counters (not atomic: two calls, three on a ban)."""
        try:
            if self._sync is None:
                self._sync = self._limiters(False)
            storage = self._sync[FIXED].storage
            if storage.incr(strikes, max(1, round(within))) < after:
                return False
            storage.incr(ban, max(1, round(duration)))
            storage.clear(strikes)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return True

    async def astrike(
        self, strikes: str, ban: str, after: int, within: float, duration: float
    ) -> bool:
        """The same with limits' async storage."""
        try:
            storage = self._async.get()[FIXED].storage
            if await storage.incr(strikes, max(1, round(within))) < after:
                return False
            await storage.incr(ban, max(1, round(duration)))
            await storage.clear(strikes)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc
        return True

    def forget(self, keys: Sequence[str]) -> None:
        """Delete *keys*."""
        try:
            if self._sync is None:
                self._sync = self._limiters(False)
            for key in keys:
                self._sync[FIXED].storage.clear(key)
        except Exception as exc:
            msg = f"rate-limit storage call failed: {type(exc).__name__}"
            raise StorageError(msg) from exc


def _redis_client_uri(uri: str) -> str:
    """*uri* with a ``valkey`` scheme spelled ``redis``: redis-py serves both.

    Valkey speaks the Redis protocol, and redis-py is a dependency; limits
    would otherwise want the separate ``valkey`` package for these schemes.
    """
    scheme, sep, rest = uri.partition("://")
    if scheme.lower().startswith("valkey"):
        return "redis" + scheme[len("valkey") :] + sep + rest
    return uri


def _missing_dependencies(scheme: str) -> list[str]:
    """What limits' storages for *scheme* (sync and ``async+``) need and cannot import."""
    import importlib.util

    from limits.storage import SCHEMES  # type: ignore[attr-defined]

    missing: list[str] = []
    for name, path in ((scheme, "sync"), (f"async+{scheme}", "async")):
        needs: Any = getattr(SCHEMES[name], "DEPENDENCIES", [])

        def present(module: str) -> bool:
            try:
                return importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                return False

        if isinstance(needs, dict):
            # Alternatives (one client library per implementation): any one will do.
            if needs and not any(present(m) for m in needs):
                missing.append(" or ".join(repr(m) for m in needs) + f" ({path} path)")
        else:
            absent = [repr(m) for m in needs if not present(m)]
            if absent:
                missing.append(", ".join(absent) + f" ({path} path)")
    return missing


def glob_escape(text: str) -> str:
    """*text* as a literal in a Redis ``MATCH`` pattern (glob characters escaped)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _redact(uri: str) -> str:
    """*uri* without its password, for logs and reprs."""
    scheme, sep, rest = uri.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


def scheme_of(uri: str) -> str:
    """The scheme of a storage URI, lower-case (``"redis"``, ``"memory"``...)."""
    if not isinstance(uri, str) or "://" not in uri:
        msg = f"storage: expected a URI such as 'memory://' or 'redis://host:6379/0', got {uri!r}"
        raise ConfigurationError(msg)
    return uri.split("://", 1)[0].lower()


def storage_for(
    uri: str,
    *,
    timeout: float = 0.02,
    max_keys: int = 100_000,
    clock: Callable[[], float] = time.monotonic,
    options: dict[str, Any] | None = None,
    strategy: int = FIXED,
) -> MemoryBackend | RedisBackend | LimitsBackend:
    """The backend for storage *uri*; raises :class:`ConfigurationError` for an unknown one.

    Nothing connects here: the first request does, so an app starts even
    when its Redis is down (the failure policy then applies).
    """
    scheme = scheme_of(uri)
    if scheme == "memory":
        return MemoryBackend(max_keys=max_keys, clock=clock)
    if scheme in _REDIS_SCHEMES:
        require_redis("storage")
        return RedisBackend(uri, timeout=timeout, options=options)
    from limits.storage import SCHEMES  # type: ignore[attr-defined]

    if scheme in SCHEMES and f"async+{scheme}" in SCHEMES:
        if strategy == GCRA:
            msg = f"strategy: 'gcra' needs memory:// or Redis, not {scheme}://"
            raise ConfigurationError(msg)
        missing = _missing_dependencies(scheme)
        if missing:
            # Fail at startup: found at the first request it would only show up
            # as a storage outage, with every request on the failure policy.
            msg = (
                f"storage: {scheme}:// needs {' and '.join(missing)} (limits' clients); "
                "install them, or use memory:// or redis://"
            )
            raise ConfigurationError(msg)
        return LimitsBackend(uri, options=options)
    known = "memory://, redis://, rediss://, redis+unix://, redis+sentinel://, redis+cluster://, "
    msg = f"storage: unknown scheme {scheme!r}; use one of {known}valkey://, memcached://"
    raise ConfigurationError(msg)
