"""Helpers for testing seawall, and apps that use it, with pytest or unittest.

- :class:`ManualClock`: a clock that moves only when told, for any ``clock=``.
- :func:`reset`: forget every layer's state and statistics between tests,
  and the counts of the app's handler limits and named breakers.
- :func:`override`: disable, replace or tighten layers for a block, a test
  or a whole suite (a context manager and a decorator; pytest and unittest).

With Django, pass the middleware class (``seawall.django.SeawallMiddleware``)
as *app*: Django's test clients build a new middleware (a new wall) each, so
``override`` then applies to every wall built during the block as well as
the one already built.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.handlers import HANDLER_METHODS

if TYPE_CHECKING:
    from seawall._app import Seawall
    from seawall._core.stack import Stack

__all__ = ["ManualClock", "override", "reset"]

_F = TypeVar("_F", bound="Callable[..., Any]")


class ManualClock:
    """A clock that stands still until :meth:`advance` (thread-safe).

    Pass it as ``clock=`` to any layer; call it like ``time.monotonic``.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current time in seconds."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by *seconds*; return the new time."""
        if seconds < 0:
            msg = "a clock never goes back"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to *now* (not earlier than the current time)."""
        self.advance(now - self._now)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


def reset(app: Any) -> None:
    """Reset the wall of *app* and the handler-level state of its routes, for a fresh test.

    *app* is what ``Seawall(...)`` returned, or a framework app carrying one
    (Flask, FastAPI/Starlette), or ``seawall.django.SeawallMiddleware``
    (the wall Django built last, and the views of the URLconf). Resets:

    - every layer of the wall that can be reset (counts, limits, statistics);
    - the handler limits of the app's views, endpoints, blueprints and
      dependencies (``@guard.limit``, ``@seawall.limit``, ``Depends(limit(...))``,
      ``seawall.django.limit``), so a bucket used up in one test is full in the next;
    - every named breaker of the process (``seawall.breaker``,
      ``Depends(breaker(...))``, ``@seawall.protect``): closed, statistics zeroed.
    """
    from seawall._breaker.registry import breakers

    for wall in _walls(app):
        for layer in wall.stack.layers:
            fn = getattr(layer, "reset", None)
            if callable(fn):
                fn()
    for limiter in _handler_limiters(app):
        limiter.ratelimit.reset()
    breakers.reset()


def _in_use(app: Any, layer: object) -> bool:
    """Whether *layer* already serves *app*'s wall (``layers=`` may reuse the app's own)."""
    from seawall.stats import find_seawall

    django = _django(app)
    try:
        wall = django.get_wall() if django is not None else find_seawall(app)
    except LookupError:
        return False
    return layer in wall.stack.layers


def _build_starlette(app: Any) -> None:
    """Build a Starlette app's middleware now, as its first request would, so its wall exists."""
    if getattr(app, "middleware_stack", False) is None and hasattr(app, "build_middleware_stack"):
        app.middleware_stack = app.build_middleware_stack()


def _django(app: Any) -> Any:
    """The Django adapter module if *app* names it (its middleware class), else ``None``."""
    module = sys.modules.get("seawall.contrib.django")
    if module is not None and app is module.SeawallMiddleware:
        return module
    return None


def _walls(app: Any) -> list[Seawall]:
    from seawall.stats import find_seawall

    django = _django(app)
    if django is None:
        _build_starlette(app)  # reset() before the first request: nothing to lose, no error
        return [find_seawall(app)]
    try:
        return [django.get_wall()]
    except LookupError:
        return []


