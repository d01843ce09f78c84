"""One EVALSHA per request, sent on a redis-py connection the backend keeps.

Theory of operation
-------------------
redis-py's ``execute_command`` checks a connection out of its pool and back
in for every command, and wraps the command in its retry and observability
machinery: measured on redis-py 8.2, about 36 µs of client CPU per command
on the sync client and about 40 µs on the asyncio one, more than the rest of
a rate-limited request. The rate limiter sends one kind of command, so it
keeps the connections it has used on a free list of its own and sends on
them directly, through redis-py's public connection API
(``send_packed_command``, ``read_response``): redis-py still makes,
configures, authenticates, health-checks and times out every connection,
and its parser reads every reply.

Invariants:

1. A connection is on the free list only after a whole reply was read from
   it, so it is never shared by two requests in flight and never holds a
   stale reply. Any failure other than an error reply (a ``ResponseError``,
   read whole) disconnects it (redis-py's own connection methods do so) and
   hands it back to the pool.
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

Redis Cluster clients, and clients the user made single-connection, keep
redis-py's own ``execute_command`` (the backend checks :func:`pool_of`).
redis-py's command-level OpenTelemetry metrics do not see these calls.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seawall._ratelimit.quota import Quota

__all__ = ["AsyncConnections", "Connections", "evalsha_head", "frame", "pool_of"]


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


#: Small integers (key counts, costs) as RESP bulk strings.
_SMALL_BULK = tuple(_bulk(str(i).encode()) for i in range(64))
#: Array headers for commands of up to 64 arguments.
_ARRAY = tuple(b"*%d\r\n" % i for i in range(64))


def evalsha_head(sha: str) -> bytes:
    """``EVALSHA <sha>`` as the first two bulk strings of a command."""
    return _bulk(b"EVALSHA") + _bulk(sha.encode())


def frame(head: bytes, keys: Sequence[str], quotas: Sequence[Quota], cost: int) -> list[bytes]:
    """The whole EVALSHA command for *keys*, ``cost`` and each quota's arguments.

    Returned as a one-item list, the form ``send_packed_command`` sends as is.
    """
    n = len(keys)
    count = 4 + n + 2 * len(quotas)
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
    return [b"".join(parts)]


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


#: Every free list of this process, so a forked child can forget them.
_ALL: weakref.WeakSet[_FreeList] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for connections in list(_ALL):
        connections.free = []


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_after_fork)


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

    def call(self, command: list[bytes]) -> Any:
        """Send *command*, return its reply; redis-py's exceptions as redis-py raises them."""
        try:
            # list.pop and list.append are atomic: threads never share one.
            conn = self.free.pop()
        except IndexError:
            return self._send(self.pool.get_connection(), command, retry=False)
        return self._send(conn, command, retry=True)

    def _send(self, conn: Any, command: list[bytes], *, retry: bool) -> Any:
        try:
            conn.send_packed_command(command)
            reply = conn.read_response()
        except self._reply_error:
            # An error reply (NOSCRIPT, say) was read whole: the connection is sound.
            self.free.append(conn)
            raise
        except self._connection_error:
            # redis-py disconnected it already; the pool reconnects it when next used.
            self.pool.release(conn)
            if retry:
                return self._send(self.pool.get_connection(), command, retry=False)
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

    async def call(self, command: list[bytes]) -> Any:
        """Send *command* and await its reply."""
        try:
            conn = self.free.pop()
        except IndexError:
            return await self._send(await self.pool.get_connection(), command, retry=False)
        return await self._send(conn, command, retry=True)

    async def _send(self, conn: Any, command: list[bytes], *, retry: bool) -> Any:
        try:
            await conn.send_packed_command(command)
            reply = await conn.read_response()
        except self._reply_error:
            self.free.append(conn)
            raise
        except self._connection_error:
            await self.pool.release(conn)
            if retry:
                return await self._send(await self.pool.get_connection(), command, retry=False)
            raise
        except BaseException:
            # Cancelled or timed out mid-command: redis-py's connection methods
            # disconnect on any exception; the pool takes it back.
            await conn.disconnect(nowait=True)
            await self.pool.release(conn)
            raise
        self.free.append(conn)
        return reply
