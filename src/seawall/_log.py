"""
seawall's logger and the request-id context.

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
from typing import Any

import structlog

__all__ = ["bind_request", "logger", "request_id", "unbind_request"]

logger: Any = structlog.get_logger("seawall")

_request_id: ContextVar[str | None] = ContextVar("seawall_request_id", default=None)
# The name must start with structlog's STRUCTLOG_KEY_PREFIX; Ellipsis is
# structlog's "unset" marker, skipped by merge_contextvars.
_structlog_request_id: ContextVar[Any] = ContextVar("structlog_request_id", default=...)

Tokens = tuple[Token[str | None], Token[Any]]


def request_id() -> str | None:
    """
    Return the id of the request being handled, or ``None`` outside a request.

    Works in sync and async handlers, and in code they call.
    """
    return _request_id.get()


def bind_request(rid: str) -> Tokens:
    """Make *rid* the current request id; return what :func:`unbind_request` needs."""
    return _request_id.set(rid), _structlog_request_id.set(rid)


def unbind_request(tokens: Tokens) -> None:
    """Undo :func:`bind_request` (tolerates being called from another context)."""
    try:
        _request_id.reset(tokens[0])
        _structlog_request_id.reset(tokens[1])
    except ValueError:
        # A WSGI server may call close() from another context: forget the id
        # rather than fail the response.
        _request_id.set(None)
        _structlog_request_id.set(...)
