"""``seawall.exempt``: mark a handler that the wall's rejecting layers leave alone.

::

    from seawall import exempt

    @app.get("/health")
    @exempt
    def health(): ...

An exempt handler still gets the observing layers (Timing, ErrorCapture,
Health, Metrics: every layer placed before load shedding in the canonical
order) but never the rejecting ones (LoadShedding, ConcurrencyLimit,
RateLimit, Validation, CircuitBreaker, Timeout and custom layers). The
framework adapters honour the mark: they resolve the route before the
layers run (Flask and Django resolve the view, FastAPI/Starlette match the
app's routes) and only when some handler is marked, so apps without
exemptions pay nothing.

The mark is an attribute, so it survives ``functools.wraps`` and can be put
on a function view, a class-based view, a Flask blueprint or a method.

A handler limit given ``override_defaults=True`` (``guard.limit``,
Django's ``limit``, FastAPI's ``Depends(limit(...))``) sets a second mark,
:data:`OVERRIDE_ATTR`: the adapters then serve that handler without the
wall's ``RateLimit`` layers, so its own limit replaces the app-wide one
(every other layer still runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from seawall._core.layer import ORDER

__all__ = [
    "EXEMPT_ATTR",
    "HANDLER_METHODS",
    "OVERRIDE_ATTR",
    "exempt",
    "exempt_layers",
    "handler_name",
    "is_exempt",
    "mark_of",
    "overrides_defaults",
    "view_mark",
    "view_marks",
]

#: The attribute :func:`exempt` sets on what it marks.
EXEMPT_ATTR = "__seawall_exempt__"

#: The attribute a handler limit with ``override_defaults=True`` sets on what it guards.
OVERRIDE_ATTR = "__seawall_overrides_defaults__"

_T = TypeVar("_T")


@overload
def exempt(handler: _T, /) -> _T: ...


@overload
def exempt(handler: None = None, /) -> Callable[[_T], _T]: ...


def exempt(handler: Any = None, /) -> Any:
    """Mark *handler* as exempt from the wall's rejecting layers.

    Use it bare (``@exempt``) or called (``@exempt()``); it returns the
    handler itself, unchanged but for the mark, so it costs nothing per call
    and works on sync and async handlers, classes and blueprints alike.
    """
    if handler is None:
        return exempt
    try:
        setattr(handler, EXEMPT_ATTR, True)
    except (AttributeError, TypeError):
        # A bound method: mark the function underneath.
        setattr(handler.__func__, EXEMPT_ATTR, True)
    return handler


def is_exempt(handler: Any) -> bool:
    """Whether *handler* (or the class or function it wraps) carries the exempt mark.

    Looks through ``view_class`` (Django and Flask class-based views),
    ``cls`` (Django REST framework), ``func`` (``functools.partial``) and the
    ``__wrapped__`` chain of decorators.
    """
    return _marked(handler, EXEMPT_ATTR)


def overrides_defaults(handler: Any) -> bool:
    """Whether *handler* carries a limit that replaces the wall's rate limits.

    Looked for as :func:`is_exempt` looks (classes, partials, wrappers).
    """
    return _marked(handler, OVERRIDE_ATTR)


def handler_name(func: Any) -> str:
    """The name state is kept under for a guarded handler: its module and qualified name.

    A class-based view's ``as_view()`` function (Django's, Flask's
    ``MethodView``) is named after its class, and Flask's after its endpoint
    too: they are all ``View.as_view.<locals>.view`` otherwise, and every
    such view would share one bucket or breaker.
    """
    view_class = getattr(func, "view_class", None)
    if isinstance(view_class, type):
        name = f"{view_class.__module__}.{view_class.__qualname__}"
        endpoint = getattr(func, "__name__", "")
        return name if endpoint in ("", "view", view_class.__name__) else f"{name}:{endpoint}"
    qualname = getattr(func, "__qualname__", "")
    name = f"{getattr(func, '__module__', '')}.{qualname}"
    endpoint = getattr(func, "__name__", "")
    # Renamed after it was made (Flask names a MethodView's function after its
    # endpoint before applying its ``decorators``): the new name tells it apart.
    if endpoint and endpoint != qualname.rpartition(".")[2]:
        name = f"{name}:{endpoint}"
    return name


def mark_of(handler: Any) -> str | None:
    """``"exempt"``, ``"override"`` (its limit replaces the wall's) or ``None``."""
    if _marked(handler, EXEMPT_ATTR):
        return "exempt"
    if _marked(handler, OVERRIDE_ATTR):
        return "override"
    return None


#: The handler methods of a class-based view (Django's ``View``, Flask's ``MethodView``).
HANDLER_METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "trace")


def view_mark(view: Any, method: str | None) -> str | None:
    """The mark of *view*, or of its class-based view's handler for *method*.

    ``@exempt`` or a limit with ``override_defaults=True`` on one handler
    (``get``) marks that method's requests only. A HEAD without a ``head``
    handler is served by ``get``, as Django's ``View`` and Flask's
    ``MethodView`` serve it.
    """
    mark = mark_of(view)
    if mark is not None or not method:
        return mark
    view_class = getattr(view, "view_class", None)
    if not isinstance(view_class, type):
        return None
    name = method.lower()
    handler = getattr(view_class, name, None)
    if handler is None and name == "head":
        handler = getattr(view_class, "get", None)
    return mark_of(handler)


def view_marks(view: Any) -> bool:
    """Whether *view* or any handler of its class-based view is marked."""
    return any(view_mark(view, method) for method in HANDLER_METHODS)


def _marked(handler: Any, mark: str) -> bool:
    seen = 0
    while handler is not None and seen < 16:
        seen += 1
        if getattr(handler, mark, False) is True:
            return True
        for attr in ("view_class", "cls"):
            inner = getattr(handler, attr, None)
            if isinstance(inner, type) and getattr(inner, mark, False) is True:
                return True
        handler = getattr(handler, "__wrapped__", None) or getattr(handler, "func", None)
    return False


def exempt_layers(layers: Iterable[object]) -> list[object]:
    """The layers an exempt handler still gets: those outside load shedding.

    Those are the observing layers (timing, error capture, health, metrics);
    every layer from load shedding inwards, custom layers included, may
    refuse a request, so an exempt handler skips it.
    """
    from seawall._core.stack import layer_order

    return [layer for layer in layers if layer_order(layer) < ORDER["shedding"]]