def _handler_limiters(app: Any) -> list[Any]:
    """The handler-level limiters reachable from *app*'s routes (views, endpoints, hooks)."""
    handlers: list[Any] = []
    django = _django(app)
    if django is not None:
        from django.urls import get_resolver  # type: ignore[import-untyped]

        todo = list(get_resolver().url_patterns)
        while todo:
            pattern = todo.pop()
            todo.extend(getattr(pattern, "url_patterns", ()))
            handlers.append(getattr(pattern, "callback", None))
    # Flask: views, and the before_request hooks blueprint limits use.
    handlers.extend(getattr(app, "view_functions", {}).values())
    for funcs in getattr(app, "before_request_funcs", {}).values():
        handlers.extend(funcs)
    # Starlette/FastAPI: endpoints and (nested) dependencies, in included
    # routers and mounted apps too.
    from seawall.asgi import walk_routes

    for _, route in walk_routes(getattr(getattr(app, "router", None), "routes", None) or ()):
        handlers.append(getattr(route, "endpoint", None))
        dependant = getattr(route, "dependant", None)
        deps = list(getattr(dependant, "dependencies", ()))
        while deps:
            dep = deps.pop()
            handlers.append(dep.call)
            deps.extend(dep.dependencies)

    from seawall.layers.ratelimit import Limiter

    found: dict[int, Any] = {}
    seen: set[int] = set()
    for handler in handlers:
        chain = [handler]
        while chain:
            fn = chain.pop()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            marks = [getattr(fn, "__seawall_limit__", None)]
            marks.extend(getattr(fn, "__seawall_handlers__", None) or ())
            for mark in marks:
                if isinstance(mark, Limiter):
                    found[id(mark)] = mark
            for attr in ("__wrapped__", "func", "view_class"):
                chain.append(getattr(fn, attr, None))
            if isinstance(fn, type):
                # A class-based view: the limits on its handlers (MethodView.get,
                # method_decorator(limit(...)) on a Django view's get()).
                chain.extend(getattr(fn, method, None) for method in (*HANDLER_METHODS, "dispatch"))
    return list(found.values())


# -- overriding layers in an app's own tests (appended by the adapters issue) --


def _matches(layer: object, spec: Any) -> bool:
    """Whether *layer* is named by *spec*: a class, a layer name, a class name or a config key."""
    if isinstance(spec, type):
        return isinstance(layer, spec)
    if getattr(layer, "name", None) == spec or type(layer).__name__ == spec:
        return True
    from seawall.config import LAYER_KEYS

    target = LAYER_KEYS.get(spec)
    return target is not None and target.rpartition(":")[2] == type(layer).__name__


def _stack_for(
    old: Stack,
    disable: Iterable[Any],
    replace: Mapping[Any, object],
    layers: list[object] | None,
) -> Stack:
    """*old* with the layers named in *disable* removed and those in *replace* swapped."""
    from seawall._core.stack import Stack

    if layers is not None:
        new = list(layers)
    else:
        new = list(old.layers)
        for spec in disable:
            kept = [layer for layer in new if not _matches(layer, spec)]
            if len(kept) == len(new):
                msg = f"override: no layer matches {spec!r} in {list(old.names)}"
                raise ValueError(msg)
            new = kept
        for spec, layer in replace.items():
            hits = [i for i, current in enumerate(new) if _matches(current, spec)]
            if not hits:
                if _matches(layer, spec):
                    # The layer is not in the stack (an outer override disabled
                    # it): the replacement goes in, in its canonical place.
                    new.append(layer)
                    continue
                msg = f"override: no layer matches {spec!r} in {list(old.names)}"
                raise ValueError(msg)
            new[hits[0]] = layer
            for i in reversed(hits[1:]):
                del new[i]
    return Stack(new, order="canonical", on_layer_error=old.on_layer_error)


def _swap(
    wall: Seawall,
    disable: Iterable[Any],
    replace: Mapping[Any, object],
    layers: list[object] | None,
) -> Stack:
    """Give *wall* its overridden stack; return the stack it had."""
    old = wall.stack
    stack = _stack_for(old, disable, replace, layers)
    for layer in stack.layers:
        if layer in old.layers:
            continue
        bind = getattr(layer, "bind", None)
        if callable(bind):
            bind(wall)
    wall.stack = stack
    return old


