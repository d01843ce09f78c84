"""Route rules: ``"POST /users"``, ``"GET,HEAD /items/{id}"``, ``"/api/*"``.

A rule is an optional method list and a path pattern: ``*`` matches any
run of characters (slashes included), ``{name}`` one path segment, anything
else itself. Rules apply from least to most specific, so a specific rule
overrides what a broad one set: fewer wildcards are more specific, then a
longer literal part, then naming methods (``"/upload/small"`` beats
``"POST /upload/*"``, which beats ``"/upload/*"``).
"""

from __future__ import annotations

import re

from seawall._core.paths import LITERAL, SEGMENT, STAR, path_regex
from seawall.exceptions import ConfigurationError

__all__ = ["RouteRule"]

_METHOD = re.compile(r"[A-Z]{1,20}")


class RouteRule:
    """One compiled rule key.

    Args:
        key: ``"[METHODS ]PATH"``: methods comma-separated, the path starting with ``/``.
    """

    __slots__ = ("key", "methods", "regex", "specificity")

    def __init__(self, key: str) -> None:
        text = key.strip()
        methods: frozenset[str] | None = None
        if not text.startswith("/"):
            head, _, path = text.partition(" ")
            names = [m.strip().upper() for m in head.split(",") if m.strip()]
            if not names or not all(_METHOD.fullmatch(m) for m in names):
                msg = f"route rule {key!r}: expected 'METHOD /path' or '/path'"
                raise ConfigurationError(msg)
            if "GET" in names:
                names.append("HEAD")  # Flask, Django and Starlette run the GET view for it
            methods = frozenset(names)
            text = path.strip()
        if not text.startswith("/"):
            msg = f"route rule {key!r}: the path must start with '/'"
            raise ConfigurationError(msg)
        # The paths frameworks route to the rule's view match it too (see
        # seawall._core.paths.ROUTED_START): "//users", "/users\n".
        pieces: list[tuple[str, str]] = []
        literal = 1
        wild = 0
        for token in re.split(r"(\*|\{[^/{}]*\})", text[1:]):
            if token == "*":
                pieces.append((STAR, ""))
                wild += 2
            elif token.startswith("{") and token.endswith("}"):
                pieces.append((SEGMENT, ""))
                wild += 1
            elif token:
                pieces.append((LITERAL, token))
                literal += len(token)
        self.key = key
        self.methods = methods
        self.regex = re.compile(path_regex(pieces) + "\n?", re.DOTALL)
        # Sorting key: fewer wildcards, then longer literals, then naming methods.
        self.specificity = (-wild, literal, methods is not None)

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with *method* and *path* (or route template) falls under the rule."""
        if self.methods is not None and method not in self.methods:
            return False
        return self.regex.fullmatch(path) is not None

    def __repr__(self) -> str:
        return f"RouteRule({self.key!r})"
