"""Concurrency slots shared by every worker through Redis, and the effects that take them.

Theory of operation:

1. A slot is a member of a sorted set scored by its expiry (Redis server
   time + ``slot_ttl``): ``{prefix:cc}:all`` for the global limit and
   ``{prefix:cc}:k:<key>`` per key. One Lua script drops expired members,
   checks both counts and adds the slot to both sets, atomically, in one
   round trip; a worker that dies without releasing loses its slots when
   they expire. The ``{...}`` hash tag keeps one layer's sets in one Redis
   Cluster slot, so the script runs on Cluster too.
2. Time is Redis's own (``TIME`` inside the script), so workers on
   different hosts with skewed clocks agree on what has expired.
3. Acquiring is an *effect*: :meth:`RedisAcquire.run` uses redis-py's sync
   client (WSGI threads), :meth:`RedisAcquire.arun` a ``redis.asyncio``
   client of the running loop. Waiting for a slot (``max_wait``) polls with
   a short backoff and sleeps there, never in the layer.
4. Releasing happens in ``on_complete``, which cannot yield effects and
   must not make the request wait. A release is appended to this process's
   *pending* deque (a few hundred ns) and is carried by the next acquire's
   script call, before it takes its slot: so a request always sees the
   releases of the requests that ended before it in this process, and
   under load a request costs one round trip for its acquire and its
   predecessor's release together. A flusher thread sends what no acquire
   carried within ``_FLUSH_DELAY`` (idle periods), with the sync client, so
   the event loop never does it. A release that fails is kept for the next
   try; a release lost altogether leaves the slot to expire.
5. Script calls go out on connections kept out of redis-py's pool, as the
   rate limiter's do (:mod:`seawall._wire`: same invariants), and
   an asyncio call is bounded by one :class:`~seawall._wire.Deadline`
   (which a busy event loop does not trip) rather than redis-py's
   per-operation socket timeouts (Redis Cluster clients keep redis-py's
   ``execute_command`` and socket timeouts).
6. Every call is bounded by ``timeout``. After a failure the storage counts
   as down for ``probe`` seconds: calls fail at once (the layer
   applies ``on_storage_error``), then one call probes. So an outage costs
   one timeout per probe period, not one per request, and one log line per
   transition (``seawall.concurrency.storage_down`` / ``storage_up``).
   A call that failed or was cancelled queues its slot's release: its
   script may run after all (a stalled Redis runs it when it wakes).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import hashlib
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from seawall._concurrency.local import OK, QUEUE_FULL, LocalSlots, Waiter
from seawall._log import logger
from seawall._wire import (
    DEADLINE,
    AsyncConnections,
    Connections,
    NeverRaised,
    PerLoop,
    akept,
    evalsha_frame,
    evalsha_head,
    kept,
    no_script_error,
    setup_timeout,
)
from seawall.exceptions import ConfigurationError, StorageError

__all__ = ["Gate", "LocalWait", "RedisAcquire", "RedisSlots", "SlotIds", "parse_storage"]

# One script takes a slot, after first applying the releases this process
# has pending (piggybacked: a release that happened before a request in this
# process is always seen by its acquire, at no extra round trip). All keys
# share one hash tag, so the script runs on Redis Cluster too.
# KEYS: the global set, the per-key set if ARGV[5] == "2", then the per-key
#       sets of the releases.
# ARGV: slot ttl (s), global max, per-key max, slot id ("" = release only),
#       number of acquire keys, then pairs (released slot id, index in KEYS
#       of its per-key set, or 0).
# Answers 1 (acquired), 0 (global limit full) or -1 (the key's limit full).
_ACQUIRE = """
local released = {}
for i = 6, #ARGV, 2 do
  released[#released + 1] = ARGV[i]
  local k = tonumber(ARGV[i + 1])
  if k > 0 then redis.call('ZREM', KEYS[k], ARGV[i]) end
end
if #released > 0 then redis.call('ZREM', KEYS[1], unpack(released)) end
if ARGV[4] == '' then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local ttl_ms = math.ceil(ttl * 1000) + 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
if ARGV[5] == '2' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ttl_ms)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return 1
"""

Release = tuple[list[str], str]


def _script_args(keys: list[str], releases: list[Release]) -> tuple[list[str], list[str]]:
    """KEYS, and ARGV's release pairs, to acquire with *keys* after applying *releases*."""
    names = list(keys)
    index = {name: i + 1 for i, name in enumerate(names)}
    pairs: list[str] = []
    for item_keys, slot_id in releases:
        k = 0
        if len(item_keys) > 1:
            name = item_keys[1]
            k = index.get(name, 0)
            if not k:
                names.append(name)
                k = index[name] = len(names)
        pairs += (slot_id, str(k))
    return names, pairs


