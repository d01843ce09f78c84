"""seawall's logger and the request-id context.

seawall logs through structlog and never configures it (nor stdlib logging)
unless :func:`seawall.configure_logging` is called.

Each request's id is kept in two context variables: a private one behind
:func:`request_id`, and one named ``structlog_request_id``, the prefix that
``structlog.contextvars.merge_contextvars`` (in structlog's default
pipeline) collects. So every structlog line logged during a request carries
``request_id`` at the cost of one ``ContextVar.set``, rather than the
several microseconds ``bind_contextvars`` takes; and an app that calls
``clear_contextvars()`` at the start of its handler loses it from its own
lines only, never from :func:`request_id`.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from seawall._core.request import RequestView

__all__ = ["bind_request", "current_request", "logger", "request_id", "unbind_request"]

logger: Any = structlog.get_logger("seawall")

# The current request sits in a one-item list, emptied when the request
# ends. Context copies taken during a request outlive it: a server's
# keep-alive timer (uvicorn arms loop.call_later inside the last send) keeps
# one per idle connection. Holding the view there would keep it and its
# scope alive until the timer goes, in the collector's older generations
# (full collections of tens of ms under load); an emptied list holds nothing.
_current: ContextVar[list[RequestView | None] | None] = ContextVar("seawall_request", default=None)
# The name must start with structlog's STRUCTLOG_KEY_PREFIX; Ellipsis is
# structlog's "unset" marker, skipped by merge_contextvars. A string holds no
# other object, so copies may keep it: log lines of work a request spawned
# keep its id.
_structlog_request_id: ContextVar[Any] = ContextVar("structlog_request_id", default=...)

# The two variables' set/reset, bound once, for the drivers. On CPython 3.11
# `_current.set(x)` in a module that imported `_current` compiles to a plain
# attribute load (the compiler takes an imported name for a module), which
# binds a new method object on every call, unspecialised: ~450 instructions
# each, four per request (measured).
set_current = _current.set
reset_current = _current.reset
set_structlog_request_id = _structlog_request_id.set
reset_structlog_request_id = _structlog_request_id.reset

Tokens = tuple["Token[list[RequestView | None] | None]", Token[Any], "list[RequestView | None]"]


def request_id() -> str | None:
    """Return the id of the request being handled, or ``None`` outside a request.

    Works in sync and async handlers, and in code they call, until the
    request ends.
    """
    holder = _current.get()
    view = None if holder is None else holder[0]
    return None if view is None else view.request_id


def current_request() -> RequestView | None:
    """Return the :class:`~seawall.RequestView` of the request being handled.

    Handler decorators (``seawall.limit``, ``seawall.validate``, ...) use it
    to see the request as the layers did (client identity, request id)
    without a framework-specific request argument. ``None`` outside a request,
    once the request has ended, or when the app is not wrapped by
    :class:`~seawall.Seawall`.
    """
    holder = _current.get()
    return None if holder is None else holder[0]


def serving_wsgi() -> bool:
    """Whether the code running now serves a request that came in through WSGI.

    An async handler under a WSGI server (Flask's async views, Django's
    under its WSGI handler) runs on an event loop made for that request
    alone, in the thread that serves it. A Redis call from there goes
    through the sync client, which lasts from request to request: an
    asyncio client would be bound to a loop about to close, and would
    connect again on the next request's loop. Blocking that loop for one
    bounded call holds up only this request, as a sync handler would.
    """
    holder = _current.get()
    view = None if holder is None else holder[0]
    return view is not None and view.interface == "wsgi"


def bind_request(view: RequestView) -> Tokens:
    """Make *view* the current request; return what :func:`unbind_request` needs."""
    holder: list[RequestView | None] = [view]
    return _current.set(holder), _structlog_request_id.set(view.request_id), holder


def unbind_request(tokens: Tokens) -> None:
    """Undo :func:`bind_request` (tolerates being called from another context).

    Every context copied during the request sees no request from now on.
    """
    tokens[2][0] = None
    try:
        _current.reset(tokens[0])
        _structlog_request_id.reset(tokens[1])
    except ValueError:
        # A WSGI server may call close() from another context: forget the id
        # rather than fail the response.
        _current.set(None)
        _structlog_request_id.set(...)
