"""Threat detection: SQL injection, XSS, path traversal and command injection.

::

    from seawall.threats import Detector
    detector = Detector(level=1)
    detector.scan("1' OR '1'='1")        # -> ("sqli-string-bool", ...)

A value is first decoded the way a server, a browser or a database would
(:func:`normalize`: URL encoding, HTML entities, ``%uXXXX``, overlong UTF-8,
full-width Unicode, SQL comments; a bounded number of passes), then matched
against the rules of the chosen :attr:`~Detector.level`. Long values are
scanned in overlapping windows, so every pattern runs on a bounded input and
the cost per value is linear in its length. The rules are listed in
:data:`RULES`; docs/threats.md gives their measured detection and
false-positive rates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from seawall.exceptions import ConfigurationError
from seawall.threats._decode import normalize
from seawall.threats._rules import KINDS, RULES, TRIGGER_WORDS, Rule

__all__ = ["KINDS", "MAX_SCAN", "RULES", "Detector", "Rule", "normalize"]

#: Window size (characters of normalized text) each pattern runs on.
WINDOW = 4096
#: Overlap between windows: longer than any rule's longest bounded gap.
OVERLAP = 512
#: At most this many characters of one value are scanned (its beginning),
#: counted both as sent and once decoded (NFKC writes U+FDFA as 18
#: characters): the rules cost up to a few microseconds per character on
#: adversarial input, so an unbounded scan would let one request buy
#: seconds of CPU.
MAX_SCAN = 65_536

_SQL_COMMENT = re.compile(r"/\*!?\d{0,6}|\*/")
# A function call: a (dotted) name, then "(". \b keeps it one attempt per word.
_CALL = re.compile(r"\b([a-z_][\w.]{0,60}) ?\(")
# Text that can match no rule is skipped after cheap tests: every rule needs
# a character outside [a-z0-9 ,._@-] (quotes, brackets, operators,
# separators), two dots, "--", "@@", or one of TRIGGER_WORDS as a word. These
# are set and substring tests on purpose: a regex alternation over the words,
# or even over the character classes, costs more than the rules themselves.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 ,._@-")
_SEPARATORS = str.maketrans(",.@-", "    ")
#: Results for short values, which repeat across requests (JSON keys, enum
#: values): bounded, and cleared when full so that clients cannot grow it.
_CACHE_MAX = 8192
_CACHEABLE = 64


def _plain(text: str) -> bool:
    """Whether *text* can match no rule (see above)."""
    if not _PLAIN.issuperset(text) or ".." in text or "--" in text or "@@" in text:
        return False
    return TRIGGER_WORDS.isdisjoint(text.translate(_SEPARATORS).split())


class Detector:
    """Match values against the rules of a sensitivity *level*.

    Args:
        level: 1 (default: specific rules, few false positives) to 4 (every
            rule); like OWASP CRS paranoia levels.
        kinds: which kinds of attack to look for (default: all of
            ``"sqli"``, ``"xss"``, ``"traversal"``, ``"cmdi"``).
        disabled: rule ids never to report.
    """

    __slots__ = ("_cache", "_masked", "_needles", "disabled", "kinds", "level", "rules")

    def __init__(
        self, level: int = 1, kinds: Iterable[str] = KINDS, disabled: Iterable[str] = ()
    ) -> None:
        if not 1 <= level <= 4:
            msg = f"threat_level: expected 1, 2, 3 or 4, got {level!r}"
            raise ConfigurationError(msg)
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            msg = f"threat_kinds: unknown kind {unknown[0]!r}; known: {', '.join(KINDS)}"
            raise ConfigurationError(msg)
        known_ids = {r.id for r in RULES}
        disabled = frozenset(disabled)
        for rule_id in disabled:
            if rule_id not in known_ids:
                msg = f"threat_disabled: unknown rule id {rule_id!r}"
                raise ConfigurationError(msg)
        self.level = level
        self.kinds = kinds
        self.disabled = disabled
        self.rules: tuple[Rule, ...] = tuple(
            r for r in RULES if r.level <= level and r.kind in kinds and r.id not in disabled
        )
        # Each distinct needle gets a bit; a rule runs only if the text has one
        # of its needles (mask 0: always runs).
        needs = {r.id: (*r.needs, "(") if r.calls else r.needs for r in self.rules}
        needles = sorted({n for r in self.rules for n in needs[r.id]})
        bit = {n: 1 << i for i, n in enumerate(needles)}
        self._needles = tuple((n, bit[n]) for n in needles)
        self._cache: dict[str, tuple[tuple[str, ...], int]] = {}
        self._masked = tuple((r, sum(bit[n] for n in set(needs[r.id]))) for r in self.rules)

    def __repr__(self) -> str:
        return f"Detector(level={self.level}, kinds={self.kinds!r})"

    def scan(self, value: str) -> tuple[str, ...]:
        """Return the ids of the rules *value* matches (empty: nothing found).

        Only the first :data:`MAX_SCAN` characters are looked at.
        """
        return self.scan_within(value, MAX_SCAN)[0]

    def scan_within(self, value: str, budget: int) -> tuple[tuple[str, ...], int]:
        """``(rule ids, cost)``: :meth:`scan` of at most *budget* characters of *value*.

        The cost is the larger of the characters taken from *value* and the
        characters they decode to: more than *budget* when the decoded text
        was cut at it (NFKC writes U+FDFA as 18 characters). A caller with a
        budget for many values charges it with the cost.
        """
        short = len(value) <= _CACHEABLE
        if short:
            cached = self._cache.get(value)
            if cached is not None and cached[1] <= budget:
                return cached
        limit = budget if budget < MAX_SCAN else MAX_SCAN
        found = self._scan(value[:limit] if len(value) > limit else value, limit)
        if short:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[value] = found
        return found

    def _scan(self, value: str, limit: int) -> tuple[tuple[str, ...], int]:
        text = normalize(value, limit)
        cost = len(text) if len(text) > len(value) else len(value)
        if len(text) > limit:
            text = text[:limit]
        if _plain(text):
            return (), cost
        if "/*" in text or "*/" in text:
            opened = text.rfind("/*")
            if opened >= 0 and "*/" not in text[opened:]:
                # A comment that never closes swallows the rest of the query,
                # as "--" does ("admin'/*"): say so to the rules.
                text = f"{text[:opened]} -- {text[opened + 2 :]}"
            # MySQL runs /*!50000 union*/ and ignores /**/: keep the words, drop the markers.
            text = " ".join(_SQL_COMMENT.sub(" ", text).split())
        return self._match(text), cost

    def _match(self, text: str) -> tuple[str, ...]:
        present = 0
        for needle, bit in self._needles:
            if needle in text:
                present |= bit
        rules = [r for r, mask in self._masked if not mask or mask & present]
        calls: set[str] = set()
        if "(" in text:
            for name in _CALL.findall(text):
                calls.add(name)
                if "." in name:
                    calls.add(name.rsplit(".", 1)[1])
        found: list[str] = []
        if len(text) <= WINDOW:
            for rule in rules:
                if (rule.calls and not calls.isdisjoint(rule.calls)) or rule.pattern.search(text):
                    found.append(rule.id)
            return tuple(found)
        step = WINDOW - OVERLAP
        for rule in rules:
            if rule.calls and not calls.isdisjoint(rule.calls):
                found.append(rule.id)
                continue
            for start in range(0, len(text) - OVERLAP, step):
                if rule.pattern.search(text, start, start + WINDOW):
                    found.append(rule.id)
                    break
        return tuple(found)
