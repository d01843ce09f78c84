"""Timeout: a deadline for the app, per route, answered with 504 when it expires.

The layer only sets ``request.deadline``; the drivers enforce it:

- **ASGI** cancels the app when the deadline expires and answers 504
  problem+json (``RequestTimeout``) if the response has not started. If it
  has started, the response is cut short (the connection is closed): a
  second response start cannot be sent.
- **WSGI** cannot cancel a thread. The app runs to its end and its response
  goes out; the request's outcome is marked ``timed_out``, this layer logs
  ``seawall.timeout.exceeded`` and a ``CircuitBreaker`` counts it as a
  failure. Give the WSGI server its own worker timeout (gunicorn
  ``--timeout``) and the app's clients their own timeouts to bound a stuck
  thread.

Either way the outcome is marked ``timed_out``, so a breaker outside this
layer counts an overrun as a failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from seawall._breaker.patterns import compile_pattern
from seawall._core.layer import ORDER, Outcome
from seawall._core.request import RequestView
from seawall._log import logger
from seawall.exceptions import ConfigurationError

__all__ = ["Timeout"]

_CACHE_MAX = 10_000
_MISS = object()


def _duration(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        msg = f"{what}: expected seconds (a number or timedelta) or None, got {value!r}"
        raise ConfigurationError(msg)
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        msg = f"{what}: expected a positive number of seconds, got {value!r}"
        raise ConfigurationError(msg)
    return seconds


class Timeout:
    """Give the app *seconds* to answer (per-route *rules* override), else 504.

    Args:
        seconds: the default deadline; ``None``: no deadline unless a rule matches.
        rules: ``{pattern: seconds or None}``; a pattern is a glob
            (``"/reports/*"``) or a route template (``"/items/{id}"``),
            matched against the route template when an adapter knows it,
            else the path. The first matching rule in the order given wins;
            ``None`` exempts (streaming endpoints, long polls).

    Example::

        Timeout(10, rules={"/reports/*": 60, "/events": None})
    """

    name: ClassVar[str] = "timeout"
    order: ClassVar[int] = ORDER["timeout"]

    def __init__(
        self,
        seconds: float | timedelta | None = 10.0,
        *,
        rules: Mapping[str, float | timedelta | None] | None = None,
    ) -> None:
        self.seconds = _duration(seconds, "seconds")
        self.rules: tuple[tuple[str, re.Pattern[str], float | None], ...] = tuple(
            (str(pattern), compile_pattern(str(pattern)), _duration(value, f"rules[{pattern!r}]"))
            for pattern, value in (rules or {}).items()
        )
        self._cache: dict[str, float | None] = {}
        self.exceeded = 0
        self.cancelled = 0
        if not self.rules and self.seconds is None:
            # Nothing to enforce: skip the hooks entirely.
            self.on_request = None  # type: ignore[method-assign,assignment]

    def __repr__(self) -> str:
        rules = {pattern: value for pattern, _, value in self.rules}
        return f"Timeout({self.seconds!r}, rules={rules!r})"

    def deadline_for(self, path: str) -> float | None:
        """The deadline for a route template or path (memoised, bounded)."""
        found = self._cache.get(path, _MISS)
        if found is not _MISS:
            return found  # type: ignore[return-value]
        seconds = self.seconds
        for _, pattern, value in self.rules:
            if pattern.fullmatch(path):
                seconds = value
                break
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()  # bounded memory whatever paths clients invent
        self._cache[path] = seconds
        return seconds

    def on_request(self, request: RequestView) -> None:
        """Ask the driver to enforce this request's deadline.

        A deadline only ever tightens: another Timeout of the stack may have
        set a shorter one, and ``None`` (no deadline from this layer) leaves
        it as it is.
        """
        seconds = self.deadline_for(request.route or request.path) if self.rules else self.seconds
        if seconds is not None:
            current = request.deadline
            if current is None or seconds < current:
                request.deadline = seconds

    def on_complete(self, request: RequestView, outcome: Outcome) -> None:
        """Log and count a deadline the app overran."""
        if not outcome.timed_out:
            return
        self.exceeded += 1
        cancelled = request.interface == "asgi"
        if cancelled:
            self.cancelled += 1
        logger.warning(
            "seawall.timeout.exceeded",
            request_id=request.request_id,
            method=request.method,
            route=outcome.route,
            deadline=request.deadline,
            duration_ms=round(outcome.duration * 1000.0, 3),
            # ASGI cancelled the app; a WSGI thread cannot be, it ran to its end.
            cancelled=cancelled,
            status=outcome.status,
        )

    def stats(self) -> dict[str, Any]:
        """Deadline overruns (and how many were cancelled: ASGI only)."""
        return {
            "seconds": self.seconds,
            "rules": {pattern: value for pattern, _, value in self.rules},
            "exceeded": self.exceeded,
            "cancelled": self.cancelled,
        }

    def reset(self) -> None:
        """Zero the counters (for tests)."""
        self.exceeded = 0
        self.cancelled = 0
