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
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_MAX_DEPTH = 32
_MAX_ITEMS = 200


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
        """Hide card-like numbers inside *value*."""
        if not self._cards or len(value) < 13:
            return value

        def repl(m: re.Match[str]) -> str:
            digits = re.sub(r"[ -]", "", m.group(0))
            return SCRUBBED if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)

        return _CARD.sub(repl, value)

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
