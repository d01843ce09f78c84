"""Breaker state shared by every worker and host through Redis.

Theory of operation:

1. One breaker is two keys under one hash tag (so it runs on Redis Cluster
   too): ``{prefix:br:name}:s``, a hash with the state, the epoch number
   (``gen``), when it opened, the probe counters, the consecutive-failure
   count and the count window's totals; and ``{prefix:br:name}:w``, the
   window itself (a list of outcome codes for a count window, a hash of
   per-second counters for a time window).
2. Taking a permit (``ACQUIRE``) and giving it back with its outcome
   (``RECORD``) are one Lua script each: one round trip, atomic. So in
   HALF_OPEN exactly ``permitted_calls_in_half_open`` permits are given out
   across all processes, and one worker's failures open the breaker for all.
   The verdicts are the same as :class:`~seawall._breaker.engine.BreakerConfig`'s.
3. A permit carries its epoch; an outcome from an older epoch is dropped by
   the script (the same rule as the local engine).
4. Time is Redis's own ``TIME`` (hosts with skewed clocks agree), unless the
   breaker was given a clock (tests pass a ``ManualClock``).
5. The sync client (redis-py) serves WSGI threads and plain calls; a
   ``redis.asyncio`` client per event loop serves ASGI and ``async`` code,
   so nothing blocks the loop. Every call is bounded by *timeout*. The
   scripts go out as ``EVALSHA`` on connections kept out of redis-py's pool,
   as the rate limiter's (:mod:`seawall._wire`), falling back to
   redis-py's ``Script`` when the server lost them; an asyncio call is
   bounded by one ``asyncio.timeout`` (the asyncio clients have no socket
   timeout of their own).
6. After a failure the store counts as down for *probe_interval* seconds:
   the breaker uses its local state meanwhile (no timeout paid per call),
   then one call probes. One log line per transition
   (``seawall.breaker.storage_down`` / ``storage_up``), not one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar

from seawall._breaker.engine import CLOSED, HALF_OPEN, HALF_OPEN_RETRY_AFTER, OPEN
from seawall._core import background
from seawall._log import logger, serving_wsgi
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
)
from seawall.exceptions import StorageError

if TYPE_CHECKING:
    from seawall._breaker.engine import BreakerConfig, Change

__all__ = ["RedisBreakerStore", "SharedPermit"]


_STATES = (CLOSED, OPEN, HALF_OPEN)  # index = the state's code in Redis
_CODES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

_NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
"""

# ARGV: now, wait_in_open, permitted, probe_timeout, ttl, half-open retry-after.
# Answers {kind (0 closed permit, 1 probe permit, -1 refused), gen,
#          retry_after (string: Lua numbers become integers), state, entered half-open (0/1)}.
_ACQUIRE = (
    _NOW
    + """
local K = KEYS[1]
local s = redis.call('HMGET', K, 'st', 'gen', 'oa', 'ha', 'pi')
local st = tonumber(s[1]) or 0
local gen = tonumber(s[2]) or 0
if st == 0 then return {0, gen, '0', 0, 0} end
local entered = 0
local pi = tonumber(s[5]) or 0
if st == 1 then
  local left = (tonumber(s[3]) or 0) + tonumber(ARGV[2]) - now
  if left > 0 then return {-1, gen, tostring(left), 1, 0} end
  gen = gen + 1
  pi = 0
  entered = 1
  redis.call('HSET', K, 'st', 2, 'gen', gen, 'ha', now, 'pi', 0, 'pd', 0, 'pf', 0, 'ps', 0)
  redis.call('EXPIRE', K, tonumber(ARGV[5]))
elseif now - (tonumber(s[4]) or 0) >= tonumber(ARGV[4]) then
  -- probes that never answered: give the permits out again
  gen = gen + 1
  pi = 0
  redis.call('HSET', K, 'gen', gen, 'ha', now, 'pi', 0, 'pd', 0, 'pf', 0, 'ps', 0)
end
if pi >= tonumber(ARGV[3]) then return {-1, gen, ARGV[6], 2, entered} end
redis.call('HINCRBY', K, 'pi', 1)
return {1, gen, '0', 2, entered}
"""
)

