"""RateLimit: answer 429 once a client used up its quota; ``limit()`` for single handlers.

Theory of operation
-------------------
``__init__`` compiles everything: limits strings into quotas, rules into one
matcher, exemptions into a second one, the ``RateLimit-Policy`` header of
each rule, and each quota's key template. A request then costs: one
exemption check, one cached rule lookup, the key function, one storage
call for all its limits and their header numbers (on Redis a :class:`Hit`
effect: one round trip; on ``memory://`` a direct call in the hook, since
there is no I/O to hand to the driver), and formatting its ``RateLimit``
header. The common case (memory, fixed window, one static limit, a fixed
cost, a sync key) is chosen per rule at construction (``_choose_path``)
and decided inline in ``on_request`` with one storage call; there each
client's storage key is built once (``_Rule.fast_key``) and the header's
``t=`` parts are precomputed, so the request formats one number.

Invariants:

1. The layer holds no per-request state; shared state is only counters and
   the storage guard.
2. A request consumes from every limit of its rule, or from none (a refused
   request never uses up a longer window).
3. ``Retry-After`` is the limiter's own time until the request would be
   admitted, rounded up, and never earlier than the ``t`` of the refusing
   policy in the ``RateLimit`` header.
4. A storage outage costs at most one timeout per probe period; the
   ``on_storage_error`` policy applies meanwhile (see ``_ratelimit/guard.py``).
5. A ``count_when`` rule tests on arrival (consumes nothing) and consumes
   in ``on_complete`` only when its predicate accepts the status sent; the
   layer has an ``on_complete`` hook only when some rule counts that way,
   so other stacks pay nothing for it. Concurrent requests may all pass the
   test before any is counted: the limit can be exceeded by the requests in
   flight, never afterwards.
6. With ``ban``, every refusal (shadow ones too) is a strike against the
   request's key; the ``after``-th strike within its window bans the key for
   ``duration``. The ban is checked inside the same storage call as the
   limits (still one round trip) and consumes nothing; strikes cost one more
   call, on refusals only.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import inspect
import ipaddress
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from math import ceil
from typing import Any, ClassVar, Literal

from seawall._core import background
from seawall._core.client import UNKNOWN_CLIENT
from seawall._core.decisions import Respond
from seawall._core.layer import ORDER, Outcome
from seawall._core.request import RequestView
from seawall._log import current_request, logger
from seawall._ratelimit.guard import StorageGuard
from seawall._ratelimit.quota import (
    FIXED,
    STRATEGIES,
    Banned,
    Quota,
    parse_quotas,
    policy_name,
)
from seawall._ratelimit.rules import Matcher
from seawall._workers import watch
from seawall.exceptions import ConfigurationError, Overloaded, RateLimited, Rejected, StorageError
from seawall.handlers import OVERRIDE_ATTR, handler_name
from seawall.keys import client as client_key
from seawall.keys import is_async_key, resolve_key
from seawall.storage import MemoryBackend, RedisBackend, _redact, glob_escape, storage_for

__all__ = ["Hit", "Limiter", "RateLimit", "Strike", "limit"]

_NO_RESULT: Any = object()
_MAX_KEY = 128
#: Distinct (key, rule) pairs counted for ``stats()["top_limited"]``.
_TOP_LIMITED = 1000
_DYNAMIC_CACHE = 256
_KEY_CACHE = 4096
_T_ITEMS = 300  # a rule's table: at most ~17 KB, whatever its window
# Marks a rule whose routes are not limited at all (``rules={"/health": None}``).
_EXCLUDED: Any = object()


class Hit:
    """Effect: consume *cost* from every quota for its key, all or nothing.

    ``run()`` uses the sync storage (WSGI threads), ``arun()`` the async one
    (the event loop); both answer ``(allowed, [(remaining, reset, retry)])``.
    """

    __slots__ = ("backend", "ban", "consume", "cost", "keys", "quotas", "strategy")

    def __init__(
        self,
        backend: Any,
        strategy: int,
        keys: list[str],
        quotas: Sequence[Quota],
        cost: int,
        consume: bool = True,
        ban: str | None = None,
    ) -> None:
        self.backend = backend
        self.strategy = strategy
        self.keys = keys
        self.quotas = quotas
        self.cost = cost
        #: ``False``: only test whether *cost* would be admitted (``count_when`` rules).
        self.consume = consume
        #: The key's ban key, checked first (``RateLimit(ban=...)``), or ``None``.
        self.ban = ban

    def run(self) -> Any:
        """Run on the sync storage."""
        return self.backend.hit(
            self.strategy, self.keys, self.quotas, self.cost, self.consume, self.ban
        )

    def arun(self) -> Any:
        """Run on the async storage (a coroutine)."""
        return self.backend.ahit(
            self.strategy, self.keys, self.quotas, self.cost, self.consume, self.ban
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hit):
            return NotImplemented
        return (
            self.backend,
            self.strategy,
            self.keys,
            tuple(self.quotas),
            self.cost,
            self.consume,
            self.ban,
        ) == (
            other.backend,
            other.strategy,
            other.keys,
            tuple(other.quotas),
            other.cost,
            other.consume,
            other.ban,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        test = "" if self.consume else ", consume=False"
        return f"Hit(keys={self.keys!r}, cost={self.cost}{test})"


class _BanPolicy:
    """``ban``, compiled: *after* refusals within *within* s ban a key for *duration* s."""

    __slots__ = ("after", "duration", "within")

    def __init__(self, after: int, within: float, duration: float) -> None:
        self.after = after
        self.within = within
        self.duration = duration

    def __repr__(self) -> str:
        return f"ban(after={self.after}/{self.within:g}s, duration={self.duration:g}s)"


def _parse_ban(value: Any) -> _BanPolicy | None:
    if value is None:
        return None
    form = (
        "ban: expected {'after': '5/10 minutes', 'duration': '1 hour'} "
        "(refusals per window, then how long the key is refused)"
    )
    if not isinstance(value, Mapping) or set(value) != {"after", "duration"}:
        msg = f"{form}, got {value!r}"
        raise ConfigurationError(msg)
    after = parse_quotas(value["after"], "ban", "ban: after")
    if len(after) != 1:
        msg = f"{form}; 'after' takes one limit, got {value['after']!r}"
        raise ConfigurationError(msg)
    duration = value["duration"]
    if isinstance(duration, str):
        try:
            seconds = parse_quotas("1/" + duration.strip(), "ban")[0].window
        except ConfigurationError:
            msg = f"ban: duration: expected seconds or e.g. '1 hour', got {duration!r}"
            raise ConfigurationError(msg) from None
    else:
        seconds = _positive("ban: duration", duration)
    return _BanPolicy(after[0].amount, after[0].window, seconds)


class Strike:
    """Effect: count one refusal of a key; answers whether it started a ban."""

    __slots__ = ("backend", "ban", "policy")

    def __init__(self, backend: Any, ban: str, policy: _BanPolicy) -> None:
        self.backend = backend
        self.ban = ban
        self.policy = policy

    def run(self) -> Any:
        """Run on the sync storage."""
        p = self.policy
        return self.backend.strike(self.ban + ":s", self.ban, p.after, p.within, p.duration)

    def arun(self) -> Any:
        """Run on the async storage (a coroutine)."""
        p = self.policy
        return self.backend.astrike(self.ban + ":s", self.ban, p.after, p.within, p.duration)

    def __repr__(self) -> str:
        return f"Strike({self.ban!r}, {self.policy!r})"


class CallKey:
    """Effect: call an async key function (awaited on the loop; run to completion on WSGI)."""

    __slots__ = ("func", "request")

    def __init__(self, func: Callable[..., Any], request: RequestView) -> None:
        self.func = func
        self.request = request

    def run(self) -> Any:
        """Run the coroutine on a private loop (WSGI threads have none)."""
        return asyncio.run(self.func(self.request))

    async def arun(self) -> Any:
        """Await the key function."""
        return await self.func(self.request)

    def __repr__(self) -> str:
        return f"CallKey({self.func!r})"


def _check_shared(entries: Sequence[tuple[str, Any]]) -> None:
    """Refuse rules that name one ``shared`` bucket with different limits.

    A bucket is counted per limit: ``2/minute`` and ``1/minute`` under one
    name would be two counters, not the one the name promises.
    """
    limits: dict[str, tuple[str, str]] = {}
    for pattern, rule in entries:
        if not isinstance(rule, _Rule) or not rule.scope.startswith("s.") or rule.dynamic:
            continue
        given = ", ".join(q.tag for q in rule.quotas)
        first = limits.setdefault(rule.scope, (pattern, given))
        if first[1] != given:
            msg = (
                f"rules[{pattern!r}]: shares its bucket with rules[{first[0]!r}] but gives "
                f"another limit ({given} against {first[1]}); rules sharing a bucket must "
                "give the same limit"
            )
            raise ConfigurationError(msg)


def _whole_seconds(seconds: float) -> int:
    """*seconds* as the headers state them: rounded up, and never 0.

    The reset is still ahead when a header is written (a window ending this
    millisecond, Redis ``PTTL`` 0, is "in 1 s", not "now"), and a float's
    last-bit error never rounds a full window past it (60.000000001 s is 60).
    """
    return max(1, ceil(seconds - 1e-6))


def _checked_cost(value: Any) -> int:
    """A cost callable's answer as a cost: a whole number, never below 0.

    A negative cost would give quota back (on memory) or make the request
    free (the Redis scripts skip it): a client able to pick its cost (a
    batch size from a header) could then pass any limit. It counts as 1.
    """
    cost = int(value)
    return cost if cost >= 0 else 1


class _Rule:
    """One compiled rule: its quotas, key, cost, shadow flag and counters."""

    __slots__ = (
        "allowed",
        "base",
        "by_client",
        "cost",
        "cost_fn",
        "count_when",
        "dynamic",
        "fast",
        "key",
        "key_async",
        "keys",
        "limited",
        "local_quotas",
        "name",
        "policy",
        "policy_header",
        "quotas",
        "scope",
        "shadow",
        "shadowed",
        "suffixes",
        "t_count",
        "t_items",
    )

    def __init__(self, name: str, scope: str, shadow: bool) -> None:
        self.name = name
        self.scope = scope
        self.shadow = shadow
        self.quotas: tuple[Quota, ...] = ()
        self.local_quotas: tuple[Quota, ...] = ()
        self.dynamic: Callable[[RequestView], Any] | None = None
        self.policy = ""
        #: ``("RateLimit-Policy", policy)``, built once (``None`` for dynamic limits).
        self.policy_header: tuple[str, str] | None = None
        self.suffixes: tuple[str, ...] = ()
        self.base = ""
        self.key: Callable[..., Any] = resolve_key(None)
        self.key_async = False
        #: The key is the client identity: read it without calling ``keys.client``.
        self.by_client = True
        #: The one quota, when requests take the layer's fast path (``RateLimit._choose_path``).
        self.fast: Quota | None = None
        #: Fast path: client key -> storage key (see :meth:`fast_key`).
        self.keys: dict[str, str] = {}
        #: Fast path: ``";t=<n>"`` for every whole second *n* of the window
        #: (up to _T_ITEMS): formatting an int costs more than a tuple index.
        self.t_items: tuple[str, ...] = ()
        self.t_count = 0
        self.cost = 1
        self.cost_fn: Callable[[RequestView], int] | None = None
        #: Count a request only once its status is known, if this accepts it.
        self.count_when: Callable[[int], bool] | None = None
        self.allowed = 0
        self.limited = 0
        self.shadowed = 0

    def set_quotas(self, quotas: tuple[Quota, ...], workers: int) -> None:
        self.quotas = quotas
        self.local_quotas = tuple(q.scaled(workers) for q in quotas)
        self.policy = ", ".join(q.policy for q in quotas)
        self.policy_header = ("RateLimit-Policy", self.policy)
        # Key = base + client + "}:" + scope + tag: the client in a hash tag
        # keeps every key of one request on one Redis Cluster slot.
        self.suffixes = tuple(f"}}:{self.scope}:{q.tag}" for q in quotas)
        self.keys = {}

    def fast_key(self, ident: str) -> str:
        """The fast path's storage key for *ident*, built once and remembered.

        A cached key is the same string object on every request, so the
        storage's dict lookups reuse its hash instead of hashing a fresh key,
        and no request formats (or digests) its key again. Bounded like the
        other caches: a flood of distinct keys clears it now and then.
        """
        stored = ident
        if len(stored) > _MAX_KEY or "}" in stored:
            stored = _digest(stored)
        key = f"{self.base}{stored}{self.suffixes[0]}"
        keys = self.keys
        if len(keys) >= _KEY_CACHE:
            keys.clear()
        keys[ident] = key
        return key


def _positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        msg = f"{name}: expected a positive number, got {value!r}"
        raise ConfigurationError(msg)
    return float(value)


def _is_failure(status: int) -> bool:
    return status >= 400


def _is_success(status: int) -> bool:
    return status < 400


def _count_predicate(value: Any, where: str) -> Callable[[int], bool] | None:
    """``count_when`` as a predicate of the status sent (``None``: count on arrival)."""
    if value is None:
        return None
    if value == "failure":
        return _is_failure
    if value == "success":
        return _is_success
    if callable(value):
        return value  # type: ignore[no-any-return]
    msg = f"{where}: expected 'failure', 'success' or a callable (status) -> bool, got {value!r}"
    raise ConfigurationError(msg)


def _default_workers() -> int:
    try:
        return max(1, int(os.environ.get("WEB_CONCURRENCY", "1")))
    except ValueError:
        return 1


class RateLimit:
    """Answer 429 ``quota-exceeded`` once a key used up one of its limits.

    Args:
        limit: the default limit: a limits string (``"100/minute;2000/hour"``),
            a list of them, a callable returning one per request (per-plan
            limits), or ``None`` (only *rules* apply).
        strategy: ``"fixed-window"``, ``"moving-window"`` (exact),
            ``"sliding-window-counter"`` (approximate, cheap) or ``"gcra"``
            (token bucket: smooth, bursts up to the limit).
        storage: ``"memory://"`` (this process) or a Redis URI (``redis://``,
            ``rediss://``, ``redis+unix://``, ``redis+sentinel://``,
            ``redis+cluster://``, ``valkey://``); ``memcached://`` through limits.
        key: who is counted: a key function (sync or async), ``"client"``
            (default: the client address, IPv6 by /64, after trusted-proxy
            rules) or ``"header:X-API-Key"``. ``None`` from the function
            leaves the request unlimited.
        key_prefix: namespaces every storage key, so apps can share a Redis.
        rules: ``{"POST /login": "5/minute", "/api/*": {...}}``. A value is a
            limit (as *limit*), ``None`` (route not limited) or a table with
            ``limit``, and optionally ``shared`` (one bucket for every rule
            naming it), ``name`` (policy name), ``shadow``, ``cost``, ``key``.
            The first matching pattern wins; unmatched requests get *limit*.
        exempt: never limited: CIDRs (``"10.0.0.0/8"``, matched against the
            resolved client), route patterns (``"/health"``, ``"GET /static/*"``)
            and callables ``(request) -> bool``.
        cost: units a request uses: a whole number or ``(request) -> int``.
        count_when: count a request only after it ended, and only if this
            accepts the status sent: ``"failure"`` (4xx and 5xx: failed
            logins, not successful ones), ``"success"`` (below 400) or a
            callable ``(status) -> bool``; an exception counts as 500. The
            limit is tested on arrival as usual. ``None`` (default): every
            request counts on arrival.
        ban: ``{"after": "5/10 minutes", "duration": "1 hour"}``: a key
            refused 5 times within 10 minutes is refused on every request of
            this layer for an hour (429 with ``Retry-After``), whatever its
            limits say. ``duration`` is seconds or a string like ``"1 hour"``.
        websocket_messages: a limit on the messages a key sends over its
            websockets (``"10/second"``), across all its connections; the
            message past it closes the connection with code 1008. ``None``
            (default): only handshakes are limited.
        headers: add ``RateLimit-Policy`` and ``RateLimit``
            (draft-ietf-httpapi-ratelimit-headers-10) to limited responses.
        legacy_headers: also add ``X-RateLimit-Limit/-Remaining/-Reset``
            (reset in seconds from now) for the policy nearest exhaustion.
        on_storage_error: when the storage fails or times out: ``"allow"``
            the request (no headers), ``"deny"`` it (503), or ``"local"``:
            limit in this process with each limit divided by *workers*.
        storage_timeout: seconds any storage call may take.
        storage_probe: while the storage is down, try it again once per this
            many seconds (requests in between use the failure policy at no cost).
        shadow: decide, log and count, but let every request through.
        max_keys: the memory storage keeps at most this many counters (LRU).
        workers: processes sharing the limit for ``"local"`` (default:
            ``WEB_CONCURRENCY`` or 1).
        storage_options: extra keyword arguments for the storage client.
        clock: ``time.monotonic``-like clock for memory storage and the guard.
        policy: the policy name of *limit* in the headers and the 429.
    """

    name: ClassVar[str] = "ratelimit"
    order: ClassVar[int] = ORDER["ratelimit"]
    #: Rate limit websocket handshakes too.
    websocket: ClassVar[bool] = True

    def __init__(
        self,
        limit: str | Sequence[str] | Callable[..., Any] | None = None,
        *,
        strategy: Literal[
            "fixed-window", "moving-window", "sliding-window-counter", "gcra", "token-bucket"
        ] = "fixed-window",
        storage: str = "memory://",
        key: str | Callable[..., Any] | None = None,
        key_prefix: str = "seawall",
        rules: Mapping[str, Any] | None = None,
        exempt: Sequence[Any] = (),
        cost: int | Callable[..., int] = 1,
        count_when: Literal["failure", "success"] | Callable[[int], bool] | None = None,
        ban: Mapping[str, Any] | None = None,
        websocket_messages: str | Sequence[str] | None = None,
        headers: bool = True,
        legacy_headers: bool = False,
        on_storage_error: Literal["allow", "deny", "local"] = "allow",
        storage_timeout: float = 0.02,
        storage_probe: float = 1.0,
        shadow: bool = False,
        max_keys: int = 100_000,
        workers: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: str = "default",
    ) -> None:
        if strategy not in STRATEGIES:
            msg = f"strategy: expected one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}"
            raise ConfigurationError(msg)
        if on_storage_error not in ("allow", "deny", "local"):
            msg = f"on_storage_error: expected 'allow', 'deny' or 'local', got {on_storage_error!r}"
            raise ConfigurationError(msg)
        if not isinstance(max_keys, int) or max_keys < 1:
            msg = f"max_keys: expected a whole number >= 1, got {max_keys!r}"
            raise ConfigurationError(msg)
        if workers is None:
            workers = _default_workers()
        if not isinstance(workers, int) or workers < 1:
            msg = f"workers: expected a whole number >= 1, got {workers!r}"
            raise ConfigurationError(msg)
        if not isinstance(key_prefix, str) or not key_prefix or "{" in key_prefix:
            # A brace would move the Redis Cluster hash tag off the client.
            msg = f"key_prefix: expected a non-empty string without braces, got {key_prefix!r}"
            raise ConfigurationError(msg)
        self.strategy = strategy
        self._strategy = STRATEGIES[strategy]
        self.storage_uri = storage
        self.key_prefix = key_prefix
        self.headers = bool(headers)
        self.legacy_headers = bool(legacy_headers)
        self.on_storage_error = on_storage_error
        self.storage_timeout = _positive("storage_timeout", storage_timeout)
        self.storage_probe = _positive("storage_probe", storage_probe)
        self.shadow = bool(shadow)
        self.max_keys = max_keys
        self.workers = workers
        self._clock = clock
        self._backend = storage_for(
            storage,
            timeout=self.storage_timeout,
            max_keys=max_keys,
            clock=clock,
            options=dict(storage_options or {}),
            strategy=self._strategy,
        )
        self._remote = self._backend.remote
        if not self._remote:
            # Per-process counts: say so once if several workers serve the app.
            watch("RateLimit")
        self._guard: StorageGuard | None = None
        self._local: MemoryBackend | None = None
        if self._remote:
            self._guard = StorageGuard(
                probe=self.storage_probe, clock=clock, storage=_redact(storage)
            )
            if on_storage_error == "local":
                self._local = MemoryBackend(max_keys=max_keys, clock=clock)
        # Keys: "<prefix>:rl<strategy>:{<client>}:<scope>:<amount>/<window>".
        self._base = f"{key_prefix}:rl{self._strategy}:{{"
        self._key = resolve_key(key)
        self._cost = cost
        self._count_when = _count_predicate(count_when, "count_when")
        self._ban = _parse_ban(ban)
        # Ban keys: "<prefix>:rlban:{<key>}" (strikes: + ":s"), on the
        # client's Cluster slot like its counters.
        self._ban_base = f"{key_prefix}:rlban:{{"
        #: Bans this process started, and requests refused under a ban.
        self.bans = 0
        self.banned = 0
        #: Requests counted on completion (``count_when`` accepted) and not counted.
        self.counted = 0
        self.not_counted = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._dynamic_cache: dict[tuple[int, str], tuple[tuple[Quota, ...], tuple[Quota, ...]]] = {}
        self.exempted = 0
        self.storage_fallbacks = 0
        self._top_limited: dict[tuple[str, str], int] = {}

        self._default = (
            self._compile("default", {"limit": limit, "name": policy}, 0)
            if limit is not None
            else None
        )
        entries: list[tuple[str, _Rule]] = []
        for index, (pattern, value) in enumerate((rules or {}).items(), start=1):
            if not isinstance(pattern, str):
                msg = f"rules: expected route patterns as keys, got {pattern!r}"
                raise ConfigurationError(msg)
            if value is None or value is False:
                entries.append((pattern, _EXCLUDED))
                continue
            spec = value if isinstance(value, Mapping) else {"limit": value}
            entries.append((pattern, self._compile(pattern, spec, index)))
        if self._default is None and not entries:
            msg = "RateLimit: give a limit (e.g. '100/minute') or rules"
            raise ConfigurationError(msg)
        _check_shared(entries)
        self._rules = Matcher(entries)
        self._has_rules = bool(entries)
        self._rule_list = [r for _, r in entries if r is not _EXCLUDED]
        if self._default is not None:
            self._rule_list.insert(0, self._default)
        self._messages: _Rule | None = None
        if websocket_messages is not None:
            where = "websocket_messages"
            if not isinstance(websocket_messages, (str, list, tuple)):
                msg = f"{where}: expected a limit such as '10/second', got {websocket_messages!r}"
                raise ConfigurationError(msg)
            spec = {"limit": websocket_messages, "name": "websocket-messages", "count_when": None}
            self._messages = rule = self._compile(where, spec, len(entries) + 1, where)
            rule.scope = "ws"  # its own bucket, apart from every HTTP rule's
            rule.set_quotas(rule.quotas, self.workers)
            self._rule_list.append(rule)
            self.on_websocket_message = self._message
        self._exempt_nets, self._exempt_routes, self._exempt_calls = self._compile_exempt(exempt)
        self._has_exempt = bool(self._exempt_nets or self._exempt_routes or self._exempt_calls)
        self._net_cache: dict[str, bool] = {}
        self._hit_fixed: Callable[[str, Quota, int], tuple[int, float, float]] | None = None
        if type(self._backend) is MemoryBackend and self._strategy == FIXED:
            self._hit_fixed = self._backend.storage.hit_fixed
        #: The memory storage's live bans (empty, and never looked into, without any).
        self._mem_bans: dict[str, float] = (
            self._backend.storage.bans if isinstance(self._backend, MemoryBackend) else {}
        )
        for rule in self._rule_list:
            self._choose_path(rule)
        #: The one rule of every request (no exemptions, no rules): no lookups at all.
        self._only = self._default if not (self._has_exempt or self._has_rules) else None
        #: The fast path adds its two headers itself only when no legacy ones go along.
        self._plain_headers = self.headers and not self.legacy_headers
        if any(rule.count_when is not None for rule in self._rule_list):
            # Invariant 5: the hook exists only where it has work to do.
            self.on_complete = self._count_outcome

    # -- compilation ------------------------------------------------------------

    def _compile(
        self, pattern: str, spec: Mapping[str, Any], index: int, where: str | None = None
    ) -> _Rule:
        if where is None:
            where = "limit" if index == 0 else f"rules[{pattern!r}]"
        unknown = set(spec) - {"limit", "shared", "name", "shadow", "cost", "key", "count_when"}
        if unknown:
            msg = (
                f"{where}: unknown option(s) {sorted(unknown)}; "
                "use limit, shared, name, shadow, cost, key, count_when"
            )
            raise ConfigurationError(msg)
        if "limit" not in spec or spec["limit"] is None:
            msg = f"{where}: no limit given"
            raise ConfigurationError(msg)
        shared = spec.get("shared")
        name = policy_name(str(spec.get("name") or shared or pattern))
        # The bucket: shared rules share one scope; others get their own.
        scope = f"s.{policy_name(str(shared))}" if shared else ("d" if index == 0 else f"r{index}")
        rule = _Rule(name, scope, bool(spec.get("shadow", False)) or self.shadow)
        limit = spec["limit"]
        if callable(limit):
            rule.dynamic = limit
            rule.suffixes = ()
        else:
            rule.set_quotas(parse_quotas(limit, name, where), self.workers)
        rule.base = self._base
        key = spec.get("key")
        rule.key = resolve_key(key) if key is not None else self._key
        rule.key_async = is_async_key(rule.key)
        rule.by_client = rule.key is client_key
        cost = spec.get("cost", self._cost)
        if callable(cost):
            rule.cost_fn = cost
        elif isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0:
            rule.cost = cost
        else:
            msg = f"{where}: cost must be a whole number >= 0 or a callable, got {cost!r}"
            raise ConfigurationError(msg)
        rule.count_when = (
            _count_predicate(spec["count_when"], f"{where}: count_when")
            if "count_when" in spec
            else self._count_when
        )
        return rule

    def _choose_path(self, rule: _Rule) -> None:
        """Give *rule* the fast path when its requests can take it.

        The common case: memory://, fixed window, one static limit, a fixed
        cost and a sync key. :meth:`on_request` then decides with one
        storage call (:meth:`BoundedMemoryStorage.hit_fixed`), no lists and
        no helper calls; every other rule takes the general path.
        """
        simple = (
            rule.dynamic is None
            and len(rule.quotas) == 1
            and rule.cost_fn is None
            and not rule.key_async
            and rule.count_when is None
        )
        rule.fast = rule.quotas[0] if simple and self._hit_fixed is not None else None
        if rule.fast is not None:
            # A live window's reset is within (0, window], so its ceiling is
            # 1..ceil(window); the table stops at _T_ITEMS (an hour would be
            # 3600 strings per rule), and later seconds (or a clock that
            # stepped back) are formatted.
            count = min(ceil(rule.fast.window), _T_ITEMS) + 1
            rule.t_items = tuple(f";t={t}" for t in range(count))
            rule.t_count = count

    def _compile_exempt(
        self, exempt: Sequence[Any]
    ) -> tuple[tuple[Any, ...], Matcher[bool], tuple[Callable[..., Any], ...]]:
        if isinstance(exempt, str):
            exempt = [exempt]
        nets = []
        routes: list[tuple[str, bool]] = []
        calls = []
        for item in exempt:
            if callable(item):
                calls.append(item)
            elif isinstance(item, str) and (item.strip().startswith("/") or " /" in item):
                routes.append((item, True))
            elif isinstance(item, str):
                try:
                    nets.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    msg = (
                        f"exempt: {item!r} is neither a CIDR ('10.0.0.0/8'), "
                        "a route pattern ('/health') nor a callable"
                    )
                    raise ConfigurationError(msg) from None
            else:
                msg = f"exempt: expected CIDRs, route patterns or callables, got {item!r}"
                raise ConfigurationError(msg)
        return tuple(nets), Matcher(routes), tuple(calls)

    # -- the request ------------------------------------------------------------

    def __repr__(self) -> str:
        default = self._default.quotas if self._default is not None else None
        rules = len(self._rule_list) - (self._default is not None) - (self._messages is not None)
        extra = "".join(
            (
                f", count_when={sum(r.count_when is not None for r in self._rule_list)} rule(s)"
                if hasattr(self, "on_complete")
                else "",
                f", {self._ban!r}" if self._ban is not None else "",
                f", websocket_messages={'; '.join(q.spec for q in self._messages.quotas)!r}"
                if self._messages
                else "",
            )
        )
        return (
            f"RateLimit({', '.join(q.spec for q in default) if default else default!r}, "
            f"strategy={self.strategy!r}, storage={_redact(self.storage_uri)!r}, "
            f"rules={rules}, shadow={self.shadow}{extra})"
        )

    def _is_exempt(self, request: RequestView) -> bool:
        if self._exempt_routes and self._exempt_routes.match(request.method, request.path):
            return True
        if self._exempt_nets:
            client = request.client
            hit = self._net_cache.get(client)
            if hit is None:
                try:
                    address = ipaddress.ip_address(client)
                except ValueError:
                    hit = False
                else:
                    if address.version == 6 and address.ipv4_mapped is not None:
                        address = address.ipv4_mapped
                    hit = any(address in net for net in self._exempt_nets)
                if len(self._net_cache) >= 4096:
                    self._net_cache.clear()
                self._net_cache[client] = hit
            if hit:
                return True
        return any(call(request) for call in self._exempt_calls)

    def rule_for(self, request: RequestView) -> _Rule | None:
        """The rule that applies to *request* (``None``: not limited)."""
        if self._has_rules:
            rule = self._rules.match(request.method, request.path)
            if rule is not None:
                return None if rule is _EXCLUDED else rule
        return self._default

    def on_request(self, request: RequestView) -> Any:
        """Decide about *request*: ``None`` (admitted), the 429 :class:`Respond`, or a flow.

        On a remote storage (or with an async key function) the answer is a
        flow that yields one :class:`Hit` (or :class:`CallKey`); on
        ``memory://`` there is no I/O, so the decision is made right here.
        """
        rule = self._only
        if rule is None:
            if self._has_exempt and self._is_exempt(request):
                self.exempted += 1
                return None
            # rule_for() inlined: one Python call less on every request.
            if self._has_rules:
                rule = self._rules.match(request.method, request.path)
                if rule is None:
                    rule = self._default
                elif rule is _EXCLUDED:
                    return None
            else:
                rule = self._default
            if rule is None:
                return None
        quota = rule.fast
        if quota is not None:
            # The common case (see _choose_path), with _prepare and the
            # admitted branch of _respond inlined: a Python call is about 4%
            # of the layer's cost.
            if rule.by_client:
                ident = request.client_key
            else:
                ident = rule.key(request)
                if type(ident) is not str:
                    if ident is None:
                        return None
                    ident = str(ident)
            key = rule.keys.get(ident)
            if key is None:
                key = rule.fast_key(ident)
            if self._mem_bans and self._ban_left(ident):
                # Some key is banned right now, and it is this one.
                rejection = self._refuse_banned(request, rule, ident)
                if rejection is None:
                    return None
                self._count_limited(ident, rule.name)
                return self._render(rejection, request, True)
            stat = self._hit_fixed(key, quota, rule.cost)  # type: ignore[misc]
            remaining, reset, retry = stat
            if not retry and self._plain_headers:
                rule.allowed += 1
                t = ceil(reset)
                request.response_headers.extend(
                    (
                        rule.policy_header,  # type: ignore[arg-type]
                        (
                            "RateLimit",
                            f"{quota.head}{remaining}{rule.t_items[t]}"
                            if t < rule.t_count
                            else f"{quota.head}{remaining};t={t}",
                        ),
                    )
                )
                return None
            # hit_fixed's retry is 0.0 exactly when the request is admitted.
            rejection = self._respond(request, rule, rule.quotas, rule.cost, (not retry, [stat]))
            if retry and self._ban is not None:
                self._strike_here(ident, rule)
        elif self._remote or rule.key_async:
            return self._decide(request, rule, True)
        else:
            # memory://: no effect, so no generator for the driver to step through.
            ident = rule.key(request)
            prepared = self._prepare(request, rule, ident)
            if prepared is None:
                return None
            keys, quotas, _, cost, stored = prepared
            later = rule.count_when
            ban = None if self._ban is None else self._ban_key(stored)
            result = self._backend.hit(self._strategy, keys, quotas, cost, later is None, ban)
            rejection = self._respond(request, rule, quotas, cost, result)
            if later is not None and result[0]:
                request.state[self] = (self._backend, keys, quotas, cost, later)
            elif ban is not None and not result[0]:
                if type(result) is Banned:
                    rejection = self._banned(result, rejection)
                else:
                    self._strike_here(ident, rule)
        if rejection is None:
            return None
        self._count_limited(ident, rule.name)
        return self._render(rejection, request, True)

    def _prepare(
        self, request: RequestView, rule: _Rule, ident: Any
    ) -> tuple[list[str], tuple[Quota, ...], tuple[Quota, ...], int, str] | None:
        """The storage keys, quotas (shared and local), cost and stored key of *ident*'s request."""
        if ident is None:
            return None
        if type(ident) is not str:
            ident = str(ident)
        if len(ident) > _MAX_KEY or "}" in ident:
            ident = _digest(ident)
        if rule.dynamic is None:
            quotas, local = rule.quotas, rule.local_quotas
            suffixes = rule.suffixes
        else:
            quotas, local = self._dynamic(rule, request)
            suffixes = tuple(f"}}:{rule.scope}:{q.tag}" for q in quotas)
        base = rule.base + ident
        keys = [base + suffixes[0]] if len(suffixes) == 1 else [base + s for s in suffixes]
        cost = rule.cost if rule.cost_fn is None else _checked_cost(rule.cost_fn(request))
        return keys, quotas, local, cost, ident

    def _decide(self, request: RequestView, rule: _Rule, render: bool = False) -> Any:
        """The flow behind every check: ``None`` (admitted) or the :class:`Rejected` to send.

        With *render* (the layer's own hook) a rejection comes back as the
        :class:`Respond` to send; one generator per request, not two.
        """
        if rule.key_async:
            ident = yield CallKey(rule.key, request)
        else:
            ident = rule.key(request)
        prepared = self._prepare(request, rule, ident)
        if prepared is None:
            return None
        keys, quotas, local, cost, stored = prepared
        later = rule.count_when
        consume = later is None
        ban = None if self._ban is None else self._ban_key(stored)
        backend: Any = self._backend
        guard = self._guard
        if guard is None:
            result = yield Hit(backend, self._strategy, keys, quotas, cost, consume, ban)
        else:
            result = _NO_RESULT
            if guard.allow():
                try:
                    result = yield Hit(backend, self._strategy, keys, quotas, cost, consume, ban)
                except StorageError as exc:
                    guard.failed(exc)
                else:
                    guard.succeeded()
            if result is _NO_RESULT:
                self.storage_fallbacks += 1
                if self._local is not None:
                    quotas = local
                    backend = self._local
                    result = yield Hit(backend, self._strategy, keys, quotas, cost, consume, ban)
                elif self.on_storage_error == "deny":
                    rule.limited += 1
                    return self._render(
                        Overloaded(
                            "The rate-limit storage is unavailable.",
                            retry_after=self.storage_probe,
                        ),
                        request,
                        render,
                    )
                else:
                    rule.allowed += 1
                    return None
        rejection = self._respond(request, rule, quotas, cost, result)
        if later is not None and result[0]:
            request.state[self] = (backend, keys, quotas, cost, later)
        if ban is not None and not result[0]:
            if type(result) is Banned:
                rejection = self._banned(result, rejection)
            elif (yield from self._strike(backend, ban)):
                self._ban_started(ident, rule)
        if rejection is None:
            return None
        self._count_limited(ident, rule.name)
        return self._render(rejection, request, render)

    # -- bans ----------------------------------------------------------------------

    def _ban_key(self, ident: str) -> str:
        """The ban key of *ident* (its strikes: the same with ``":s"``)."""
        if len(ident) > _MAX_KEY or "}" in ident:
            ident = _digest(ident)
        return f"{self._ban_base}{ident}}}"

    def _ban_left(self, ident: str) -> float:
        """Seconds left of *ident*'s ban in the memory storage (0.0: none).

        Called only while some ban is live; each call also drops the oldest
        ban if it has ended, so the map empties once bans stop.
        """
        backend = self._backend
        assert isinstance(backend, MemoryBackend)  # the only storage with such a map
        bans = self._mem_bans
        now = self._clock()
        with backend.storage._lock:
            oldest = next(iter(bans), None)
            if oldest is not None and bans[oldest] <= now:
                del bans[oldest]
            until = bans.get(self._ban_key(ident))
        return until - now if until is not None and until > now else 0.0

    def _refuse_banned(self, request: RequestView, rule: _Rule, ident: str) -> Rejected | None:
        """The fast path's answer to a banned key (``None`` in shadow mode)."""
        left = self._ban_left(ident)
        result = Banned.of(left, len(rule.quotas))
        return self._banned(result, self._respond(request, rule, rule.quotas, rule.cost, result))

    def _banned(self, result: Any, rejection: Rejected | None) -> Rejected | None:
        """A refusal under a ban: counted, and worded as one (``None`` in shadow mode)."""
        self.banned += 1
        if rejection is None:
            return None
        return RateLimited(
            "Too many requests: this client is refused for a while after "
            "repeatedly exceeding the rate limit.",
            retry_after=float(ceil(result[1][0][2])) or 1.0,
            policy="ban",
        )

    def _ban_started(self, ident: Any, rule: _Rule) -> None:
        assert self._ban is not None  # only called with a ban policy
        self.bans += 1
        logger.warning(
            "seawall.ratelimit.banned",
            key=_shown_key(str(ident)),
            rule=rule.name,
            seconds=self._ban.duration,
            strikes=self._ban.after,
            within=self._ban.within,
        )

    def _strike_here(self, ident: Any, rule: _Rule) -> None:
        """Count a refusal on the memory storage (no effect: nothing to wait for)."""
        assert self._ban is not None  # only called with a ban policy
        ban = self._ban_key(str(ident))
        p = self._ban
        if self._backend.strike(ban + ":s", ban, p.after, p.within, p.duration):
            self._ban_started(ident, rule)

    def _strike(self, backend: Any, ban: str) -> Any:
        """Count a refusal against *ban*'s key (a flow): whether it started a ban."""
        assert self._ban is not None  # only called with a ban policy
        return self._guarded(Strike(backend, ban, self._ban), False)

    def _guarded(self, effect: Any, otherwise: Any) -> Any:
        """A flow running *effect* behind the storage guard: its answer, or *otherwise*.

        *otherwise* while the guard knows the storage is down (no call: one
        timeout per probe period) or when the call fails. The effects after
        the decision (strikes, ``count_when`` counts) go this way; the
        decision's own :class:`Hit` has its failure policy in :meth:`_decide`.
        """
        guard = self._guard
        if guard is None or effect.backend is self._local:
            return (yield effect)
        if not guard.allow():
            return otherwise
        try:
            answer = yield effect
        except StorageError as exc:
            guard.failed(exc)
            return otherwise
        guard.succeeded()
        return answer

    def unban(self, key: Any) -> None:
        """Lift the ban on *key* and forget its strikes (sync; call it off the event loop).

        *key* is what the rule's key function gives: by default the client
        address (an IPv6 client's /64 network, as ``stats()`` shows it).
        """
        ban = self._ban_key(str(key))
        for backend in (self._backend, self._local):
            if backend is not None:
                backend.forget([ban, ban + ":s"])

    def _count_limited(self, ident: Any, rule: str) -> None:
        # Bounded: past _TOP_LIMITED pairs the lighter half is dropped, so a
        # flood of distinct keys costs one sort per _TOP_LIMITED // 2 new ones.
        if type(ident) is not str:
            ident = str(ident)
        if len(ident) > _MAX_KEY:
            ident = _digest(ident)
        top = self._top_limited
        pair = (ident, rule)
        top[pair] = top.get(pair, 0) + 1
        if len(top) > _TOP_LIMITED:
            kept = heapq.nlargest(_TOP_LIMITED // 2, top.items(), key=lambda item: item[1])
            self._top_limited = dict(kept)

    @staticmethod
    def _render(rejection: Rejected, request: RequestView, render: bool) -> Any:
        if not render:
            return rejection
        return Respond.from_rejection(
            rejection, instance=request.path, request_id=request.request_id
        )

    def _dynamic(
        self, rule: _Rule, request: RequestView
    ) -> tuple[tuple[Quota, ...], tuple[Quota, ...]]:
        assert rule.dynamic is not None  # only called for dynamic rules
        spec = rule.dynamic(request)
        cache_key = (id(rule), spec if isinstance(spec, str) else repr(spec))
        found = self._dynamic_cache.get(cache_key)
        if found is None:
            quotas = parse_quotas(spec, rule.name, "limit callable")
            found = (quotas, tuple(q.scaled(self.workers) for q in quotas))
            if len(self._dynamic_cache) >= _DYNAMIC_CACHE:
                self._dynamic_cache.clear()
            self._dynamic_cache[cache_key] = found
        return found

    def _respond(
        self,
        request: RequestView,
        rule: _Rule,
        quotas: Sequence[Quota],
        cost: int,
        result: Any,
    ) -> Rejected | None:
        allowed, stats = result
        if allowed and len(stats) == 1 and not self.legacy_headers:
            # The common case: one limit, admitted.
            rule.allowed += 1
            if self.headers:
                remaining, reset, _ = stats[0]
                quota = quotas[0]
                request.response_headers.extend(
                    (
                        # The rule's own policy, unless these are other quotas
                        # (the local share during a storage outage, a dynamic limit).
                        (rule.policy_header if quotas is rule.quotas else None)
                        or ("RateLimit-Policy", quota.policy),
                        # _whole_seconds(reset), inline: every admitted request.
                        ("RateLimit", f"{quota.head}{remaining};t={max(1, ceil(reset - 1e-6))}"),
                    )
                )
            return None
        if self.headers or self.legacy_headers or not allowed:
            items = []
            retry_after = 0.0
            for quota, (remaining, reset, retry) in zip(quotas, stats, strict=True):
                if retry > 0.0:
                    # Invariant 3: the refusing policy's t is its retry time.
                    seconds = _whole_seconds(retry)
                    retry_after = max(retry_after, retry)
                else:
                    seconds = _whole_seconds(reset)
                items.append(f'"{quota.name}";r={remaining};t={seconds}')
            append = request.response_headers.append
            if self.headers:
                policy = rule.policy if quotas is rule.quotas else ""
                append(("RateLimit-Policy", policy or ", ".join(q.policy for q in quotas)))
                append(("RateLimit", ", ".join(items)))
            if self.legacy_headers:
                i = min(range(len(stats)), key=lambda j: stats[j][0])
                append(("X-RateLimit-Limit", str(quotas[i].amount)))
                append(("X-RateLimit-Remaining", str(stats[i][0])))
                append(("X-RateLimit-Reset", str(_whole_seconds(stats[i][2] or stats[i][1]))))
        if allowed:
            rule.allowed += 1
            return None
        refusing = next(
            (q.name for q, s in zip(quotas, stats, strict=True) if s[2] > 0.0), rule.name
        )
        if rule.shadow:
            rule.shadowed += 1
            logger.info(
                "seawall.ratelimit.shadow",
                rule=rule.name,
                policy=refusing,
                retry_after=_whole_seconds(retry_after),
            )
            return None
        rule.limited += 1
        # A refusal always says when to come back: a window that ends this
        # very millisecond (Redis PTTL 0) still means "in a second".
        seconds = _whole_seconds(retry_after)
        # debug: one line per refusal at info would let a client over its
        # limit make the server write a line per cheap 429 (a log flood).
        logger.debug(
            "seawall.ratelimit.rejected",
            rule=rule.name,
            policy=refusing,
            retry_after=seconds,
        )
        return RateLimited(
            "Too many requests: the rate limit for this client was reached.",
            retry_after=float(seconds),
            policy=refusing,
        )

    # -- websocket messages ----------------------------------------------------------

    def _message(self, request: RequestView) -> Any:
        """``on_websocket_message``: a flow answering ``None`` or the :class:`RateLimited`."""
        if self._has_exempt and self._is_exempt(request):
            return None
        return self._message_flow(request)

    def _message_flow(self, request: RequestView) -> Any:
        assert self._messages is not None  # the hook exists only with a message limit
        # Header lines would pile up over a long connection: no response carries them.
        mark = len(request.response_headers)
        try:
            return (yield from self._decide(request, self._messages))
        finally:
            del request.response_headers[mark:]

    # -- counting on completion (count_when) ----------------------------------------

    def _count_outcome(self, request: RequestView, outcome: Outcome) -> None:
        """``on_complete`` of a layer with ``count_when`` rules: consume if the status says so."""
        pending = request.state.pop(self, None)
        if pending is None:
            return
        backend, keys, quotas, cost, when = pending
        status = outcome.status
        if not when(500 if status is None else status):
            self.not_counted += 1
            return
        self.counted += 1
        if not backend.remote:
            backend.hit(self._strategy, keys, quotas, cost)
            return
        from seawall._run import arun_flow, run_flow

        count = self._guarded(Hit(backend, self._strategy, keys, quotas, cost), None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # A WSGI thread, after the response went out: a bounded sync call.
            run_flow(count)
            return
        # On the event loop: never block it, and never make the response wait.
        # Held until it ends; the ASGI driver waits for it at lifespan shutdown.
        background.spawn(loop, arun_flow(count), self._tasks)

    # -- handler-level checks -----------------------------------------------------

    def check(self, request: RequestView) -> Rejected | None:
        """Check *request* synchronously: ``None`` if admitted, else the rejection to raise.

        Headers go in ``request.response_headers`` either way. For adapters
        and :func:`limit` on sync handlers.
        """
        from seawall._run import run_flow

        rule = self._check_rule(request)
        if rule is None:
            return None
        result: Rejected | None = run_flow(self._decide(request, rule))
        if rule.count_when is not None and self in request.state:
            # Not a layer of the stack: have the driver tell us how it ended.
            request.after_response(self._count_outcome)
        return result

    async def acheck(self, request: RequestView) -> Rejected | None:
        """:meth:`check` on the event loop, with the async storage.

        A request that came in through WSGI is checked with :meth:`check`:
        its loop was made for it alone (see :func:`seawall._log.serving_wsgi`).
        """
        from seawall._run import arun_flow

        if request.interface == "wsgi":
            return self.check(request)
        rule = self._check_rule(request)
        if rule is None:
            return None
        result: Rejected | None = await arun_flow(self._decide(request, rule))
        if rule.count_when is not None and self in request.state:
            request.after_response(self._count_outcome)
        return result

    def _check_rule(self, request: RequestView) -> _Rule | None:
        if self._has_exempt and self._is_exempt(request):
            self.exempted += 1
            return None
        return self.rule_for(request)

    # -- introspection --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts per rule, exemptions, evictions, storage errors and the storage state."""
        rules = {
            rule.name: {"allowed": rule.allowed, "limited": rule.limited, "shadow": rule.shadowed}
            for rule in self._rule_list
        }
        memory = self._backend if isinstance(self._backend, MemoryBackend) else self._local
        guard = self._guard
        return {
            "strategy": self.strategy,
            "storage": _redact(self.storage_uri),
            "rules": rules,
            "allowed": sum(r["allowed"] for r in rules.values()),
            "limited": sum(r["limited"] for r in rules.values()),
            "shadow": sum(r["shadow"] for r in rules.values()),
            "exempted": self.exempted,
            "keys": len(memory.storage) if memory is not None else None,
            "evictions": memory.storage.evictions if memory is not None else 0,
            "storage_state": guard.state if guard is not None else "up",
            "storage_errors": guard.errors if guard is not None else 0,
            "storage_fallbacks": self.storage_fallbacks,
            "counted": self.counted,
            "not_counted": self.not_counted,
            "bans": self.bans,
            "banned": self.banned,
            "top_limited": [
                {"key": _shown_key(key), "rule": rule, "count": n}
                for (key, rule), n in heapq.nlargest(
                    10, list(self._top_limited.items()), key=lambda item: item[1]
                )
            ],
        }

    def reset(self) -> None:
        """Forget counters, in-memory limits and the storage state (tests)."""
        for rule in self._rule_list:
            rule.allowed = rule.limited = rule.shadowed = 0
        self.exempted = 0
        self.storage_fallbacks = 0
        self.counted = self.not_counted = 0
        self.bans = self.banned = 0
        self._top_limited.clear()
        for backend in (self._backend, self._local):
            if isinstance(backend, MemoryBackend):
                backend.storage.reset()
                backend.storage.evictions = 0
        if isinstance(self._backend, RedisBackend):
            # Shared buckets too, or a bucket used up in one test stays empty
            # in the next: this layer's keys only (its prefix, strategy and
            # rule scopes), never another layer's or app's.
            self._backend.clear(self._own_patterns())
        if self._guard is not None:
            self._guard.reset()

    def _own_patterns(self) -> list[str]:
        """``SCAN`` patterns matching exactly the storage keys of this layer's rules."""
        base = glob_escape(self._base) + "*"  # any client: it never holds a "}"
        patterns = []
        for rule in self._rule_list:
            if rule.dynamic is not None:
                patterns.append(base + glob_escape(f"}}:{rule.scope}:") + "*")
            else:
                patterns += [base + glob_escape(suffix) for suffix in rule.suffixes]
        if self._ban is not None:
            patterns.append(glob_escape(self._ban_base) + "*")  # bans and their strikes
        return patterns


_ADDRESS_KEY = re.compile(r"[0-9A-Fa-f.:/]{1,64}")


def _shown_key(ident: str) -> str:
    """A key as stats may show it: client addresses whole, anything else masked.

    A key taken from a header or a callable may be a credential (an API key,
    a session token); stats reach the dashboard and logs, so only its first
    four characters are shown.
    """
    if _ADDRESS_KEY.fullmatch(ident) or ident == UNKNOWN_CLIENT:
        return ident
    return ident[:4] + "\u2026" if len(ident) > 4 else "\u2026"


def _digest(ident: str) -> str:
    """A short stable stand-in for a long or brace-carrying key (never stored raw)."""
    import hashlib

    return "#" + hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class Limiter:
    """A rate limit for handlers; use it as a decorator (see :func:`limit`).

    Call :meth:`check`/:meth:`acheck` with a :class:`~seawall.RequestView`
    to decide without the decorator (framework adapters do). The handlers
    one limiter decorates share its bucket.
    """

    def __init__(
        self, ratelimit: RateLimit, *, name: str | None = None, override_defaults: bool = False
    ) -> None:
        self.ratelimit = ratelimit
        self.name = name
        #: The handlers it guards skip the wall's RateLimit layers (adapters honour it).
        self.override_defaults = override_defaults
        self._bound = False

    def __repr__(self) -> str:
        return f"Limiter({self.ratelimit!r})"

    def check(self, request: RequestView) -> Rejected | None:
        """``None`` if admitted, else the :class:`RateLimited` to raise."""
        return self.ratelimit.check(request)

    async def acheck(self, request: RequestView) -> Rejected | None:
        """:meth:`check` with the async storage."""
        return await self.ratelimit.acheck(request)

    def stats(self) -> dict[str, Any]:
        """The underlying :class:`RateLimit`'s stats."""
        return self.ratelimit.stats()

    def _bind(self, func: Callable[..., Any]) -> None:
        # The first handler names the bucket, so two limiters with the same
        # limit on two handlers never share one by accident.
        if self._bound:
            return
        self._bound = True
        rule = self.ratelimit._default
        if rule is None:  # pragma: no cover - limit() always gives a limit
            return
        scope = self.name or handler_name(func)
        rule.scope = "h." + policy_name(scope)
        if rule.dynamic is None:
            rule.set_quotas(rule.quotas, self.ratelimit.workers)
            self.ratelimit._choose_path(rule)

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap *func* (sync or async): it raises :class:`RateLimited` once the limit is used."""
        self._bind(func)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                rejection = await self.ratelimit.acheck(_current(func))
                if rejection is not None:
                    raise rejection
                return await func(*args, **kwargs)

            async_wrapper.__seawall_limit__ = self  # type: ignore[attr-defined]
            if self.override_defaults:
                setattr(async_wrapper, OVERRIDE_ATTR, True)
            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rejection = self.ratelimit.check(_current(func))
            if rejection is not None:
                raise rejection
            return func(*args, **kwargs)

        wrapper.__seawall_limit__ = self  # type: ignore[attr-defined]
        if self.override_defaults:
            setattr(wrapper, OVERRIDE_ATTR, True)
        return wrapper


def _current(func: Callable[..., Any]) -> RequestView:
    request = current_request()
    if request is None:
        name = getattr(func, "__qualname__", repr(func))
        msg = (
            f"seawall.limit on {name}: no current request, so nothing to count it by. "
            "Serve the handler through seawall: seawall.Seawall(app), or the framework's "
            "adapter (seawall.django.SeawallMiddleware in MIDDLEWARE, seawall.flask.Seawall(app), "
            "app.add_middleware(seawall.fastapi.SeawallMiddleware)); a view called directly "
            "(Django's RequestFactory) has none"
        )
        raise ConfigurationError(msg)
    return request


def limit(
    limit: str | Sequence[str] | Callable[..., Any],
    *,
    key: str | Callable[..., Any] | None = None,
    name: str | None = None,
    override_defaults: bool = False,
    **options: Any,
) -> Limiter:
    """Rate limit one handler: ``@seawall.limit("5/minute", key=...)``.

    Works on sync and async handlers (async ones use the async storage).
    Once the limit is used up the handler is not called and
    :class:`~seawall.RateLimited` is raised; the drivers render it as a 429
    problem+json with ``Retry-After``. ``RateLimit`` headers are added to
    the handler's response. *options* are :class:`RateLimit`'s (``storage``,
    ``strategy``, ``cost``, ``shadow``...). Each decorated handler has its
    own bucket, named after it unless *name* is given.

    The limit applies on top of the wall's ``RateLimit`` layers, unless
    *override_defaults* is true: the framework adapters (Flask, Django,
    FastAPI) then serve the handler without them, so this limit replaces
    the app-wide one there (the way flask-limiter's ``override_defaults``
    does). On a plain ASGI or WSGI app, which has no routes to resolve
    before the layers run, the flag changes nothing.
    """
    for option in ("rules", "websocket_messages"):
        if option in options:
            msg = f"limit: {option} apply to the RateLimit layer, not to one handler"
            raise ConfigurationError(msg)
    return Limiter(
        RateLimit(limit, key=key, policy=name or "handler", **options),
        name=name,
        override_defaults=bool(override_defaults),
    )
