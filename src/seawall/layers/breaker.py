"""CircuitBreaker: stop sending requests to an app (or a route) that keeps failing.

The layer takes a permit from a breaker in ``on_request`` and gives it back
with the request's outcome in ``on_complete``. Failures, by default: a 5xx
status, an exception out of the app, a deadline overrun (``Timeout``);
4xx answers, :class:`~seawall.Rejected` exceptions and the types in
*ignore* are not counted at all. Open: 503 problem+json
``temporary-reduced-capacity`` with ``Retry-After`` the time left open.

Which breaker (``per=``):

- ``"global"``: one breaker for the whole app.
- ``"route"``: one per route template. The template is only certain after the
  app ran (``outcome.route``), but the decision is needed before. So the
  layer uses ``request.route`` when an adapter set it before the app ran;
  else the template it learned for this very path; else the first learned
  template that matches the path (static ones before ones with parameters);
  else the raw path. Learned templates are bounded by *max_routes*, and so,
  apart, are raw-path keys (paths no template matched yet: a scanner's
  404s). Beyond either bound requests share the ``"<other>"`` breaker, so
  a flood of unknown paths never takes a real route's own breaker. An app
  that never reports templates (a bare ASGI/WSGI app) is keyed by raw path:
  give it ``per={groups}`` instead.
- ``{"group": ["/pay/*", "/checkout/{id}"], ...}``: one breaker per group of
  globs or templates (first matching group wins); other paths pass unguarded.

Handlers get :func:`breaker`, a decorator for sync and async handlers that
raises :class:`~seawall.CircuitOpen` (rendered as the 503 by the drivers
and adapters).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, TypeVar, overload

from seawall._breaker.engine import Breaker, BreakerConfig, _Epoch
from seawall._breaker.patterns import compile_pattern, compile_patterns, count_params
from seawall._breaker.registry import breakers
from seawall._breaker.shared import RedisBreakerStore
from seawall._core.layer import ORDER, Outcome
from seawall._core.request import RequestView
from seawall._log import current_request, logger
from seawall.exceptions import ConfigurationError, StorageError
from seawall.handlers import handler_name

__all__ = ["CircuitBreaker", "breaker"]

F = TypeVar("F", bound=Callable[..., Any])

OTHER = "<other>"
_CONFIG_KEYS = frozenset(
    (
        "fail_max",
        "failure_rate_threshold",
        "slow_call_rate_threshold",
        "slow_call_duration",
        "sliding_window_type",
        "sliding_window_size",
        "minimum_number_of_calls",
        "permitted_calls_in_half_open",
        "wait_in_open",
    )
)
_PATH_CACHE_MAX = 10_000


def _exception_type(item: type[BaseException] | str) -> type[BaseException]:
    found: Any = item
    if isinstance(item, str):
        module, _, name = item.partition(":")
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            msg = f"ignore: cannot import {item!r} (expected 'module:ExceptionName')"
            raise ConfigurationError(msg) from None
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        msg = f"ignore: expected exception types, got {item!r}"
        raise ConfigurationError(msg)
    return found


class _Acquire:
    """The effect that takes a permit from Redis (sync client or ``redis.asyncio``)."""

    __slots__ = ("store",)

    def __init__(self, store: RedisBreakerStore) -> None:
        self.store = store

    def run(self) -> Any:
        """Take the permit on this thread."""
        return self.store.acquire_sync()

    async def arun(self) -> Any:
        """Take the permit on the event loop."""
        return await self.store.acquire_async()

    def __repr__(self) -> str:
        return f"_Acquire({self.store.name!r})"


class CircuitBreaker:
    """Answer 503 while the app (or a route) is failing, then probe it back.

    Args:
        per: ``"global"``, ``"route"`` or ``{group: patterns}`` (see the module doc).
        breaker_name: take the breakers from the named registry
            (``seawall.resilience.breakers``), so ``@seawall.breaker`` and
            ``@seawall.protect`` can share them: the global breaker is named
            *breaker_name*, the others ``"<breaker_name>:<route or group>"``.
            ``None``: private breakers.
        fail_max, failure_rate_threshold, slow_call_rate_threshold,
        slow_call_duration, sliding_window_type, sliding_window_size,
        minimum_number_of_calls, permitted_calls_in_half_open, wait_in_open,
        max_wait_in_half_open:
            the breaker settings (see docs/breakers.md).
        ignore: exception types (or ``"module:Name"`` strings, for settings
            files) that are not counted (neither success nor failure).
        is_failure: ``(outcome) -> bool | None`` replacing the default
            classification (``None``: not counted).
        storage: ``None`` (this process) or a Redis URI (shared by every worker).
        key_prefix: namespace of the Redis keys.
        storage_timeout: seconds a Redis call may take before the local state is used.
        max_routes: at most this many route breakers (``per="route"``).
        shadow: decide, log and count, but let refused requests through.
        clock: monotonic clock (``ManualClock`` in tests).
    """

    name: ClassVar[str] = "breaker"
    order: ClassVar[int] = ORDER["breaker"]

    def __init__(
        self,
        *,
        per: str | Mapping[str, str | Sequence[str]] = "global",
        breaker_name: str | None = None,
        fail_max: int | None = None,
        failure_rate_threshold: float | None = None,
        slow_call_rate_threshold: float | None = None,
        slow_call_duration: float | timedelta = 60.0,
        sliding_window_type: str = "count",
        sliding_window_size: int = 100,
        minimum_number_of_calls: int = 20,
        permitted_calls_in_half_open: int = 1,
        wait_in_open: float | timedelta = 30.0,
        max_wait_in_half_open: float | timedelta | None = None,
        ignore: Iterable[type[BaseException] | str] = (),
        is_failure: Callable[[Outcome], bool | None] | None = None,
        storage: str | None = None,
        key_prefix: str = "seawall",
        storage_timeout: float = 0.05,
        max_routes: int = 200,
        shadow: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._groups: tuple[tuple[str, re.Pattern[str]], ...] = ()
        if isinstance(per, Mapping):
            if not per:
                msg = "per: expected 'global', 'route' or a non-empty {group: patterns} mapping"
                raise ConfigurationError(msg)
            self._groups = tuple((str(g), compile_patterns(p)) for g, p in per.items())
            self.per = "groups"
        elif per in ("global", "route"):
            self.per = per
        else:
            msg = f"per: expected 'global', 'route' or a {{group: patterns}} mapping, got {per!r}"
            raise ConfigurationError(msg)
        if isinstance(max_routes, bool) or not isinstance(max_routes, int) or max_routes < 1:
            msg = f"max_routes: expected a whole number >= 1, got {max_routes!r}"
            raise ConfigurationError(msg)
        ignore = tuple(_exception_type(item) for item in ignore)
        self._options: dict[str, Any] = {
            "fail_max": fail_max,
            "failure_rate_threshold": failure_rate_threshold,
            "slow_call_rate_threshold": slow_call_rate_threshold,
            "slow_call_duration": slow_call_duration,
            "sliding_window_type": sliding_window_type,
            "sliding_window_size": sliding_window_size,
            "minimum_number_of_calls": minimum_number_of_calls,
            "permitted_calls_in_half_open": permitted_calls_in_half_open,
            "wait_in_open": wait_in_open,
            "max_wait_in_half_open": max_wait_in_half_open,
            "exclude": tuple(ignore),
            "storage": storage,
            "key_prefix": key_prefix,
            "storage_timeout": storage_timeout,
            "clock": clock,
        }
        self.breaker_name = breaker_name
        self._base = breaker_name or "breaker"
        self._is_failure = is_failure
        # Read per request: a bool attribute is cheaper than comparing strings.
        self._per_route = self.per == "route"
        self.max_routes = max_routes
        self.shadow = shadow
        self.shadow_refusals = 0
        self._lock = threading.Lock()
        self._breakers: dict[str, Breaker] = {}
        #: Breakers made for raw paths (see breaker()).
        self._raw_keys = 0
        # per="route": learned templates (static first) and path -> key memo.
        self._templates: list[tuple[int, str, re.Pattern[str]]] = []
        self._known: set[str] = set()
        self._paths: dict[str, str] = {}
        # path -> its breaker, for requests without an adapter's template:
        # on_request's one dict read. Kept to paths whose key is in _paths.
        self._by_path: dict[str, Breaker] = {}
        # Validate now: bad settings fail at startup, not on the first request.
        self.config = BreakerConfig.build(
            **{k: v for k, v in self._options.items() if k in _CONFIG_KEYS}
        )
        self._global = self._make("global") if self.per == "global" else None

    def __repr__(self) -> str:
        from seawall.storage import _redact

        c = self.config
        storage = self._options["storage"]
        if isinstance(storage, str):
            storage = _redact(storage)  # `seawall check` and describe() print reprs
        return (
            f"CircuitBreaker(per={self.per!r}, failure_rate_threshold={c.failure_rate_threshold}, "
            f"fail_max={c.fail_max}, minimum_number_of_calls={c.minimum_number_of_calls}, "
            f"wait_in_open={c.wait_in_open}, storage={storage!r})"
        )

    # -- which breaker --------------------------------------------------------------

    def _make(self, key: str) -> Breaker:
        name = self._base if key == "global" else f"{self._base}:{key}"
        options = self._options
        if self.breaker_name is not None:
            found = breakers.get(name, **options)
        else:
            found = Breaker(name, **options)
        self._breakers[key] = found
        return found

    def breaker(self, key: str = "global", *, raw: bool = False) -> Breaker:
        """The breaker for *key* (a route template, a group name, or ``"global"``).

        *raw*: *key* is a raw path no template matched yet; those have a
        budget of their own (*max_routes*), so unknown paths never use up
        the templates' one.
        """
        found = self._breakers.get(key)
        if found is None:
            with self._lock:
                found = self._breakers.get(key)
                if found is None:
                    # Bounded memory whatever paths clients invent.
                    if raw:
                        if self._raw_keys >= self.max_routes:
                            key = OTHER
                        else:
                            self._raw_keys += 1
                    elif len(self._breakers) - self._raw_keys >= self.max_routes:
                        key = OTHER
                    found = self._breakers.get(key) or self._make(key)
        return found

    def _key_for(self, request: RequestView) -> str | None:
        if self.per == "groups":
            path = request.route or request.path
            for group, pattern in self._groups:
                if pattern.fullmatch(path):
                    return group
            return None
        route = request.route
        if route is not None:
            return route
        path = request.path
        key = self._paths.get(path)
        if key is not None:
            return key
        for _, template, pattern in self._templates:
            if pattern.fullmatch(path):
                key = template
                break
        else:
            key = path
        if len(self._paths) >= _PATH_CACHE_MAX:
            self._paths.clear()  # bounded memory whatever paths clients invent
            self._by_path.clear()
        self._paths[path] = key
        return key

    def _learn(self, path: str, template: str) -> None:
        if template not in self._known:
            with self._lock:
                if template not in self._known and len(self._known) < self.max_routes:
                    self._known.add(template)
                    params = count_params(template)
                    # A new sorted list, swapped in whole: readers iterating the
                    # old one never see a list being sorted in place (empty).
                    self._templates = sorted(
                        [*self._templates, (params, template, compile_pattern(template))],
                        key=lambda t: (t[0], -len(t[1])),
                    )
        if self._paths.get(path) != template and template in self._known:
            self._paths[path] = template
            self._by_path.pop(path, None)  # after the line above: see _find

    # -- hooks --------------------------------------------------------------------

    def _find(self, request: RequestView) -> Breaker | None:
        """The breaker for *request* when ``per`` is not ``"global"`` (``None``: unguarded)."""
        key = self._key_for(request)
        if key is None:
            return None
        raw = self._per_route and request.route is None and key == request.path
        found = self.breaker(key, raw=raw and key not in self._known)
        if self.per == "route" and request.route is None:
            path = request.path
            self._by_path[path] = found
            # _learn() re-keys a path in _paths first, then drops it here: if
            # it did so since _key_for() read it, this line sees it and drops
            # the stale breaker, else _learn()'s drop comes after ours.
            if self._paths.get(path) != key:
                self._by_path.pop(path, None)
        return found

    def on_request(self, request: RequestView) -> Any:
        """Take a permit, or refuse with 503 ``temporary-reduced-capacity``."""
        found = self._global
        if found is None:
            route = request.route
            if route is None:
                # The path's breaker, memoised (_find resolves and remembers it).
                found = self._by_path.get(request.path)
            elif self._per_route:
                # An adapter's template is the key itself (breaker()'s first read).
                found = self._breakers.get(route)
            if found is None:
                found = self._find(request)
                if found is None:
                    return None
        # Closed and local: acquire_local()'s lock-free answer, in one read.
        permit = found._closed_epoch
        if permit is None:
            return self._admit(request, found)
        request.state[self] = permit  # a permit knows its breaker (.owner)
        return None

    def _admit(self, request: RequestView, found: Breaker) -> Any:
        """Take a permit from Redis, or from a local breaker that is not closed."""
        store = found._store
        if store is not None and store.available():
            return self._shared_flow(request, found, store)
        permit = found.acquire_local()
        if type(permit) is float:
            return self._refuse(request, found, permit)
        request.state[self] = permit
        return None

    def _shared_flow(self, request: RequestView, found: Breaker, store: RedisBreakerStore) -> Any:
        try:
            answer = yield _Acquire(store)
        except StorageError:
            permit = found.acquire_local()  # the store said so once in the log
        else:
            permit = found._shared_result(answer)
        if type(permit) is float:
            return self._refuse(request, found, permit)
        request.state[self] = permit  # local or shared, it knows its breaker (.owner)
        return None

    def _refuse(self, request: RequestView, found: Breaker, retry_after: float) -> None:
        refusal = found.refusal(retry_after)
        if self.shadow:
            self.shadow_refusals += 1
            logger.info(
                "seawall.breaker.shadow_rejected",
                breaker=found.name,
                request_id=request.request_id,
                retry_after=round(retry_after, 3),
            )
            return None
        raise refusal

    def classify(self, found: Breaker, outcome: Outcome) -> bool | None:
        """``True`` failure, ``False`` success, ``None`` not counted."""
        if self._is_failure is not None:
            verdict = self._is_failure(outcome)
            return None if verdict is None else bool(verdict)
        if outcome.timed_out:
            return True
        exc = outcome.exception
        if exc is not None:
            return found.failure_of(exc)
        if outcome.responded_by is not None:
            return None  # a layer inside this one answered: the app said nothing
        status = outcome.status
        if status is None:
            return None  # the client left before any answer
        if status >= 500:
            return True
        # A response the client left in the middle of says nothing of the
        # app's health (a cancelled call is not counted): no success either.
        return None if outcome.disconnected else False

    def on_complete(self, request: RequestView, outcome: Outcome) -> None:
        """Give the permit back with the outcome; learn the route template."""
        permit = request.state.pop(self, None)
        if outcome.templated and self._per_route:
            template = outcome.route
            # Known and already learned for this path (every request but the
            # first of a path): nothing to learn, no call.
            if template not in self._known or self._paths.get(request.path) != template:
                self._learn(request.path, template)
        if permit is None:
            return
        found: Breaker = permit.owner
        status = outcome.status
        if (
            self._is_failure is None
            and status is not None
            and status < 500
            and outcome.exception is None
            and outcome.responded_by is None
            and not outcome.timed_out
            and not outcome.disconnected
        ):
            # What classify() says, inline: the common case. A success on a
            # quiet permit is _succeeded()'s lock-free case, inline too.
            if permit.quiet:
                found.successes += 1
                if found._listeners:
                    found._tell(False, None)
                return
            failed: bool | None = False
        else:
            failed = self.classify(found, outcome)
        if failed is False and not found._needs_time and type(permit) is _Epoch:
            found._succeeded(permit)  # the common case: local, no duration
            return
        # The app's own time: the layers before it are not the app's slowness.
        duration = outcome.duration - (request.admitted - request.started)
        found.record_background(permit, failed, duration, exc=outcome.exception)

    # -- manual control and figures -------------------------------------------------

    def open(self, key: str = "global") -> None:
        """Open the breaker for *key* now."""
        self.breaker(key).open()

    def close(self, key: str = "global") -> None:
        """Close the breaker for *key* now."""
        self.breaker(key).close()

    def reset(self) -> None:
        """Close every breaker and zero the statistics."""
        for found in list(self._breakers.values()):
            found.reset()
        self.shadow_refusals = 0

    def stats(self) -> dict[str, Any]:
        """Each breaker's state, window figures and counters."""
        out: dict[str, Any] = {
            "per": self.per,
            "breakers": {key: b.stats() for key, b in list(self._breakers.items())},
        }
        if self.shadow:
            out["shadow_refusals"] = self.shadow_refusals
        return out


