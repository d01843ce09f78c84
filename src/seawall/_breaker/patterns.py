"""Path patterns shared by the breaker and timeout layers.

A pattern is either a glob (``/reports/*``: ``*`` matches any characters,
slashes included, like :mod:`fnmatch`) or a route template
(``/items/{id}``: each ``{name}`` matches one path segment). Both compile
once to one regular expression; matching a path is one ``fullmatch``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["compile_pattern", "compile_patterns"]

_PARAM = re.compile(r"\{[^{}/]*\}")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a glob or route-template *pattern* to a regex for ``fullmatch``."""
    out: list[str] = []
    pos = 0
    for match in _PARAM.finditer(pattern):
        out.append(_glob(pattern[pos : match.start()]))
        # A template parameter is one segment; ``{path:path}`` (Starlette) spans several.
        out.append(".+" if match.group().endswith(":path}") else "[^/]+")
        pos = match.end()
    out.append(_glob(pattern[pos:]))
    return re.compile("".join(out))


def _glob(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


def compile_patterns(patterns: str | Iterable[str]) -> re.Pattern[str]:
    """Compile one pattern or several (any of them matches) to one regex."""
    if isinstance(patterns, str):
        return compile_pattern(patterns)
    parts = [compile_pattern(p).pattern for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)")