# ARGV: now, gen, probe (0/1), outcome (0 ok, 1 failed, 2 ignored), slow (0/1),
#       window type (0 count, 1 time), size, minimum calls, failure threshold
#       (-1 off), slow threshold (-1 off), fail_max (0 off), permitted, ttl.
# Answers {state, transition (0 none, 1 opened, 3 closed), reason, value,
#          calls, failures, slow}.
_RECORD = (
    _NOW
    + """
local K = KEYS[1]
local W = KEYS[2]
local s = redis.call('HMGET', K, 'st', 'gen')
local st = tonumber(s[1]) or 0
local gen = tonumber(s[2]) or 0
if tonumber(ARGV[2]) ~= gen then return {st, 0, 'stale', '0', 0, 0, 0} end
local outcome = tonumber(ARGV[4])
local slow = tonumber(ARGV[5])
local ttl = tonumber(ARGV[13])
local fthr = tonumber(ARGV[9])
local sthr = tonumber(ARGV[10])
local fmax = tonumber(ARGV[11])
local function enter(to)
  redis.call('HSET', K, 'st', to, 'gen', gen + 1, 'oa', now, 'cf', 0, 'n', 0, 'f', 0,
             'sl', 0, 'pi', 0, 'pd', 0, 'pf', 0, 'ps', 0)
  redis.call('DEL', W)
  redis.call('EXPIRE', K, ttl)
end
if tonumber(ARGV[3]) == 1 then
  if st ~= 2 then return {st, 0, 'stale', '0', 0, 0, 0} end
  if outcome == 2 then
    redis.call('HINCRBY', K, 'pi', -1)
    return {st, 0, '', '0', 0, 0, 0}
  end
  local pd = redis.call('HINCRBY', K, 'pd', 1)
  local pf = redis.call('HINCRBY', K, 'pf', outcome)
  local ps = redis.call('HINCRBY', K, 'ps', slow)
  local permitted = tonumber(ARGV[12])
  local verdict = -1
  if pf > 0 and (fmax > 0 or fthr < 0) then verdict = 1
  elseif fthr >= 0 and pf / permitted >= fthr then verdict = 1
  elseif sthr >= 0 and ps / permitted >= sthr then verdict = 1
  elseif pd >= permitted then verdict = 0 end
  if verdict < 0 then return {2, 0, '', '0', pd, pf, ps} end
  enter(verdict)
  if verdict == 1 then return {1, 1, 'probe_failed', tostring(pf), pd, pf, ps} end
  return {0, 3, 'probes_succeeded', '0', pd, pf, ps}
end
if st ~= 0 or outcome == 2 then return {st, 0, 'ignored', '0', 0, 0, 0} end
local code = outcome + 2 * slow
local cf = 0
if outcome == 1 then cf = redis.call('HINCRBY', K, 'cf', 1) else redis.call('HSET', K, 'cf', 0) end
local calls, fails, slows
local size = tonumber(ARGV[7])
if tonumber(ARGV[6]) == 0 then
  redis.call('LPUSH', W, code)
  calls = redis.call('HINCRBY', K, 'n', 1)
  fails = redis.call('HINCRBY', K, 'f', outcome)
  slows = redis.call('HINCRBY', K, 'sl', slow)
  if redis.call('LLEN', W) > size then
    local old = tonumber(redis.call('RPOP', W))
    local old_failed = old % 2
    local old_slow = (old - old_failed) / 2
    calls = redis.call('HINCRBY', K, 'n', -1)
    -- Only non-zero decrements: Lua formats -0 as "-0", which HINCRBY rejects.
    if old_failed > 0 then fails = redis.call('HINCRBY', K, 'f', -old_failed) end
    if old_slow > 0 then slows = redis.call('HINCRBY', K, 'sl', -old_slow) end
  end
  redis.call('EXPIRE', W, ttl)
else
  local sec = math.floor(now)
  redis.call('HINCRBY', W, 'c:' .. sec, 1)
  if outcome == 1 then redis.call('HINCRBY', W, 'f:' .. sec, 1) end
  if slow == 1 then redis.call('HINCRBY', W, 's:' .. sec, 1) end
  calls, fails, slows = 0, 0, 0
  local all = redis.call('HGETALL', W)
  local oldest = sec - size
  for i = 1, #all, 2 do
    local field = all[i]
    if tonumber(string.sub(field, 3)) <= oldest then
      redis.call('HDEL', W, field)
    else
      local kind = string.sub(field, 1, 1)
      local v = tonumber(all[i + 1])
      if kind == 'c' then calls = calls + v elseif kind == 'f' then fails = fails + v
      else slows = slows + v end
    end
  end
  redis.call('EXPIRE', W, size + 60)
end
redis.call('EXPIRE', K, ttl)
if fmax > 0 and cf >= fmax then
  enter(1)
  return {1, 1, 'consecutive_failures', tostring(cf), calls, fails, slows}
end
local minimum = tonumber(ARGV[8])
if tonumber(ARGV[6]) == 0 and size < minimum then minimum = size end
if calls >= minimum and calls > 0 then
  if fthr >= 0 and fails / calls >= fthr then
    enter(1)
    return {1, 1, 'failure_rate', tostring(fails / calls), calls, fails, slows}
  end
  if sthr >= 0 and slows / calls >= sthr then
    enter(1)
    return {1, 1, 'slow_call_rate', tostring(slows / calls), calls, fails, slows}
  end
end
return {0, 0, '', '0', calls, fails, slows}
"""
)

