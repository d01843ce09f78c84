"""Path patterns: the same matches as the pattern says, in bounded time on hostile paths."""

from __future__ import annotations

import random
import re
import time

import pytest

from seawall._breaker.patterns import compile_pattern
from seawall._core.paths import DIGITS, LITERAL, SEGMENT, SEGMENTS, STAR, path_regex
from seawall._ratelimit.rules import Matcher
from seawall._validation.routes import RouteRule

_NAIVE = {STAR: ".*", SEGMENTS: ".+", SEGMENT: "[^/]+", DIGITS: "[0-9]+"}


def _naive(pieces: list[tuple[str, str]]) -> re.Pattern[str]:
    """What a pattern means, written the obvious (backtracking) way."""
    body = "".join(re.escape(text) if kind == LITERAL else _NAIVE[kind] for kind, text in pieces)
    return re.compile("/+" + body + "\n?", re.DOTALL)


def test_matches_exactly_what_the_obvious_regex_matches() -> None:
    # Committing to the earliest match of the text between two wildcards
    # must never lose a match: compare against the obvious regex on short
    # paths, where its backtracking is cheap, over many random patterns.
    rng = random.Random(20261208)
    literals = ["a", "b", "/", "//", "ab", "/a", "a/", "1", "/b/"]
    kinds = [STAR, STAR, LITERAL, LITERAL, LITERAL, SEGMENT, DIGITS, SEGMENTS]
    for _ in range(4000):
        pieces = [
            (kind, rng.choice(literals) if kind == LITERAL else "")
            for kind in (rng.choice(kinds) for _ in range(rng.randint(1, 7)))
        ]
        ours = re.compile(path_regex(pieces) + "\n?", re.DOTALL)
        naive = _naive(pieces)
        for _ in range(25):
            path = "/" * rng.randint(1, 3)
            path += "".join(rng.choice("ab/1\n") for _ in range(rng.randint(0, 14)))
            assert bool(ours.fullmatch(path)) == bool(naive.fullmatch(path)), (pieces, path)


HOSTILE = [
    # (pattern, a unit repeated to make a path that almost matches)
    ("/**/**/x", "/"),  # took over a minute at 250 bytes
    ("/*.*.*.z", "."),  # 1.5 s at 1 KB
    ("/*/{id}/*/{x}/*/q", "a/"),
    ("/*/x/*/y/*/z", "/x/y"),
    ("/a*b*c*d", "abc"),
    ("/*{id}*{id}*z", "a"),  # a parameter against a wildcard
    ("//*//*/x", "/"),  # the pattern's own leading slashes
]


@pytest.mark.parametrize(("pattern", "unit"), HOSTILE)
def test_hostile_paths_take_bounded_time(pattern: str, unit: str) -> None:
    path = "/" + unit * (8000 // len(unit)) + "!"
    matcher = Matcher([(f"GET {pattern}", 1)])
    rule = RouteRule(pattern)
    compiled = compile_pattern(pattern)
    started = time.perf_counter()
    assert matcher.match("GET", path) is None
    assert not rule.matches("GET", path)
    assert compiled.fullmatch(path) is None
    # Linear work is about a millisecond here; the backtracking regexes
    # these replace took from seconds to hours on the same paths.
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/api/*/items/*", "/api/v1/items/9", True),
        ("/api/*/items/*", "/api/v1/x/items/", True),
        ("/api/*/items/*", "/api/v1/item/9", False),
        ("/*/x/*/y", "/a/x/x/b/y", True),
        ("/*/x/*/y", "//x//y", True),
        ("/**", "//", True),
        ("/*/{id}/*", "/a/b/c", True),
        ("/*/{id}/*", "/ab", False),
    ],
)
def test_the_three_pattern_readers_agree(pattern: str, path: str, matches: bool) -> None:
    assert (Matcher([(pattern, 1)]).match("GET", path) == 1) is matches
    assert RouteRule(pattern).matches("GET", path) is matches
    assert (compile_pattern(pattern).fullmatch(path) is not None) is matches


def test_many_patterns_in_one_matcher_keep_their_own_groups() -> None:
    # Each wildcard's group has a name of its own, so patterns joined into
    # one alternation never clash, and the first matching pattern still wins.
    matcher = Matcher([("/a/*/b/*", "first"), ("/a/*/c/*", "second"), ("/*", "rest")])
    assert matcher.match("GET", "/a/x/b/y") == "first"
    assert matcher.match("GET", "/a/x/c/y") == "second"
    assert matcher.match("GET", "/z") == "rest"
