"""Opt-in logging setup; seawall never configures logging unless this is called."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging"]


def configure_logging(*, json: bool = False, level: int | str = logging.INFO) -> None:
    """Configure structlog (and route stdlib logging through it) for seawall's events.

    Adds the request id (from ``structlog.contextvars``), a log level, an
    ISO timestamp, and renders as JSON (*json*) or for a console. Call it
    once at startup, or not at all and keep your own structlog configuration:
    seawall's events then go wherever your pipeline sends them.
    """
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