def held_by_request(found: Breaker) -> bool:
    """Whether the current request already holds a permit of *found*.

    The ``CircuitBreaker`` layer took it (``breaker_name=`` shares a breaker
    with ``@seawall.breaker`` of that name): a handler guard inside it uses
    that permit, and the layer gives it back with the request's outcome.
    Taking a second permit would count each request twice, and in
    half-open, with one probe allowed, refuse the handler its own probe, so
    the breaker would never close again.
    """
    view = current_request()
    if view is None or not view.state:
        return False
    return any(getattr(held, "owner", None) is found for held in list(view.state.values()))


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception stands for, when it is a framework's HTTP error.

    Starlette's and FastAPI's ``HTTPException`` (``status_code``), werkzeug's
    (Flask's ``abort``), Django's ``Http404``, ``PermissionDenied``,
    ``SuspiciousOperation`` and ``BadRequest``; ``None`` for anything else.
    """
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 100 <= status <= 599:
        return status
    werkzeug = sys.modules.get("werkzeug.exceptions")
    if werkzeug is not None and isinstance(exc, werkzeug.HTTPException):
        return exc.code if isinstance(exc.code, int) else None
    http = sys.modules.get("django.http")
    if http is not None and isinstance(exc, http.Http404):
        return 404
    core = sys.modules.get("django.core.exceptions")
    if core is not None:
        if isinstance(exc, core.PermissionDenied):
            return 403
        if isinstance(exc, (core.SuspiciousOperation, core.BadRequest)):
            return 400
    return None


def exception_failed(found: Breaker, exc: BaseException) -> bool | None:
    """Whether *exc* from a guarded call is a failure of *found*.

    An HTTP error below 500 raised on purpose (``abort(404)``,
    ``HTTPException(403)``) is an answer, not a failure, and is not counted
    (``None``), as FastAPI's ``Depends(breaker(...))`` has always judged it;
    one of 500 or more is a failure. A client that went away (Starlette's
    ``WebSocketDisconnect``, ``ClientDisconnect``) or sent what FastAPI's
    validation refuses is not counted either; the rest is
    :meth:`Breaker.failure_of`'s to say.
    """
    status = http_status_of(exc)
    if status is not None:
        return True if status >= 500 else None
    if _clients_doing(exc):
        return None
    return found.failure_of(exc)


def _clients_doing(exc: BaseException) -> bool:
    """Whether *exc* is the client's doing: it went away, or sent what the route refuses.

    A client closing its websocket raises ``WebSocketDisconnect`` out of
    the endpoint's ``receive()`` in the loop FastAPI's tutorial writes;
    FastAPI's request validation errors are its 422 (or, on a websocket,
    its 1008 close). Neither is the service failing.
    """
    websockets = sys.modules.get("starlette.websockets")
    if websockets is not None and isinstance(exc, websockets.WebSocketDisconnect):
        return True
    requests = sys.modules.get("starlette.requests")
    if requests is not None and isinstance(exc, requests.ClientDisconnect):
        return True
    fastapi = sys.modules.get("fastapi.exceptions")
    return fastapi is not None and isinstance(
        exc, (fastapi.RequestValidationError, fastapi.WebSocketRequestValidationError)
    )


def _failed_result(result: Any) -> bool:
    # Framework responses (Flask, Starlette, Django) all carry status_code.
    status = getattr(result, "status_code", None)
    return isinstance(status, int) and status >= 500


@overload
def breaker(name: F, /) -> F: ...


@overload
def breaker(name: str | None = None, /, **options: Any) -> Callable[[F], F]: ...


def breaker(name: Any = None, /, **options: Any) -> Any:
    """Guard a sync or async handler with the named breaker; raise ``CircuitOpen`` when open.

    ``@seawall.breaker("payments", failure_rate_threshold=0.5)`` or bare
    ``@seawall.breaker`` (named after the function). Failures are exceptions
    (minus excluded ones) and returned responses with a 5xx ``status_code``.
    The breaker lives in ``seawall.resilience.breakers`` under *name*, shared
    with ``@seawall.protect(breaker=name)`` and ``CircuitBreaker(breaker_name=...)``.

    Args:
        name: the breaker's name.
        **options: :class:`~seawall._breaker.engine.Breaker` settings (first use only).
    """
    if callable(name):
        return breaker(None)(name)

    def decorate(func: F) -> F:
        found = breakers.get(name or handler_name(func), **options)
        clock = found._clock

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if held_by_request(found):
                    return await func(*args, **kwargs)
                permit = await found.aacquire()
                if type(permit) is float:
                    raise found.refusal(permit)
                start = clock()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    failed = exception_failed(found, exc)
                    await found.arecord(permit, failed, clock() - start, exc=exc)
                    raise
                await found.arecord(permit, _failed_result(result), clock() - start)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if held_by_request(found):
                return func(*args, **kwargs)
            permit = found.acquire()
            if type(permit) is float:
                raise found.refusal(permit)
            start = clock()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                failed = exception_failed(found, exc)
                found.record(permit, failed, clock() - start, exc=exc)
                raise
            found.record(permit, _failed_result(result), clock() - start)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