_ACQUIRE_SHA = hashlib.sha1(_ACQUIRE.encode()).hexdigest()  # Redis's own script id
_ACQUIRE_HEAD = evalsha_head(_ACQUIRE_SHA)

#: Releases piggybacked on one acquire (bounds the script's size).
_PIGGYBACK = 100
#: Seconds the flusher thread leaves a release pending so that the next
#: acquire carries it; longer only delays slots other processes could use.
_FLUSH_DELAY = 0.02
#: Pending releases kept at most (a long outage: older slots expire anyway).
_MAX_PENDING = 10_000

#: Polling backoff while waiting for a Redis slot: first and longest pause (s).
_POLL_FIRST = 0.002
_POLL_MAX = 0.05

_SCHEMES = ("redis", "rediss", "redis+unix", "redis+cluster", "redis+sentinel", "valkey", "valkeys")


def parse_storage(uri: str) -> str | None:
    """Return the Redis flavour of *uri* (``None`` for ``memory://``); raise if unknown."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "memory":
        return None
    if scheme not in _SCHEMES:
        known = ", ".join(s + "://" for s in _SCHEMES)
        msg = f"storage: expected 'memory://' or a Redis URI ({known}), got {scheme or uri!r}"
        raise ConfigurationError(msg)
    return scheme


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        hosts.append((host or "127.0.0.1", int(port) if port else default_port))
    return hosts


def _password(netloc: str) -> str | None:
    if "@" not in netloc:
        return None
    auth = netloc.rsplit("@", 1)[0]
    _, _, password = auth.partition(":")
    return unquote(password) or None


class SlotIds:
    """Slot ids unique across processes: a random per-process prefix and a counter."""

    __slots__ = ("__weakref__", "_counter", "_prefix")

    def __init__(self) -> None:
        self._reseed()
        ref = weakref.ref(self)

        def reseed_child() -> None:
            ids = ref()
            if ids is not None:
                ids._reseed()

        os.register_at_fork(after_in_child=reseed_child)

    def _reseed(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        """A fresh slot id."""
        return f"{self._prefix}{next(self._counter):x}"


class RedisSlots:
    """The shared slot store: clients, scripts, the storage breaker and the releaser.

    Args:
        uri: a Redis storage URI (see :func:`parse_storage`).
        key_prefix: namespaces the keys, so several apps can share one Redis.
        max_in_flight: the global limit. per_key: the per-key limit, or ``None``.
        slot_ttl: seconds a slot lives unless released (a dead worker's slots expire).
        timeout: seconds any one Redis call may take.
        probe: seconds the storage counts as down after a failure.
    """

    def __init__(
        self,
        uri: str,
        *,
        key_prefix: str,
        max_in_flight: int,
        per_key: int | None,
        slot_ttl: float,
        timeout: float,
        probe: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        scheme = parse_storage(uri)
        if scheme is None:  # pragma: no cover - the layer checks first
            msg = "RedisSlots needs a Redis URI"
            raise ConfigurationError(msg)
        self.uri = uri
        self.scheme = scheme
        self.timeout = timeout
        self._setup = setup_timeout(timeout)
        self.probe = probe
        self.slot_ttl = slot_ttl
        self._clock = clock
        tag = f"{{{key_prefix}:cc}}"
        self.global_key = f"{tag}:all"
        self._key_base = f"{tag}:k:"
        self._ttl_arg = repr(float(slot_ttl))
        self._max_arg = str(max_in_flight)
        self._per_key_arg = str(per_key if per_key is not None else 0)
        self.per_key = per_key
        self._sync: Any = None
        self._sync_fast: Connections | None = None
        self._sync_lock = threading.Lock()
        # Per event loop: its client and, when it has a pool, its kept connections.
        self._async: PerLoop[tuple[Any, AsyncConnections | None]] = PerLoop(self._new_async)
        #: DEADLINE when the asyncio clients have no socket timeout of their own.
        self._deadline = DEADLINE if self.scheme != "redis+cluster" else None
        # redis-py's NoScriptError, bound when a client is built (redis is an extra).
        self._no_script: type[Exception] = NeverRaised
        # Releases not yet sent: appended by on_complete (or a finalizer),
        # taken by the next acquire or by the flusher thread.
        self.pending: collections.deque[Release] = collections.deque()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._flusher_pid = 0
        self._stopping = False
        # Storage breaker (invariant: down_until > 0 iff the storage is down).
        self.down_until = 0.0
        self.errors = 0
        self.release_errors = 0
        self.last_error: str | None = None

    # -- keys -----------------------------------------------------------------

    def keys_for(self, key: str | None) -> list[str]:
        """The sorted sets a request of *key* takes a slot in."""
        if self.per_key is None or key is None:
            return [self.global_key]
        if not isinstance(key, str):
            key = str(key)  # as the in-process slots take any hashable key, and RateLimit str()s
        if len(key) > 100:
            # Bound key length whatever a key function returns (a header value...).
            key = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        return [self.global_key, self._key_base + key]

    # -- clients --------------------------------------------------------------

    def _options(self, asynchronous: bool) -> dict[str, Any]:
        from redis.backoff import NoBackoff

        retry: Any
        if asynchronous:
            # redis-py 8.2 warns (and converts) when an asyncio client gets the sync Retry.
            from redis.asyncio.retry import Retry as AsyncRetry

            retry = AsyncRetry(NoBackoff(), 0)
        else:
            from redis.retry import Retry

            retry = Retry(NoBackoff(), 0)
        # No retries: one bounded attempt per call; the breaker handles outages.
        deadline = asynchronous and self._deadline is not None
        # With a deadline per call, opening a connection has its own bound
        # (seawall._wire.setup_timeout).
        return {
            "socket_timeout": None if deadline else self.timeout,
            "socket_connect_timeout": self._setup if deadline else self.timeout,
            "retry": retry,
        }

    def _build(self, asynchronous: bool) -> Any:
        parts = urlsplit(self.uri)
        opts = self._options(asynchronous)
        if asynchronous:
            import redis.asyncio as lib
            from redis.asyncio.cluster import ClusterNode, RedisCluster
            from redis.asyncio.sentinel import Sentinel
        else:
            import redis as lib  # type: ignore[no-redef]
            from redis.cluster import ClusterNode, RedisCluster  # type: ignore[assignment]
            from redis.sentinel import Sentinel  # type: ignore[assignment]
        if self.scheme == "redis+cluster":
            nodes = [ClusterNode(h, p) for h, p in _hosts(parts.netloc, 7000)]
            return RedisCluster(
                startup_nodes=nodes,
                password=_password(parts.netloc),
                **opts,
            )
        if self.scheme == "redis+sentinel":
            service = parts.path.strip("/") or "mymaster"
            sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
                _hosts(parts.netloc, 26379),
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
            )
            return sentinel.master_for(service, password=_password(parts.netloc), **opts)
        url = self.uri
        if self.scheme == "redis+unix":
            url = "unix://" + url.split("://", 1)[1]
        elif self.scheme.startswith("valkey"):
            # Valkey speaks the Redis protocol: same client, same scripts.
            url = "redis" + url[len("valkey") :]
        return lib.Redis.from_url(url, **opts)

    def client(self) -> Any:
        """The sync client (built on first use; redis-py clients are thread-safe)."""
        client = self._sync
        if client is None:
            with self._sync_lock:
                if self._sync is None:
                    client = self._build(asynchronous=False)
                    self._sync_fast = kept(client)
                    self._no_script = no_script_error()
                    self._sync = client
                client = self._sync
        return client

    def aclient(self) -> Any:
        """The ``redis.asyncio`` client of the running loop (one per loop)."""
        return self._aclients()[0]

    def _aclients(self) -> tuple[Any, AsyncConnections | None]:
        return self._async.get()

    def _new_async(self) -> tuple[Any, AsyncConnections | None]:
        client = self._build(asynchronous=True)
        self._no_script = no_script_error()
        return client, akept(client)

    def _eval(self, args: tuple[Any, ...]) -> Any:
        client = self.client()
        fast = self._sync_fast
        try:
            if fast is not None:
                return fast.call(evalsha_frame(_ACQUIRE_HEAD, *args))
            return client.evalsha(_ACQUIRE_SHA, *args)
        except self._no_script:
            return client.eval(_ACQUIRE, *args)

    async def _aeval(self, args: tuple[Any, ...]) -> Any:
        client, fast = self._aclients()
        deadline = self._deadline
        if deadline is None:
            return await self._aeval_once(client, fast, args)
        if fast is not None and not fast.free:
            # A new connection opens under its own bound (seawall._wire.setup_timeout).
            await fast.open(self._setup)
        async with deadline(self.timeout):
            return await self._aeval_once(client, fast, args)

    async def _aeval_once(
        self, client: Any, fast: AsyncConnections | None, args: tuple[Any, ...]
    ) -> Any:
        try:
            if fast is not None:
                return await fast.call(evalsha_frame(_ACQUIRE_HEAD, *args))
            return await client.evalsha(_ACQUIRE_SHA, *args)
        except self._no_script:
            return await client.eval(_ACQUIRE, *args)

    # -- the storage breaker --------------------------------------------------

    def check_available(self) -> None:
        """Raise :class:`StorageError` at once while the storage counts as down."""
        down = self.down_until
        if down:
            now = self._clock()
            if now < down:
                msg = "concurrency storage unavailable (probing again shortly)"
                raise StorageError(msg)
            # Let this call probe; the others keep failing fast meanwhile.
            self.down_until = now + self.probe

    def succeeded(self) -> None:
        """Record a successful call (closes the breaker, logging the transition)."""
        if self.down_until:
            self.down_until = 0.0
            logger.info("seawall.concurrency.storage_up", storage=self.scheme)

    def failed(self, exc: BaseException) -> StorageError:
        """Record a failed call; return the :class:`StorageError` to raise."""
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if not self.down_until:
            logger.warning(
                "seawall.concurrency.storage_down",
                storage=self.scheme,
                error=type(exc).__name__,
                probe=self.probe,
            )
        self.down_until = self._clock() + self.probe
        err = StorageError(f"concurrency storage failed: {type(exc).__name__}")
        err.__cause__ = exc
        return err

    # -- acquire --------------------------------------------------------------

    def _take_pending(self) -> list[Release]:
        pending = self.pending
        taken: list[Release] = []
        with contextlib.suppress(IndexError):
            while pending and len(taken) < _PIGGYBACK:
                taken.append(pending.popleft())
        return taken

    def _give_back(self, taken: list[Release]) -> None:
        # The call failed: keep the releases for the next attempt (bounded;
        # slots whose release is dropped expire after slot_ttl).
        if len(self.pending) < _MAX_PENDING:
            self.pending.extendleft(reversed(taken))

    def _args(self, keys: list[str], slot_id: str, taken: list[Release]) -> tuple[Any, ...]:
        names, pairs = _script_args(keys, taken)
        nacq = "2" if len(keys) > 1 else "1"
        return (
            len(names),
            *names,
            self._ttl_arg,
            self._max_arg,
            self._per_key_arg,
            slot_id,
            nacq,
            *pairs,
        )

    def acquire(self, keys: list[str], slot_id: str) -> int:
        """Try to take a slot now (sync): 1, 0 (global full) or -1 (key full).

        The releases pending in this process go first, in the same call.
        """
        self.check_available()
        taken = self._take_pending() if self.pending else []
        args = self._args(keys, slot_id, taken)
        try:
            got = self._eval(args)
        except Exception as exc:
            if taken:
                self._give_back(taken)
            self._unknown(keys, slot_id)
            raise self.failed(exc) from exc
        self.succeeded()
        return int(got)

    async def aacquire(self, keys: list[str], slot_id: str) -> int:
        """Try to take a slot now (async): 1, 0 (global full) or -1 (key full)."""
        self.check_available()
        taken = self._take_pending() if self.pending else []
        args = self._args(keys, slot_id, taken)
        try:
            got = await self._aeval(args)
        except BaseException as exc:
            if taken:
                self._give_back(taken)
            self._unknown(keys, slot_id)
            if not isinstance(exc, Exception):
                raise  # cancelled: not a storage failure
            raise self.failed(exc) from exc
        self.succeeded()
        return int(got)

    def _unknown(self, keys: list[str], slot_id: str) -> None:
        # A call that timed out (or was cancelled) after its script was
        # written may still run: a stalled Redis runs it when it wakes, and
        # the slot would stay taken until slot_ttl with nobody to release it
        # (with a small limit, every request refused for ~30 s). So release
        # it anyway: a ZREM of a member never added does nothing, and the
        # acquire, sent first on its own connection, runs first.
        self.release(keys, slot_id)

    # -- release (fire-and-forget) --------------------------------------------

    def release(self, keys: list[str], slot_id: str) -> None:
        """Give the slot back without waiting: the next acquire or the flusher sends it."""
        self.pending.append((keys, slot_id))
        if self._flusher is None or self._flusher_pid != os.getpid():
            self._start_flusher()
        self._wake.set()

    def release_later(self, keys: list[str], slot_id: str) -> None:
        """Queue a release without waking anyone (safe in a finalizer: no lock taken)."""
        self.pending.append((keys, slot_id))

    def _start_flusher(self) -> None:
        # Threads do not survive fork: a forked worker starts its own.
        pid = os.getpid()
        _at_exit(self)
        with self._sync_lock:
            if self._flusher is None or self._flusher_pid != pid:
                self._flusher_pid = pid
                self._stopping = False
                self._wake = threading.Event()
                self._flusher = threading.Thread(
                    target=self._flush_loop,
                    args=(self._wake,),
                    name="seawall-concurrency-release",
                    daemon=True,
                )
                self._flusher.start()

    def _flush_loop(self, wake: threading.Event) -> None:
        # Sends the releases no acquire carried within _FLUSH_DELAY (idle
        # periods, the last requests of a burst); wakes once a second anyway
        # for releases queued by finalizers.
        while not self._stopping:
            wake.wait(1.0)
            wake.clear()
            if self._stopping:
                break
            if self.pending:
                time.sleep(_FLUSH_DELAY)
                self.send_pending()

    def send_pending(self) -> bool:
        """Send every pending release now with the sync client; return whether all went."""
        while self.pending:
            taken = self._take_pending()
            if not taken:
                break
            args = self._args([self.global_key], "", taken)
            try:
                self._eval(args)
            except Exception:
                self.release_errors += len(taken)
                self._give_back(taken)
                return False
        return True

    async def asend_pending(self) -> bool:
        """Send every pending release now with the loop's async client."""
        while self.pending:
            taken = self._take_pending()
            if not taken:
                break
            args = self._args([self.global_key], "", taken)
            try:
                await self._aeval(args)
            except Exception:
                self.release_errors += len(taken)
                self._give_back(taken)
                return False
        return True

    def flush(self, timeout: float = 1.0) -> bool:
        """Send the pending releases now (tests, shutdown); return whether they all went."""
        del timeout  # each call is bounded by the storage timeout
        return self.send_pending()

    def close(self) -> None:
        """Send pending releases, stop the flusher thread and close the sync client."""
        self.send_pending()
        thread = self._flusher
        if thread is not None and self._flusher_pid == os.getpid():
            self._stopping = True
            self._wake.set()
            thread.join(timeout=2.0)
        self._flusher = None
        client, self._sync = self._sync, None
        fast, self._sync_fast = self._sync_fast, None
        if fast is not None:
            fast.close()
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Send pending releases, then close the running loop's async client."""
        await self.asend_pending()
        both = self._async.pop()
        if both is not None:
            client, fast = both
            if fast is not None:
                await fast.aclose()
            await client.aclose()


#: Stores with a flusher in this process: their last releases go at exit.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
_EXIT_HOOK: list[int] = []


def _at_exit(store: Any) -> None:
    """Send *store*'s pending releases when the process exits.

    A WSGI worker that exits cleanly (gunicorn's ``max_requests``, a
    restart, a reload) would otherwise take its last releases with it (the
    flusher is a daemon thread), and their slots stay taken until
    ``slot_ttl``: after a few recycles every request got a 503.
    """
    _LIVE.add(store)
    pid = os.getpid()
    if pid not in _EXIT_HOOK:
        _EXIT_HOOK.append(pid)
        atexit.register(_flush_all, pid)


def _flush_all(pid: int) -> None:
    if os.getpid() != pid:
        return  # registered in a parent before a fork: its child sends its own
    for store in list(_LIVE):
        with contextlib.suppress(Exception):
            store.send_pending()


class LocalWait:
    """Effect: wait up to *max_wait* s in the local queue for a slot of *key*.

    Answers :data:`~seawall._concurrency.local.OK` (got a slot), ``QUEUE_FULL``
    (no room to wait) or ``0`` (waited *max_wait* in vain).
    """

    __slots__ = ("key", "max_wait", "pool")

    def __init__(self, pool: LocalSlots, key: str | None, max_wait: float) -> None:
        self.pool = pool
        self.key = key
        self.max_wait = max_wait

    def __repr__(self) -> str:
        return f"LocalWait(key={self.key!r}, max_wait={self.max_wait})"

    def run(self) -> int:
        """Wait on this WSGI thread."""
        event = threading.Event()
        got = self.pool.enqueue(self.key, event.set)
        if not isinstance(got, Waiter):
            return got
        event.wait(self.max_wait)
        return OK if self.pool.leave(got) else 0

    async def arun(self) -> int:
        """Wait on the event loop."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            # Releases may come from another thread (or loop): hop onto ours.
            loop.call_soon_threadsafe(event.set)

        got = self.pool.enqueue(self.key, wake)
        if not isinstance(got, Waiter):
            return got
        try:
            await asyncio.wait_for(event.wait(), self.max_wait)
        except asyncio.TimeoutError:
            pass
        except BaseException:
            # Cancelled while queued: never keep a slot nobody will release.
            if self.pool.leave(got):
                self.pool.release(self.key)
            raise
        return OK if self.pool.leave(got) else 0


class Gate:
    """Counts the requests of this process polling Redis for a slot: the wait queue."""

    __slots__ = ("size", "waiting")

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiting = 0

    def enter(self) -> bool:
        """Join the queue if it has room; return whether it had."""
        # Plain increments: a rare miscount under thread contention moves the
        # queue bound by one; it never admits a request past the limits.
        if self.waiting >= self.size:
            return False
        self.waiting += 1
        return True

    def leave(self) -> None:
        """Leave the queue."""
        self.waiting -= 1


class RedisAcquire:
    """Effect: take a shared slot, polling for up to *max_wait* s if none is free.

    Answers 1 (got it), 0 (global limit full), -1 (the key's limit full) or
    -2 (the wait queue, *gate*, is full); raises
    :class:`~seawall.exceptions.StorageError` if Redis fails.
    """

    __slots__ = ("gate", "keys", "max_wait", "slot_id", "slots")

    def __init__(
        self,
        slots: RedisSlots,
        keys: list[str],
        slot_id: str,
        max_wait: float = 0.0,
        gate: Gate | None = None,
    ) -> None:
        self.slots = slots
        self.keys = keys
        self.slot_id = slot_id
        self.max_wait = max_wait
        self.gate = gate

    def __repr__(self) -> str:
        return f"RedisAcquire(keys={self.keys!r}, max_wait={self.max_wait})"

    def run(self) -> int:
        """Acquire with the sync client; sleep between polls on this thread."""
        got = self.slots.acquire(self.keys, self.slot_id)
        if got == OK or self.max_wait <= 0:
            return got
        gate = self.gate
        if gate is not None and not gate.enter():
            return QUEUE_FULL
        try:
            deadline = time.monotonic() + self.max_wait
            pause = _POLL_FIRST
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return got
                time.sleep(min(pause, left))
                pause = min(pause * 2, _POLL_MAX)
                got = self.slots.acquire(self.keys, self.slot_id)
                if got == OK:
                    return got
        finally:
            if gate is not None:
                gate.leave()

    async def arun(self) -> int:
        """Acquire with the loop's async client; ``asyncio.sleep`` between polls."""
        got = await self.slots.aacquire(self.keys, self.slot_id)
        if got == OK or self.max_wait <= 0:
            return got
        gate = self.gate
        if gate is not None and not gate.enter():
            return QUEUE_FULL
        try:
            deadline = time.monotonic() + self.max_wait
            pause = _POLL_FIRST
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return got
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, _POLL_MAX)
                got = await self.slots.aacquire(self.keys, self.slot_id)
                if got == OK:
                    return got
        finally:
            if gate is not None:
                gate.leave()
