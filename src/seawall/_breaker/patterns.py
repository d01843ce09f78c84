"""Path patterns shared by the breaker and timeout layers.

A pattern is either a glob (``/reports/*``: ``*`` matches any characters,
slashes included, like :mod:`fnmatch`) or a route template in the syntax of
the frameworks that report them: ``/items/{id}`` (Starlette, FastAPI,
Litestar, Falcon) or ``/items/<int:id>`` (Flask, Django). A parameter
matches one path segment; a ``path`` converter (``{p:path}``, ``<path:p>``)
any number of them, an ``int`` one digits only. Both compile once to one
regular expression; matching a path is one ``fullmatch``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from seawall._core.paths import (
    DIGITS,
    LITERAL,
    SEGMENT,
    SEGMENTS,
    STAR,
    path_regex,
)

__all__ = ["compile_pattern", "compile_patterns", "count_params"]

#: ``{name}`` / ``{name:conv}`` (Starlette), ``<name>`` / ``<conv:name>`` /
#: ``<conv(args):name>`` (Flask, Django).
_PARAM = re.compile(r"\{[^{}/]*\}|<[^<>/]*>")


def count_params(template: str) -> int:
    """How many parameters and wildcards *template* has (fewer: more specific)."""
    return len(_PARAM.findall(template)) + template.count("*")


def _converter(param: str) -> str:
    inner = param[1:-1]
    if param[0] == "{":
        return inner.partition(":")[2].strip()  # {name:conv}
    if ":" not in inner:
        return ""  # <name>
    return inner.partition(":")[0].split("(", 1)[0].strip()  # <conv:name>, <conv(args):name>


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a glob or route-template *pattern* to a regex for ``fullmatch``."""
    # The paths frameworks route to it match too ("//login", "/login\n"):
    # see seawall._core.paths.ROUTED_START.
    routed = pattern.startswith("/")
    pos = 1 if routed else 0
    pieces: list[tuple[str, str]] = []
    for match in _PARAM.finditer(pattern):
        pieces += _glob(pattern[pos : match.start()])
        converter = _converter(match.group())
        # A parameter is one segment; a path converter spans several.
        pieces.append(
            (SEGMENTS if converter == "path" else DIGITS if converter == "int" else SEGMENT, "")
        )
        pos = match.end()
    pieces += _glob(pattern[pos:])
    return re.compile(path_regex(pieces, routed=routed) + "\n?", re.DOTALL)


def _glob(text: str) -> list[tuple[str, str]]:
    pieces: list[tuple[str, str]] = []
    for i, part in enumerate(text.split("*")):
        if i:
            pieces.append((STAR, ""))
        pieces.append((LITERAL, part))
    return pieces


def compile_patterns(patterns: str | Iterable[str]) -> re.Pattern[str]:
    """Compile one pattern or several (any of them matches) to one regex."""
    if isinstance(patterns, str):
        return compile_pattern(patterns)
    parts = [compile_pattern(p).pattern for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)")
