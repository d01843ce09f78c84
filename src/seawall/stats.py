"""``seawall.stats(app)``: a snapshot of what every layer did."""

from __future__ import annotations

from typing import Any

from seawall._app import Seawall

__all__ = ["find_seawall", "stats"]


def find_seawall(app: Any) -> Seawall:
    """Find the :class:`~seawall.Seawall` in *app*.

    *app* may be the wall itself, or an app that carries one: a Flask app
    (``app.extensions["seawall"]``), a Starlette/FastAPI app (its middleware
    stack or ``app.state.seawall``), or anything with a ``seawall`` attribute.
    """
    seen: set[int] = set()
    todo = [app]
    while todo:
        obj = todo.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Seawall):
            return obj
        for attr in ("seawall", "wsgi_app", "middleware_stack", "app", "_wall"):
            todo.append(getattr(obj, attr, None))
        extensions = getattr(obj, "extensions", None)
        if isinstance(extensions, dict):
            todo.append(extensions.get("seawall"))
        state = getattr(obj, "state", None)
        if state is not None:
            todo.append(getattr(state, "seawall", None))
    msg = f"no Seawall found in {type(app).__name__}; wrap it with seawall.Seawall(app) first"
    raise LookupError(msg)


def stats(app: Any) -> dict[str, Any]:
    """A snapshot of every layer's statistics for the Seawall in *app*."""
    return find_seawall(app).stats()