# ARGV: now, state, ttl. Answers the previous state.
_SET = (
    _NOW
    + """
local K = KEYS[1]
local s = redis.call('HMGET', K, 'st', 'gen')
local gen = (tonumber(s[2]) or 0) + 1
redis.call('HSET', K, 'st', tonumber(ARGV[2]), 'gen', gen, 'oa', now, 'ha', now, 'cf', 0,
           'n', 0, 'f', 0, 'sl', 0, 'pi', 0, 'pd', 0, 'pf', 0, 'ps', 0)
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', K, tonumber(ARGV[3]))
return tonumber(s[1]) or 0
"""
)

#: ``EVALSHA <sha>`` of ACQUIRE, RECORD and SET, framed once (Redis's script id is the SHA-1).
_HEADS = tuple(
    evalsha_head(hashlib.sha1(src.encode()).hexdigest()) for src in (_ACQUIRE, _RECORD, _SET)
)


class SharedPermit:
    """A permit from Redis: the epoch (``gen``) it was issued in, and whether it probes.

    *owner* is the breaker that took it (set by the breaker), as a local
    permit's; *quiet* is always false: only Redis knows the shared window.
    """

    __slots__ = ("gen", "owner", "probe")

    quiet: ClassVar[bool] = False

    def __init__(self, gen: int, probe: bool) -> None:
        self.gen = gen
        self.probe = probe
        self.owner: Any = None

    def __repr__(self) -> str:
        return f"SharedPermit(gen={self.gen}, probe={self.probe})"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBreakerStore:
    """One breaker's shared state in Redis: clients, scripts and the storage's own health.

    Args:
        uri: a ``redis://`` / ``rediss://`` / ``unix://`` URI.
        name: the breaker's name (part of the keys).
        key_prefix: namespaces the keys.
        config: the breaker's settings (sent to the scripts).
        timeout: seconds any one Redis call may take.
        clock: an injected clock (tests); ``None``: Redis's own ``TIME``.
        probe_interval: seconds the store counts as down after a failure.
        ttl: seconds the keys live after the last write (idle breakers vanish).
    """

    def __init__(
        self,
        uri: str,
        *,
        name: str,
        key_prefix: str,
        config: BreakerConfig,
        timeout: float = 0.05,
        clock: Callable[[], float] | None = None,
        probe_interval: float = 5.0,
        ttl: int = 86_400,
    ) -> None:
        self.uri = uri
        self.name = name
        tag = f"{{{key_prefix}:br:{name}}}"
        self.keys = [f"{tag}:s", f"{tag}:w"]
        self.timeout = timeout
        self.probe_interval = probe_interval
        self._clock = clock
        c = config
        self._acquire_args = [
            "",
            repr(c.wait_in_open),
            str(c.permitted_calls_in_half_open),
            repr(c.probe_timeout),
            str(ttl),
            repr(HALF_OPEN_RETRY_AFTER),
        ]
        self._record_tail = [
            "0" if c.sliding_window_type == "count" else "1",
            str(c.sliding_window_size),
            str(c.minimum_number_of_calls),
            "-1" if c.failure_rate_threshold is None else repr(c.failure_rate_threshold),
            "-1" if c.slow_call_rate_threshold is None else repr(c.slow_call_rate_threshold),
            str(c.fail_max or 0),
            str(c.permitted_calls_in_half_open),
            str(ttl),
        ]
        self._ttl = str(ttl)
        self._wait_in_open = c.wait_in_open
        # Local time for observed_state (the scripts' clock may be Redis's).
        self._local_clock = clock or time.monotonic
        self.last_state = CLOSED
        # When an OPEN this process saw lets the next call probe (local
        # clock), if it knows: from a refusal's retry-after or its own opening.
        self._half_open_at: float | None = None
        # The shared window's (calls, failures, slow) as the last RECORD here
        # saw them: stats() must not pay a round trip (it may run on a loop).
        self.last_window = (0, 0, 0)
        self._sync: Any = None
        self._sync_scripts: tuple[Any, Any, Any] | None = None
        self._sync_fast: Connections | None = None
        self._lock = threading.Lock()
        # Per event loop: its scripts and, when its client has a pool, its kept connections.
        self._async: PerLoop[tuple[tuple[Any, Any, Any], AsyncConnections | None]] = PerLoop(
            self._new_async
        )
        # redis-py's NoScriptError, bound when a client is built (redis is an extra).
        self._no_script: type[Exception] = NeverRaised
        self._tasks: set[asyncio.Task[Any]] = set()
        self._down_until = 0.0  # invariant: > 0 iff the store is down
        self.errors = 0
        self.calls = 0

    def __repr__(self) -> str:
        return f"RedisBreakerStore({self.name!r}, keys={self.keys[0]!r})"

    # -- health -----------------------------------------------------------------

    def available(self) -> bool:
        """Whether to use Redis now (up, or down long enough that one call probes)."""
        down = self._down_until
        return down == 0.0 or time.monotonic() >= down

    @property
    def observed_state(self) -> str:
        """The state last seen in Redis, as the local engine reports it.

        An OPEN whose wait has elapsed reads as HALF_OPEN (the next call
        will probe), as :attr:`Breaker.current_state` says of a local breaker.
        """
        state = self.last_state
        if state == OPEN:
            at = self._half_open_at
            if at is not None and self._local_clock() >= at:
                return HALF_OPEN
        return state

    def open_left(self) -> float | None:
        """Seconds until the OPEN last seen lets a call probe, if this process knows."""
        at = self._half_open_at
        return None if at is None or self.last_state != OPEN else max(0.0, at - self._local_clock())

    def _seen(self, state: str, open_for: float | None) -> None:
        # open_for: seconds until an OPEN lets a call probe, if known.
        self.last_state = state
        if state != OPEN:
            self._half_open_at = None
        elif open_for is not None:
            self._half_open_at = self._local_clock() + open_for

    def _failed(self, exc: BaseException) -> StorageError:
        self.errors += 1
        was_up = self._down_until == 0.0
        self._down_until = time.monotonic() + self.probe_interval
        if was_up:
            logger.warning(
                "seawall.breaker.storage_down",
                breaker=self.name,
                error=type(exc).__name__,
                fallback="local state",
                retry_in=self.probe_interval,
            )
        return StorageError(f"breaker storage failed: {type(exc).__name__}")

    def _ok(self) -> None:
        self.calls += 1
        if self._down_until != 0.0:
            self._down_until = 0.0
            logger.info("seawall.breaker.storage_up", breaker=self.name)

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    # -- clients ------------------------------------------------------------------

    def _scripts_sync(self) -> tuple[Any, Any, Any]:
        scripts = self._sync_scripts
        if scripts is None:
            with self._lock:
                if self._sync_scripts is None:
                    import redis

                    client = redis.Redis.from_url(
                        self.uri, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
                    )
                    self._sync = client
                    self._sync_fast = kept(client)
                    self._no_script = no_script_error()
                    self._sync_scripts = (
                        client.register_script(_ACQUIRE),
                        client.register_script(_RECORD),
                        client.register_script(_SET),
                    )
                scripts = self._sync_scripts
        return scripts

    def _scripts_async(self) -> tuple[tuple[Any, Any, Any], AsyncConnections | None]:
        return self._async.get()

    def _new_async(self) -> tuple[tuple[Any, Any, Any], AsyncConnections | None]:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(
            self.uri,
            # One deadline per call instead (seawall._wire.DEADLINE).
            socket_timeout=None,
            socket_connect_timeout=self.timeout,
        )
        scripts = (
            client.register_script(_ACQUIRE),
            client.register_script(_RECORD),
            client.register_script(_SET),
        )
        self._no_script = no_script_error()
        return scripts, akept(client)

    def _run_sync(self, index: int, keys: list[str], args: list[str]) -> Any:
        """Run script *index* (ACQUIRE, RECORD, SET) with the sync client."""
        script = self._scripts_sync()[index]
        fast = self._sync_fast
        if fast is not None:
            try:
                return fast.call(evalsha_frame(_HEADS[index], len(keys), *keys, *args))
            except self._no_script:
                pass  # the Script loads it again
        return script(keys=keys, args=args)

    async def _run_async(self, index: int, keys: list[str], args: list[str]) -> Any:
        """Run script *index* on the event loop, bounded by the timeout.

        With the sync client when the loop serves a WSGI request: it was made
        for that request alone (:func:`seawall._log.serving_wsgi`).
        """
        if serving_wsgi():
            return self._run_sync(index, keys, args)
        scripts, fast = self._scripts_async()
        async with DEADLINE(self.timeout):
            return await self._run_async_once(scripts[index], _HEADS[index], fast, keys, args)

    async def _run_async_once(
        self,
        script: Any,
        head: bytes,
        fast: AsyncConnections | None,
        keys: list[str],
        args: list[str],
    ) -> Any:
        if fast is not None:
            try:
                return await fast.call(evalsha_frame(head, len(keys), *keys, *args))
            except self._no_script:
                pass
        return await script(keys=keys, args=args)

    # -- permits ------------------------------------------------------------------

    def _acquired(self, answer: Any) -> tuple[SharedPermit | float, Change | None]:
        self._ok()
        kind, gen, retry, state, entered = answer
        change: Change | None = (OPEN, HALF_OPEN, "wait_elapsed", {}) if entered else None
        if kind < 0:
            seconds = float(_text(retry))
            self._seen(_STATES[int(state)], seconds)
            return seconds, change
        self._seen(_STATES[int(state)], None)
        return SharedPermit(int(gen), kind == 1), change

    def acquire_sync(self) -> tuple[SharedPermit | float, Change | None]:
        """Take a permit (one round trip); raise :class:`StorageError` on failure."""
        args = self._acquire_args.copy()
        args[0] = self._now()
        try:
            answer = self._run_sync(0, self.keys[:1], args)
        except Exception as exc:
            raise self._failed(exc) from exc
        return self._acquired(answer)

    async def acquire_async(self) -> tuple[SharedPermit | float, Change | None]:
        """Take a permit on the event loop; raise :class:`StorageError` on failure."""
        args = self._acquire_args.copy()
        args[0] = self._now()
        try:
            answer = await self._run_async(0, self.keys[:1], args)
        except Exception as exc:
            raise self._failed(exc) from exc
        return self._acquired(answer)

    def _record_args(self, permit: SharedPermit, failed: bool | None, slow: bool) -> list[str]:
        outcome = "2" if failed is None else ("1" if failed else "0")
        return [
            self._now(),
            str(permit.gen),
            "1" if permit.probe else "0",
            outcome,
            "1" if slow and failed is not None else "0",
            *self._record_tail,
        ]

    def _recorded(self, answer: Any, probe: bool) -> Change | None:
        self._ok()
        state, transition, reason, value, calls, failures, slow = answer
        # transition 1: this outcome opened the breaker, for wait_in_open.
        self._seen(_STATES[int(state)], self._wait_in_open if transition == 1 else None)
        if transition == 0:
            if not probe and int(state) == 0 and _text(reason) == "":
                self.last_window = (int(calls), int(failures), int(slow))
            return None
        self.last_window = (0, 0, 0)  # every transition clears the window
        reason_text = _text(reason)
        if transition == 1:
            figures = {"value": round(float(_text(value)), 4), "calls": int(calls),
                       "failures": int(failures), "slow_calls": int(slow)}  # fmt: skip
            return (HALF_OPEN if probe else CLOSED), OPEN, reason_text, figures
        return HALF_OPEN, CLOSED, reason_text, {"probes": int(calls)}

    def record_sync(self, permit: SharedPermit, failed: bool | None, slow: bool) -> Change | None:
        """Give a permit back with its outcome; raise :class:`StorageError` on failure."""
        try:
            answer = self._run_sync(1, self.keys, self._record_args(permit, failed, slow))
        except Exception as exc:
            raise self._failed(exc) from exc
        return self._recorded(answer, permit.probe)

    async def record_async(
        self, permit: SharedPermit, failed: bool | None, slow: bool
    ) -> Change | None:
        """Give a permit back on the event loop; raise :class:`StorageError` on failure."""
        try:
            answer = await self._run_async(1, self.keys, self._record_args(permit, failed, slow))
        except Exception as exc:
            raise self._failed(exc) from exc
        return self._recorded(answer, permit.probe)

    # -- manual state -------------------------------------------------------------

    def set_state_sync(self, state: str) -> None:
        """Force *state* for every process (manual ``open()``/``close()``)."""
        try:
            self._run_sync(2, self.keys, [self._now(), str(_CODES[state]), self._ttl])
        except Exception as exc:
            raise self._failed(exc) from exc
        self._ok()
        self._seen(state, self._wait_in_open)
        self.last_window = (0, 0, 0)

    async def set_state_async(self, state: str) -> None:
        """Force *state* for every process, on the event loop."""
        try:
            await self._run_async(2, self.keys, [self._now(), str(_CODES[state]), self._ttl])
        except Exception as exc:
            raise self._failed(exc) from exc
        self._ok()
        self._seen(state, self._wait_in_open)
        self.last_window = (0, 0, 0)

    def set_state_background(self, state: str) -> None:
        """Force *state* without blocking an event loop (a task there, else now)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # A failure is logged by _failed; the local state changed anyway.
            with contextlib.suppress(StorageError):
                self.set_state_sync(state)
            return
        self.spawn(loop, self._quiet(self.set_state_async(state)))

    @staticmethod
    async def _quiet(coro: Coroutine[Any, Any, Any]) -> None:
        with contextlib.suppress(StorageError):
            await coro

    def spawn(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        """Run *coro* as a task on *loop*, keeping a reference until it ends.

        The ASGI driver waits for it at lifespan shutdown (``seawall._core.background``).
        """
        background.spawn(loop, coro, self._tasks)

    async def drain(self) -> None:
        """Wait for the background writes of the running loop (tests, shutdown)."""
        await background.drain(None, self._tasks)

    def pending(self) -> int:
        """Background writes not finished yet."""
        return background.pending(self._tasks)

    def stats(self) -> dict[str, Any]:
        """The store's health and counters."""
        return {
            "up": self._down_until == 0.0,
            "calls": self.calls,
            "errors": self.errors,
            "last_state": self.last_state,
        }