class _Override:
    """What :func:`override` returns: a context manager and a decorator (sync and async).

    ``contextlib.contextmanager`` as a decorator of an ``async def`` would
    end the block when the coroutine is made, before it runs.
    """

    def __init__(
        self,
        app: Any,
        disable: list[Any],
        replace: dict[Any, object],
        layers: list[object] | None,
    ) -> None:
        self._args = (app, disable, replace, layers)
        self._active: list[contextlib.AbstractContextManager[Any]] = []

    def __enter__(self) -> Any:
        block = _overridden(*self._args)
        entered = block.__enter__()
        self._active.append(block)
        return entered

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._active.pop().__exit__(*exc_info)

    def __call__(self, func: _F) -> _F:
        args = self._args
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*a: Any, **kw: Any) -> Any:
                with _overridden(*args):
                    return await func(*a, **kw)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*a: Any, **kw: Any) -> Any:
            with _overridden(*args):
                return func(*a, **kw)

        return run  # type: ignore[return-value]


def override(
    app: Any,
    *,
    disable: Iterable[Any] = (),
    replace: Mapping[Any, object] | None = None,
    layers: Iterable[object] | None = None,
) -> _Override:
    """Change the layers of the wall in *app* for the duration of a block, then restore them.

    ::

        with override(app, disable=["rate_limit"]):          # no rate limits here
            ...
        with override(app, replace={"rate_limit": RateLimit("2/minute")}):
            ...                                               # a tight limit to test 429s

    *app* is what ``Seawall(...)`` returned, or a framework app carrying one
    (Flask, FastAPI/Starlette), or ``seawall.django.SeawallMiddleware``: then
    every wall Django builds during the block (each test client builds its
    own) is overridden too, as is the one built last. Layers are
    named by config key (``"rate_limit"``), layer name (``"ratelimit"``),
    class name or class. *layers* replaces the whole stack. Works as a
    decorator too, and in unittest with ``self.enterContext(override(...))``
    or ``cm.__enter__()`` plus ``self.addCleanup(cm.__exit__, None, None, None)``.

    Only the wall's layers change: handler decorators (``seawall.limit``...)
    keep their own limits. Requests already in flight finish with the old layers.
    A layer the block brings in (by *replace* or *layers*) is reset each time
    the block is entered, so a decorated test starts from a fresh one on
    every run. *replace* of a layer the stack lacks (an outer ``override``
    disabled it) adds the replacement, if it is a layer of that name.

    Raises:
        ValueError: a name in *disable* or *replace* matches no layer (a
            typo must not silently leave a limit in place).
    """
    given = None if layers is None else list(layers)
    return _Override(app, list(disable), dict(replace or {}), given)


@contextlib.contextmanager
def _overridden(
    app: Any,
    disable: list[Any],
    replace: dict[Any, object],
    given: list[object] | None,
) -> Iterator[Any]:
    """The block :func:`override` describes, entered once."""
    from seawall.stats import find_seawall

    # A layer the block brings in starts empty each time it is entered: the
    # same replacement object serves every run of a decorated (parametrised)
    # test. Once per entry, not per wall: Django builds one per test client.
    for layer in [*replace.values(), *(given or ())]:
        reset_layer = getattr(layer, "reset", None)
        if callable(reset_layer) and not _in_use(app, layer):
            reset_layer()
    django = _django(app)
    if django is not None:
        with _override_django(django, disable, replace, given) as current:
            yield current
        return
    _build_starlette(app)
    wall = find_seawall(app)
    old = _swap(wall, disable, replace, given)
    try:
        yield wall
    finally:
        wall.stack = old


@contextlib.contextmanager
def _override_django(
    django: Any,
    disable: list[Any],
    replace: dict[Any, object],
    layers: list[object] | None,
) -> Iterator[Any]:
    try:
        current = django.get_wall()
    except LookupError:
        current = None
    # The wall built last is overridden now, so a typo fails here, not in a request.
    old = None if current is None else _swap(current, disable, replace, layers)

    built: list[tuple[weakref.ref[Any], Stack]] = []

    def hook(wall: Any) -> None:
        built.append((weakref.ref(wall), _swap(wall, disable, replace, layers)))

    django.build_hooks.append(hook)
    try:
        yield current
    finally:
        django.build_hooks.remove(hook)
        if current is not None and old is not None:
            current.stack = old
        # A middleware built during the block may outlive it: give it its own layers back.
        for ref, stack in built:
            wall = ref()
            if wall is not None:
                wall.stack = stack
