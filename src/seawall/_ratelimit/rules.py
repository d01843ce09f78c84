"""Route patterns (``"POST /login"``, ``"/api/*"``, ``"/items/{id}"``) compiled once.

A pattern is an optional method list and a path: ``*`` matches any run of
characters (slashes included), ``{name}`` one path segment. All patterns of
a matcher become one regular expression with a named group each, tried in
the order given (the first match wins), so a request costs one C-level
match; answers are cached per ``(method, path)`` in a bounded map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Generic, TypeVar

from seawall._core.paths import LITERAL, ROUTED_END, SEGMENT, STAR, path_regex
from seawall.exceptions import ConfigurationError

__all__ = ["Matcher", "pattern_regex"]

T = TypeVar("T")

_METHOD = re.compile(r"[A-Z*]+(,[A-Z*]+)*")
_CACHE_SIZE = 4096


def pattern_regex(pattern: str) -> str:
    """The regex (no anchors) for ``"[METHODS ]/path"``, matched on ``"METHOD path"``."""
    text = pattern.strip()
    method, sep, path = text.partition(" ")
    if not sep:
        method, path = "*", text
    method = method.upper()
    path = path.strip()
    if not path.startswith("/") or not _METHOD.fullmatch(method):
        msg = (
            f"rules: {pattern!r} is not a route pattern; write '/path', '/api/*', "
            "'/items/{id}' or 'POST /login'"
        )
        raise ConfigurationError(msg)
    methods = method.split(",")
    if "GET" in methods and "HEAD" not in methods:
        # Flask, Django and Starlette's Route run the GET view for a HEAD.
        methods.append("HEAD")
    method_re = "[A-Z]+" if "*" in methods else "(?:" + "|".join(map(re.escape, methods)) + ")"
    # The path as frameworks route it: werkzeug routes "//login" to /login.
    pieces = [
        (STAR, "") if part == "*" else (SEGMENT, "") if part.startswith("{") else (LITERAL, part)
        for part in re.split(r"(\*|\{[^}/]*\})", path[1:])
    ]
    return f"{method_re} {path_regex(pieces)}"


class Matcher(Generic[T]):
    """Map a request's method and path to the value of the first matching pattern."""

    __slots__ = ("_cache", "_regex", "_values")

    def __init__(self, entries: Sequence[tuple[str, T]]) -> None:
        self._values: dict[str, T] = {}
        groups = []
        for i, (pattern, value) in enumerate(entries):
            name = f"r{i}"
            groups.append(f"(?P<{name}>{pattern_regex(pattern)})")
            self._values[name] = value
        self._regex = (
            re.compile("(?:" + "|".join(groups) + ROUTED_END, re.DOTALL) if groups else None
        )
        self._cache: dict[tuple[str, str], T | None] = {}

    def __bool__(self) -> bool:
        return self._regex is not None

    def match(self, method: str, path: str) -> T | None:
        """The value of the first pattern matching, or ``None``."""
        key = (method, path)
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        value = None
        if self._regex is not None:
            found = self._regex.match(f"{method} {path}")
            if found is not None and found.lastgroup is not None:
                value = self._values[found.lastgroup]
        if len(cache) >= _CACHE_SIZE:
            # Paths are client-chosen: keep the cache bounded (cheap to refill).
            cache.clear()
        cache[key] = value
        return value
