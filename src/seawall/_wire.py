"""Redis calls on connections kept out of redis-py's pool: one write, its replies, bounded.

Used by the rate limiter's Redis backend (one write per request: an EVALSHA,
or three plain commands), by ConcurrencyLimit's shared slots and by the
shared breaker store (their scripts as EVALSHA).

Theory of operation
-------------------
redis-py's ``execute_command`` checks a connection out of its pool and back
in for every command, and wraps the command in its retry and observability
machinery: measured on redis-py 8.2, about 36 µs of client CPU per command
on the sync client and about 40 µs on the asyncio one, more than the rest of
a rate-limited request. Each caller sends few kinds of command, so it
keeps the connections it has used on a free list of its own and sends on
them directly, through redis-py's public connection API
(``send_packed_command``, ``read_response``): redis-py still makes,
configures, authenticates, health-checks and times out every connection,
and its parser reads every reply.

Invariants:

1. A connection is on the free list only after every reply to what was
   sent on it was read, so it is never shared by two requests in flight and
   never holds a stale reply. An error reply (a ``ResponseError``) is read
   whole, and with several commands in one write the replies after it are
   read too before it is raised. Any other failure disconnects the
   connection (redis-py's own connection methods do so) and hands it back to
   the pool.
2. A connection that waited on the free list may have been closed by the
   server (an idle ``timeout``, a restart, a failover): a ``ConnectionError``
   on such a connection is retried once on a connection the pool checks out
   (and, as ever, checks). A timeout is never retried, so a call still costs
   at most one storage timeout.
3. After ``fork()`` the child forgets its parent's free lists: a socket is
   never shared between processes.
4. The frame is the command redis-py's packer would send (RESP: an array of
   bulk strings), built from parts computed once: the script's SHA, each
   quota's arguments (:attr:`~seawall._ratelimit.quota.Quota.resp`).
5. A rule of one fixed window, at a cost of 1 (the default rule), needs no
   script (:func:`fixed_frame`): ``EVALSHA`` costs a Redis 7 server about
   8 µs of CPU per call before the script does anything, the three plain
   commands about 1.4 µs together (``INFO commandstats``, 2026-12-06).

Redis Cluster clients, and clients the user made single-connection, keep
redis-py's own ``execute_command`` (the backend checks :func:`pool_of`).
redis-py's command-level OpenTelemetry metrics do not see these calls.
"""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from seawall._ratelimit.quota import Quota

__all__ = [
    "DEADLINE",
    "AsyncConnections",
    "Deadline",
    "Connections",
    "NeverRaised",
    "akept",
    "evalsha_frame",
    "evalsha_head",
    "fixed_frame",
    "frame",
    "kept",
    "no_script_error",
    "pexpire_frame",
    "PerLoop",
    "pool_of",
    "require_redis",
    "setup_timeout",
]

_T = TypeVar("_T")


class PerLoop(Generic[_T]):
    """One value per event loop (an asyncio client is bound to the loop it was made on).

    Loops that have closed are forgotten when a new loop asks: weak keys
    would not do, since a client's connections refer to their loop, so
    the value would keep its own key alive. A program that runs a loop
    per call (``asyncio.run`` in a loop, an async view under WSGI without a
    seawall request) then holds the clients of its live loops only.
    """

    __slots__ = ("_last", "_make", "_values")

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._values: dict[asyncio.AbstractEventLoop, _T] = {}
        self._last: tuple[asyncio.AbstractEventLoop, _T] | None = None

    def get(self) -> _T:
        """The running loop's value, made on its first call there."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        value = self._values.get(loop)
        if value is None:
            # list(): another thread may add or drop a loop meanwhile.
            for old in list(self._values):
                if old.is_closed():
                    self._values.pop(old, None)
            value = self._values[loop] = self._make()
        self._last = (loop, value)
        return value

    def pop(self) -> _T | None:
        """Forget the running loop's value and return it (``None`` if it had none)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            self._last = None
        return self._values.pop(loop, None)

    def __len__(self) -> int:
        return len(self._values)


