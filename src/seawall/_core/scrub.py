"""Scrub secrets out of what seawall logs or sends, never out of what the app sees.

Every function returns a new value; inputs are never mutated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "SCRUBBED",
    "Scrubber",
]

SCRUBBED = "[scrubbed]"

DEFAULT_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-xsrf-token",
    }
)
DEFAULT_KEY_PATTERN = (
    r"pass(word|wd|phrase)?|secret|token|api[-_ ]?key|access[-_ ]?key|private[-_ ]?key"
    r"|auth|credential|session|cookie|card[-_ ]?(number|num|no)?|cc[-_ ]?(number|num|no)"
    r"|cvv|cvc|ssn|signature"
)
#: A run of digits, spaced or dashed, long enough to hold a card somewhere in it.
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,}(?!\d)")
_GROUP = re.compile(r"\d+")
_CARD_CHARS = frozenset("0123456789 -")
_MAX_DEPTH = 32
_MAX_ITEMS = 200
#: Characters of one string value kept in what is logged; the rest is cut
#: and counted (``...[+N characters]``): scrubbing costs per character, and
#: a log line need not hold a client's megabyte.
MAX_TEXT = 2048
# Each digit's Luhn value, as is (position 0, 2, ... from the right) and doubled.
_SINGLE = tuple(range(10))
_DOUBLE = tuple(d * 2 - 9 if d > 4 else d * 2 for d in range(10))


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def _sums(digits: str) -> tuple[int, int]:
    """Luhn sums of *digits* with its last digit as is, and with it doubled."""
    plain = doubled = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if n > 9:
            n = int(ch)  # \d is any decimal digit: "\u0663" is 3
        if i % 2:
            plain += _DOUBLE[n]
            doubled += n
        else:
            plain += n
            doubled += _DOUBLE[n]
    return plain, doubled


def _hide_cards(match: re.Match[str]) -> str:
    """The run with each card number in it hidden.

    A card is the whole run when it holds 13-19 digits, however spaced; or,
    in a longer run, a group of 13-19 digits, or consecutive groups of 3-6
    digits (``4111 1111 1111 1111``, ``3782 822463 10005``; the last may be
    shorter: ``1000 0000 0000 9``) adding up to 13-19; each passing the Luhn
    check. Looking at groups, not at the run as a whole,
    finds the card beside an expiry (``4111 1111 1111 1111 12/25``), a CVV
    or a quantity; a run of one-digit groups is never read as a card, and
    costs one pass.
    """
    text = match.group(0)
    whole = text.replace(" ", "").replace("-", "")
    if 13 <= len(whole) <= 19 and _luhn(whole):
        return SCRUBBED  # one card, however it is spaced
    groups = [(g.start(), g.end(), g.group()) for g in _GROUP.finditer(text)]
    # Each group's Luhn sums, once: a candidate's are then added up from
    # its groups' (appending n digits shifts the others' parity by n), not
    # recomputed from a string per candidate (~2 us a character).
    sums = [_sums(g[2]) if len(g[2]) <= 19 else (0, 0) for g in groups]
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(groups):
        found = -1
        first = groups[i][2]
        if 13 <= len(first) <= 19 and sums[i][0] % 10 == 0:
            found = i
        elif 3 <= len(first) <= 6:
            length = len(first)
            plain, doubled = sums[i]
            for j in range(i + 1, len(groups)):
                part = groups[j][2]
                if len(part) > 6 or length + len(part) > 19:
                    break
                length += len(part)
                add_plain, add_doubled = sums[j]
                if len(part) % 2:
                    plain, doubled = add_plain + doubled, add_doubled + plain
                else:
                    plain, doubled = add_plain + plain, add_doubled + doubled
                if length >= 13 and plain % 10 == 0:
                    found = j  # the longest that passes
                if len(part) < 3:
                    break  # a short group only ends a card (4-4-4-1)
        if found < 0:
            i += 1
            continue
        out.append(text[pos : groups[i][0]])
        out.append(SCRUBBED)
        pos = groups[found][1]
        i = found + 1
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


class Scrubber:
    """Replace secrets with ``"[scrubbed]"``.

    Args:
        headers: header names whose values are always secret (lower-case);
            names ending in ``-token`` or containing ``secret``/``password``/
            ``api-key`` are secret too.
        key_pattern: a regex searched (case-insensitively) in every query,
            form and JSON key at any depth; a match hides the value.
        cards: also hide anything that looks like a payment card number
            (13-19 digits passing the Luhn check) inside any string value.
    """

    __slots__ = ("_cards", "_headers", "_keys")

    def __init__(
        self,
        headers: Iterable[str] = DEFAULT_HEADERS,
        key_pattern: str = DEFAULT_KEY_PATTERN,
        *,
        cards: bool = True,
    ) -> None:
        self._headers = frozenset(h.lower() for h in headers)
        self._keys = re.compile(key_pattern, re.IGNORECASE)
        self._cards = cards

    def secret_header(self, name: str) -> bool:
        """Whether header *name* carries a secret."""
        n = name.lower()
        return (
            n in self._headers
            or n.endswith("-token")
            or "secret" in n
            or "password" in n
            or "api-key" in n
        )

    def secret_key(self, key: str) -> bool:
        """Whether a field named *key* carries a secret."""
        return bool(self._keys.search(key))

    def text(self, value: str) -> str:
        """Hide card-like numbers inside *value*, cut to :data:`MAX_TEXT` characters.

        A cut value ends ``...[+N characters]``; the cut is moved back past
        digits and separators at it, so no card is logged in part.
        """
        cut = ""
        if len(value) > MAX_TEXT:
            end = MAX_TEXT
            stop = end - 40  # a card with its separators is shorter
            while end > stop and value[end - 1] in _CARD_CHARS:
                end -= 1
            cut = f"...[+{len(value) - end} characters]"
            value = value[:end]
        if self._cards and len(value) >= 13:
            value = _CARD.sub(_hide_cards, value)
        return value + cut

    def headers(self, headers: Mapping[str, Iterable[str]]) -> dict[str, str]:
        """Headers as ``{name: value}`` with secret values hidden."""
        out: dict[str, str] = {}
        for name, values in headers.items():
            joined = ", ".join(values)
            out[name] = SCRUBBED if self.secret_header(name) else self.text(joined)
        return out

    def pairs(self, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Key/value pairs (query, form) as a dict with secret values hidden."""
        out: dict[str, Any] = {}
        for i, (key, value) in enumerate(pairs):
            if i >= _MAX_ITEMS:
                out["..."] = "truncated"
                break
            clean = SCRUBBED if self.secret_key(key) else self.text(value)
            if key in out:
                prev = out[key]
                out[key] = [*prev, clean] if isinstance(prev, list) else [prev, clean]
            else:
                out[key] = clean
        return out

    def query(self, query_string: str) -> dict[str, Any]:
        """A query string as a dict with secret values hidden."""
        if not query_string:
            return {}
        return self.pairs(parse_qsl(query_string, keep_blank_values=True))

    def data(self, value: Any, depth: int = 0) -> Any:
        """A JSON-like value with secret keys (at any depth) and card numbers hidden."""
        if depth > _MAX_DEPTH:
            return "..."
        if isinstance(value, Mapping):
            return {
                str(k): (SCRUBBED if self.secret_key(str(k)) else self.data(v, depth + 1))
                for k, v in list(value.items())[:_MAX_ITEMS]
            }
        if isinstance(value, (list, tuple)):
            return [self.data(v, depth + 1) for v in value[:_MAX_ITEMS]]
        if isinstance(value, str):
            return self.text(value)
        if (
            self._cards
            and type(value) is int
            and 10**12 <= abs(value) < 10**19
            and _luhn(str(abs(value)))
        ):
            # A card number sent as a JSON number.
            return SCRUBBED
        return value

    def body(self, body: bytes | None, content_type: str | None) -> Any:
        """A request body as loggable data: parsed JSON or form, scrubbed; else its size."""
        if not body:
            return None
        ctype = (content_type or "").split(";", 1)[0].strip().lower()
        try:
            if ctype == "application/json" or ctype.endswith("+json"):
                return self.data(json.loads(body))
            if ctype == "application/x-www-form-urlencoded":
                return self.pairs(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            return {"unparsed_bytes": len(body)}
        return {"bytes": len(body)}
