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
    out: list[str] = []
    pos = 0
    if pattern.startswith("/"):
        # The paths frameworks route to it match too ("//login", "/login\n"):
        # see seawall._ratelimit.rules.ROUTED_START.
        out.append("/+")
        pos = 1
    for match in _PARAM.finditer(pattern):
        out.append(_glob(pattern[pos : match.start()]))
        converter = _converter(match.group())
        # A parameter is one segment; a path converter spans several.
        if converter == "path":
            out.append(".+")
        elif converter == "int":
            out.append("[0-9]+")
        else:
            out.append("[^/]+")
        pos = match.end()
    out.append(_glob(pattern[pos:]))
    out.append("\n?")
    return re.compile("".join(out), re.DOTALL)


def _glob(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


def compile_patterns(patterns: str | Iterable[str]) -> re.Pattern[str]:
    """Compile one pattern or several (any of them matches) to one regex."""
    if isinstance(patterns, str):
        return compile_pattern(patterns)
    parts = [compile_pattern(p).pattern for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)")