def require_redis(setting: str) -> None:
    """Raise :class:`ConfigurationError` now when redis-py is not installed; import it now.

    Every Redis client is made at the first request, so an app starts while
    its Redis is down; without this check a missing ``redis`` package would
    look the same, a storage outage on every request, forever.

    The client modules are imported here, at the layer's construction
    (startup), never by a worker's first request: importing redis-py's
    asyncio, Cluster and Sentinel clients takes 100-200 ms, which would
    block the event loop (and every request on it) that long.
    """
    import importlib.util

    if importlib.util.find_spec("redis") is None:
        from seawall.exceptions import ConfigurationError

        msg = f"{setting}: a Redis URI needs redis-py installed: pip install 'seawall[redis]'"
        raise ConfigurationError(msg)
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.asyncio.sentinel
    import redis.backoff
    import redis.cluster
    import redis.exceptions
    import redis.retry
    import redis.sentinel
    import redis.utils

    # redis-py's first connection reads its version from the package
    # metadata (about 15 ms, then cached): read it now as well.
    lib_version = getattr(redis.utils, "get_lib_version", None)
    if lib_version is not None:
        lib_version()


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


#: Small integers (key counts, costs) as RESP bulk strings.
_SMALL_BULK = tuple(_bulk(str(i).encode()) for i in range(64))
#: Array headers for commands of up to 64 arguments.
_ARRAY = tuple(b"*%d\r\n" % i for i in range(64))


#: How long past its deadline a call still waits, once, before it is cancelled.
_GRACE = 0.001


