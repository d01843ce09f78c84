"""The input shapes every threat pattern must stay linear on.

Each piece, repeated to 100 KB, is what a catastrophic-backtracking pattern
would choke on: quotes, operators, keywords and encodings that open a
partial match again and again. ``tests/validation/test_threats.py`` feeds
them under a timeout; ``bench/bench_validation.py`` reports the worst case.
"""

from __future__ import annotations

__all__ = ["PIECES"]

#: One piece per line; a test and the bench repeat each to the input size.
PIECES: tuple[str, ...] = (
    "a",
    "1",
    " ",
    "'",
    '"',
    "<",
    "<a ",
    "=",
    ";",
    "|",
    "&",
    "$(",
    "`",
    "(",
    ")",
    "{",
    "/",
    "\\",
    ".",
    "..",
    "../",
    "%",
    "%2e",
    "%c0%ae",
    "-",
    "--",
    "#",
    "/*",
    "*/",
    "union ",
    "select ",
    "' or ",
    "1 and ",
    "or 1=",
    "<script ",
    "on",
    "onerror",
    "javascript",
    "etc/",
    "${",
    "{{",
    "\n",
    "0x",
    "\\x41",
    "&#",
    "%u2216",
    "ÿ",
)
