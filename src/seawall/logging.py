"""Opt-in logging setup; seawall never configures logging unless this is called."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging"]

#: Whether :func:`configure_logging` set structlog up (tracebacks without
#: frame locals): ErrorCapture then logs the exception itself, else as text.
configured = False


def _console_exceptions() -> Any:
    """The console renderer's traceback formatter, never showing frame locals."""
    try:
        import rich  # noqa: F401  (structlog's rich formatter needs it)
    except ImportError:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def configure_logging(*, json: bool = False, level: int | str = logging.INFO) -> None:
    """Configure structlog (and route stdlib logging through it) for seawall's events.

    Adds the request id (from ``structlog.contextvars``), a log level, an
    ISO timestamp, and renders as JSON (*json*) or for a console. Call it
    once at startup, or not at all and keep your own structlog configuration:
    seawall's events then go wherever your pipeline sends them.
    """
    if isinstance(level, str):
        name = level.upper()
        level = logging.getLevelName(name)
        if not isinstance(level, int):
            msg = f"level: expected a logging level name such as 'INFO', got {name!r}"
            raise ValueError(msg)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks without frame locals: a frame's locals hold the request as
    # the server gave it (headers, cookies) and the app's own secrets, which
    # the scrubbed event fields are there to keep out of the logs.
    if json:
        plain = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        processors += [
            structlog.processors.ExceptionRenderer(plain),
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(exception_formatter=_console_exceptions()))
    global configured
    configured = True
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
