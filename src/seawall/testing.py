"""Helpers for testing seawall, and apps that use it, with pytest or unittest.

- :class:`ManualClock`: a clock that moves only when told, for any ``clock=``.
- :func:`reset`: forget every layer's state and statistics between tests.
- :func:`override`: disable, replace or tighten layers for a block, a test
  or a whole suite (a context manager and a decorator; pytest and unittest).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["ManualClock", "override", "reset"]


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
    """Reset every layer of a wrapped *app* that can be reset (state and stats).

    *app* is what ``Seawall(...)`` returned, or a framework app carrying one.
    """
    from seawall.stats import find_seawall

    wall = find_seawall(app)
    for layer in wall.stack.layers:
        fn = getattr(layer, "reset", None)
        if callable(fn):
            fn()


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


@contextlib.contextmanager
def override(
    app: Any,
    *,
    disable: Iterable[Any] = (),
    replace: Mapping[Any, object] | None = None,
    layers: Iterable[object] | None = None,
) -> Iterator[Any]:
    """Change the layers of the wall in *app* for the duration of a block, then restore them.

    ::

        with override(app, disable=["rate_limit"]):          # no rate limits here
            ...
        with override(app, replace={"rate_limit": RateLimit("2/minute")}):
            ...                                               # a tight limit to test 429s

    *app* is what ``Seawall(...)`` returned, or a framework app carrying one
    (Flask, FastAPI/Starlette), or ``seawall.django.get_wall()``. Layers are
    named by config key (``"rate_limit"``), layer name (``"ratelimit"``),
    class name or class. *layers* replaces the whole stack. Works as a
    decorator too, and in unittest with ``self.enterContext(override(...))``
    or ``cm.__enter__()`` plus ``self.addCleanup(cm.__exit__, None, None, None)``.

    Only the wall's layers change: handler decorators (``seawall.limit``...)
    keep their own limits. Requests already in flight finish with the old layers.

    Raises:
        ValueError: a name in *disable* or *replace* matches no layer (a
            typo must not silently leave a limit in place).
    """
    from seawall._core.stack import Stack
    from seawall.stats import find_seawall

    if getattr(app, "middleware_stack", False) is None and hasattr(app, "build_middleware_stack"):
        # Starlette builds its middleware on the first request; build it now
        # (as that first request would) so the wall exists to be overridden.
        app.middleware_stack = app.build_middleware_stack()
    wall = find_seawall(app)
    old = wall.stack
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
        for spec, layer in (replace or {}).items():
            hits = [i for i, current in enumerate(new) if _matches(current, spec)]
            if not hits:
                msg = f"override: no layer matches {spec!r} in {list(old.names)}"
                raise ValueError(msg)
            new[hits[0]] = layer
            for i in reversed(hits[1:]):
                del new[i]
    stack = Stack(new, order="canonical", on_layer_error=old.on_layer_error)
    for layer in stack.layers:
        bind = getattr(layer, "bind", None)
        if callable(bind) and layer not in old.layers:
            bind(wall)
    wall.stack = stack
    try:
        yield wall
    finally:
        wall.stack = old