class Deadline:
    """``async with Deadline(seconds)``: ``TimeoutError`` if the block outlasts *seconds*.

    As ``asyncio.timeout``, with one difference: it measures Redis, not the
    event loop. When the deadline comes, the block is given one more pass of
    the loop (:data:`_GRACE`) before it is cancelled. A reply that arrived
    while the loop was running other work (another request's handler
    burning 30 ms of CPU) was read by then, so the call succeeds; a Redis
    that did not answer costs its timeout plus a millisecond. Without it a
    healthy Redis counted as down whenever the loop lagged past the
    deadline: with ``on_storage_error="deny"``, 39 of 40 requests got a 503
    under a CPU-heavy handler; with ``"allow"``, the limits switched off.

    The grace goes through the loop's timers rather than ``call_soon`` so
    that every loop polls its sockets in between (libuv runs timers before
    polling). A cancellation from elsewhere stays a cancellation.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_loop", "_seconds", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> Deadline:
        loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - await always runs in a task
            msg = "Deadline needs a task"
            raise RuntimeError(msg)
        self._task = task
        self._expired = False
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        else:  # pragma: no cover - Python 3.10
            self._cancelling = 0
        self._handle = loop.call_at(loop.time() + self._seconds, self._due)
        return self

    def _due(self) -> None:
        self._handle = self._loop.call_at(self._loop.time() + _GRACE, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        self._handle.cancel()
        if not self._expired:
            return
        if sys.version_info >= (3, 11):
            # As asyncio.timeout: only our own cancellation becomes TimeoutError.
            if self._task.uncancel() > self._cancelling:
                return
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            raise TimeoutError from exc


#: The deadline of an asyncio call (:class:`Deadline`). The asyncio clients
#: get no socket timeout and each call is bounded by one of these instead:
#: redis-py's socket timeout costs an ``asyncio.wait_for`` per write (the
#: write then runs as a task of its own) and an ``asyncio.timeout`` per
#: read, about 40k instructions per call together (callgrind).
DEADLINE: Callable[[float], Any] = Deadline

#: The least time a new asyncio connection may take to open (TCP connect,
#: TLS, ``HELLO``): see :func:`setup_timeout`.
_SETUP_FLOOR = 0.1


def setup_timeout(timeout: float) -> float:
    """The bound on opening a connection, for calls bounded by *timeout*.

    Opening is kept out of the call's own deadline (:meth:`AsyncConnections.open`):
    it takes several round trips, and at a worker's first request or after
    a failure a 20 ms budget for all of them failed on a healthy Redis
    under load, so the worker stayed on its fallback for seconds. A
    connection is opened only then, so an outage still costs at most this
    once per probe period.
    """
    return max(_SETUP_FLOOR, 4 * timeout)


def evalsha_head(sha: str) -> bytes:
    """``EVALSHA <sha>`` as the first two bulk strings of a command."""
    return _bulk(b"EVALSHA") + _bulk(sha.encode())


def evalsha_frame(head: bytes, *args: bytes | str | int) -> list[bytes]:
    """``EVALSHA`` with *head* (:func:`evalsha_head`, framed once) and *args*.

    *args* are the key count, the keys and the script's arguments, framed as
    redis-py frames bytes, str (UTF-8) and int arguments.
    """
    n = len(args) + 2
    parts = [_ARRAY[n] if n < 64 else b"*%d\r\n" % n, head]
    for arg in args:
        parts.append(_bulk(arg if isinstance(arg, bytes) else str(arg).encode()))
    return [b"".join(parts)]


def frame(
    head: bytes, keys: Sequence[str], quotas: Sequence[Quota], cost: int, consume: bool = True
) -> list[bytes]:
    """The whole EVALSHA command for *keys*, ``cost`` and each quota's arguments.

    Returned as a one-item list, the form ``send_packed_command`` sends as is.
    *consume* false adds the scripts' trailing ``0`` (test, do not consume).
    """
    n = len(keys)
    count = 4 + n + 2 * len(quotas) + (not consume)
    parts = [
        _ARRAY[count] if count < 64 else b"*%d\r\n" % count,
        head,
        _SMALL_BULK[n] if n < 64 else _bulk(str(n).encode()),
    ]
    for key in keys:
        parts.append(_bulk(key.encode()))
    parts.append(_SMALL_BULK[cost] if 0 <= cost < 64 else _bulk(str(cost).encode()))
    for quota in quotas:
        parts.append(quota.resp)
    if not consume:
        parts.append(_SMALL_BULK[0])
    return [b"".join(parts)]


_SET = b"*6\r\n$3\r\nSET\r\n"
_ZERO = b"$1\r\n0\r\n"
_INCR = b"*2\r\n$4\r\nINCR\r\n"
_PTTL = b"*2\r\n$4\r\nPTTL\r\n"
_PEXPIRE = b"*3\r\n$7\r\nPEXPIRE\r\n"


def fixed_frame(key: str, quota: Quota) -> list[bytes]:
    """``SET key 0 PX <window> NX``, ``INCR key``, ``PTTL key``: three commands, one write.

    One fixed window and a cost of 1 need no script: the first command
    starts the window if none is running, the second counts the request, the
    third tells when the window ends. Redis answers the three in order, in
    one reply packet; a script would cost the server about 8 µs more per
    request (EVALSHA's own overhead on Redis 7, measured with
    ``INFO commandstats``).
    """
    bulk = _bulk(key.encode())
    return [b"".join((_SET, bulk, _ZERO, quota.px, _INCR, bulk, _PTTL, bulk))]


def pexpire_frame(key: str, quota: Quota) -> list[bytes]:
    """``PEXPIRE key <window>``: gives a counter that lost its TTL one again."""
    return [_PEXPIRE + _bulk(key.encode()) + _bulk(str(quota.window_ms).encode())]


def pool_of(client: Any, asynchronous: bool) -> Any:
    """*client*'s connection pool when the fast path may use it, else ``None``."""
    if asynchronous:
        import redis.asyncio

        kind: type = redis.asyncio.Redis
    else:
        import redis

        kind = redis.Redis
    if not isinstance(client, kind) or getattr(client, "connection", None) is not None:
        return None
    return getattr(client, "connection_pool", None)


def kept(client: Any) -> Connections | None:
    """A free list over sync *client*'s pool, or ``None`` where it cannot be used."""
    pool = pool_of(client, asynchronous=False)
    return Connections(pool) if pool is not None else None


def akept(client: Any) -> AsyncConnections | None:
    """The same for a ``redis.asyncio`` client."""
    pool = pool_of(client, asynchronous=True)
    return AsyncConnections(pool) if pool is not None else None


#: Every free list of this process, so a forked child can forget them.
_ALL: weakref.WeakSet[_FreeList] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for connections in list(_ALL):
        connections.free = []


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_after_fork)


class NeverRaised(Exception):
    """Stands for redis-py's ``NoScriptError`` until a client exists (redis is an extra)."""


def no_script_error() -> type[Exception]:
    """redis-py's ``NoScriptError``, imported when a client is built."""
    from redis.exceptions import NoScriptError

    return NoScriptError


