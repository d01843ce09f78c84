"""Path patterns as regular expressions that cannot backtrack without bound.

Rate-limit rules, validation routes, breaker groups and timeout rules all
turn a pattern such as ``/api/*/items/{id}`` into one regular expression,
matched against paths a client chooses. Written naively (``.*`` per ``*``),
a pattern with several wildcards backtracks polynomially, and ``**``
exponentially, on a long path that almost matches: ``/**/**/x`` took over a
minute on a 250-byte path. A protection layer must not be the way to stall
a worker, so :func:`path_regex` builds the expression so that each wildcard
followed by more fixed text and another wildcard commits to the earliest
place that text occurs (an atomic group, written as a lookahead and a
backreference, which Python supports on every version we run on). That
choice loses no match: the next wildcard absorbs whatever the earliest
choice left over, so matching stays what the pattern says, in time linear
in the path for each wildcard.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

__all__ = [
    "DIGITS",
    "LITERAL",
    "ROUTED_END",
    "ROUTED_START",
    "SEGMENT",
    "SEGMENTS",
    "STAR",
    "path_regex",
]

#: How a pattern's path starts and ends as a regex: the paths frameworks
#: route to the pattern's view match it too. werkzeug routes ``//login`` to
#: ``/login``; Starlette's route regexes end in ``$``, which also matches
#: before a final newline, so ``/login%0a`` reaches the ``/login`` view.
#: A rule that missed them would let a client step around it.
ROUTED_START = "/+"
ROUTED_END = r")\n?\Z"

#: Kinds of piece a pattern is made of.
LITERAL = "literal"  # text matched as written
STAR = "star"  # ``*``: any run of characters, slashes included
SEGMENTS = "segments"  # a ``path`` converter: one or more characters, slashes included
SEGMENT = "segment"  # ``{id}``: one path segment
DIGITS = "digits"  # an ``int`` converter: one segment of digits

_UNBOUNDED = {STAR: ".*", SEGMENTS: ".+"}
_BOUNDED = {SEGMENT: "[^/]+", DIGITS: "[0-9]+"}
# Repeats by the characters they take (each a subset of the next) and one of
# those characters on its own.
_RANK = {DIGITS: 0, SEGMENT: 1, SEGMENTS: 2, STAR: 2}
_CLASS = {DIGITS: "[0-9]", SEGMENT: "[^/]", SEGMENTS: "."}
_ONE = "one"

# Group names must be unique within one compiled regex, and callers join
# several patterns' regexes into one alternation.
_names = itertools.count()


def path_regex(pieces: Iterable[tuple[str, str]], *, routed: bool = True) -> str:
    """The regex (no anchors) for a pattern given as ``(kind, text)`` pieces.

    *text* matters for :data:`LITERAL` pieces only. With *routed*, the
    pieces follow the path's first ``/``, which matches any run of slashes
    (:data:`ROUTED_START`).
    """
    merged: list[tuple[str, str]] = []
    for kind, text in pieces:
        if kind == LITERAL:
            if not text:
                continue
            if merged and merged[-1][0] == LITERAL:
                merged[-1] = (LITERAL, merged[-1][1] + text)
                continue
        merged.append((kind, text))
    _narrow(merged)

    out: list[str] = []
    if routed:
        # Slashes the pattern itself starts with join ROUTED_START's run:
        # "/+" then "/" would split a run of slashes n ways.
        slashes = 1
        if merged and merged[0][0] == LITERAL:
            rest = merged[0][1].lstrip("/")
            slashes += len(merged[0][1]) - len(rest)
            if rest:
                merged[0] = (LITERAL, rest)
            else:
                del merged[0]
        # A wildcard next takes up any more slashes itself; "/+" before it
        # would only give it n more places to start.
        more = "" if merged and merged[0][0] in _UNBOUNDED else "+"
        out.append("/" * slashes + more)
    i = 0
    while i < len(merged):
        kind, text = merged[i]
        if kind in _UNBOUNDED:
            # The fixed run after this wildcard, up to the next wildcard.
            end = i + 1
            while end < len(merged) and merged[end][0] not in _UNBOUNDED:
                end += 1
            run = merged[i + 1 : end]
            if run and end < len(merged):
                # Commit to the earliest match of the run: the wildcard after
                # it takes up whatever a later one would have left. Lazy
                # parameters make that match also end earliest.
                name = f"w{next(_names)}"
                body = _UNBOUNDED[kind] + "?" + "".join(_piece(p, lazy=True) for p in run)
                out.append(f"(?=(?P<{name}>{body}))(?P={name})")
                i = end
                continue
            out.append(_UNBOUNDED[kind])
        else:
            out.append(_piece((kind, text), lazy=False))
        i += 1
    return "".join(out)


def _narrow(pieces: list[tuple[str, str]]) -> None:
    """Make adjacent repeats unambiguous, in place, matching the same paths.

    Two repeats side by side (``{id}*``, ``*{p:path}``, ``**``) can split
    their text n ways, and a regex engine tries every split. When one's
    characters are a subset of the other's, the other absorbs all but the
    minimum of it: ``[^/]+.*`` matches what ``[^/].*`` does, ``.*.+`` what
    ``.+`` does, ``.*.*`` what ``.*`` does.
    """
    i = 0
    while i + 1 < len(pieces):
        a, b = pieces[i][0], pieces[i + 1][0]
        if a not in _RANK or b not in _RANK:
            i += 1
        elif _RANK[b] <= _RANK[a]:
            if b == STAR:
                del pieces[i + 1]  # at least nothing: nothing left of it
            else:
                pieces[i + 1] = (_ONE, _CLASS[b])
                i += 1
        else:
            # a is a bounded parameter, b a wider repeat: one char of a is left.
            pieces[i] = (_ONE, _CLASS[a])
            i += 1


def _piece(piece: tuple[str, str], *, lazy: bool) -> str:
    kind, text = piece
    if kind == LITERAL:
        return re.escape(text)
    if kind == _ONE:
        return text
    return _BOUNDED[kind] + ("?" if lazy else "")