def _errors() -> tuple[type[Exception], type[Exception]]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    return ResponseError, RedisConnectionError


class _FreeList:
    """What both paths keep: the pool, the free connections, redis-py's error classes."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.free: list[Any] = []
        self._reply_error, self._connection_error = _errors()
        _ALL.add(self)


class Connections(_FreeList):
    """The free list of sync connections over one redis-py ``ConnectionPool``."""

    def call(self, command: list[bytes], replies: int = 1) -> Any:
        """Send *command*, return its reply; redis-py's exceptions as redis-py raises them.

        *command* may hold several commands: with ``replies`` > 1 the answer
        is the list of their replies, every one read before an error reply
        is raised (so the connection stays in step).
        """
        try:
            # list.pop and list.append are atomic: threads never share one.
            conn = self.free.pop()
        except IndexError:
            return self._send(self.pool.get_connection(), command, replies, retry=False)
        return self._send(conn, command, replies, retry=True)

    def _read(self, conn: Any, replies: int) -> list[Any]:
        out: list[Any] = []
        error: Exception | None = None
        for _ in range(replies):
            try:
                out.append(conn.read_response())
            except self._reply_error as exc:
                error = error or exc
                out.append(exc)
        if error is not None:
            raise error
        return out

    def _send(self, conn: Any, command: list[bytes], replies: int, *, retry: bool) -> Any:
        try:
            conn.send_packed_command(command)
            reply = conn.read_response() if replies == 1 else self._read(conn, replies)
        except self._reply_error:
            # An error reply (NOSCRIPT, say) was read whole: the connection is sound.
            self.free.append(conn)
            raise
        except self._connection_error:
            # redis-py disconnected it already; the pool reconnects it when next used.
            self.pool.release(conn)
            if retry:
                return self._send(self.pool.get_connection(), command, replies, retry=False)
            raise
        except BaseException:
            conn.disconnect()
            self.pool.release(conn)
            raise
        self.free.append(conn)
        return reply

    def close(self) -> None:
        """Hand every kept connection back to the pool."""
        free, self.free = self.free, []
        for conn in free:
            self.pool.release(conn)


class AsyncConnections(_FreeList):
    """The same over one ``redis.asyncio`` pool, for one event loop."""

    async def call(self, command: list[bytes], replies: int = 1) -> Any:
        """Send *command* and await its reply (or its *replies*, as :meth:`Connections.call`)."""
        try:
            conn = self.free.pop()
        except IndexError:
            conn = await self.pool.get_connection()
            return await self._send(conn, command, replies, retry=False)
        return await self._send(conn, command, replies, retry=True)

    async def open(self, seconds: float) -> None:
        """Put a connected connection on the free list, opening it within *seconds*.

        Called before a call's deadline starts when the list is empty, so
        the call itself is one write and its replies (see :func:`setup_timeout`).
        """
        async with Deadline(seconds):
            conn = await self.pool.get_connection()
        self.free.append(conn)

    async def _read(self, conn: Any, replies: int) -> list[Any]:
        out: list[Any] = []
        error: Exception | None = None
        for _ in range(replies):
            try:
                out.append(await conn.read_response())
            except self._reply_error as exc:
                error = error or exc
                out.append(exc)
        if error is not None:
            raise error
        return out

    async def _send(self, conn: Any, command: list[bytes], replies: int, *, retry: bool) -> Any:
        try:
            await conn.send_packed_command(command)
            if replies == 1:
                reply = await conn.read_response()
            else:
                reply = await self._read(conn, replies)
        except self._reply_error:
            self.free.append(conn)
            raise
        except self._connection_error:
            await self.pool.release(conn)
            if retry:
                conn = await self.pool.get_connection()
                return await self._send(conn, command, replies, retry=False)
            raise
        except BaseException:
            # Cancelled or timed out mid-command: redis-py's connection methods
            # disconnect on any exception; the pool takes it back.
            await conn.disconnect(nowait=True)
            await self.pool.release(conn)
            raise
        self.free.append(conn)
        return reply

    async def aclose(self) -> None:
        """Hand every kept connection back to the pool."""
        free, self.free = self.free, []
        for conn in free:
            await self.pool.release(conn)
