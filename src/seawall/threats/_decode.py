"""Bounded decoding of a value before the detectors see it.

Attackers hide payloads behind encodings a browser, a framework or a
database undoes later: URL encoding (often twice), HTML entities, IIS-style
``%uXXXX`` escapes, overlong UTF-8 (``%c0%ae`` for ``.``), full-width
Unicode, null bytes and SQL comments. :func:`normalize` undoes each of these
a bounded number of times (:data:`MAX_PASSES`), so the work per value stays
linear in its length whatever it contains.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import unquote_to_bytes

__all__ = ["MAX_PASSES", "normalize"]

#: How many rounds of URL/entity decoding a value gets (double encoding is common,
#: triple is rare; each round is linear in the value's length).
MAX_PASSES = 3

_PCT_U = re.compile(r"%u([0-9a-fA-F]{4})")
_PCT = re.compile(r"%[0-9a-fA-F]{2}")
# Overlong UTF-8 forms of ASCII characters (CVE-2000-0884-style directory
# traversal): 2-byte C0/C1 lead, 3-byte E0 80, 4-byte F0 80 80, 5-byte F8 80 80 80.
# Some decoders ignore the continuation bits' high bits, hence the loose second byte.
_OVERLONG = re.compile(
    rb"[\xc0\xc1][\x00-\xff]|\xe0[\x80-\x81][\x80-\xbf]|\xf0\x80\x80[\x80-\xbf]"
    rb"|\xf8\x80\x80\x80[\x80-\xbf]|\xfc\x80\x80\x80\x80[\x80-\xbf]"
)
_HEX_ESC = re.compile(r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|0x(2[eEfF]|5[cC])|\\([nrt])")
# Only what needs folding: runs of blanks and blanks other than a space.
_BLANKS = re.compile(r"[ \t\f\v]{2,}|[\t\f\v]")
_NEWLINES = re.compile(r" ?(?:\r\n?|\n)[\s]*")
# Look-alikes the Unicode NFKC form does not fold, but servers "best-fit" map.
_LOOKALIKE = str.maketrans(
    {
        "\u2215": "/",
        "\u2044": "/",
        "\u2216": "\\",
        "\ufe68": "\\",
        "\u2024": ".",
        "\uff0e": ".",
        "\u00a0": " ",
        "\x00": "",
        "\ufffd": "",
    }
)


_PATH_CHARS = frozenset(b"./\\")


def _overlong(match: re.Match[bytes]) -> bytes:
    data = match.group()
    last = data[-1]
    # Lenient decoders disagree on overlong forms (IIS took %c1%af for "/"):
    # of the readings a server might make, prefer one that is a path character.
    readings = [last & 0x3F]
    if len(data) == 2:
        readings.insert(0, (data[0] & 0x01) << 6 | (last & 0x3F))
        if last < 0x80:
            readings.insert(0, last)  # an invalid continuation byte kept as is
    for value in readings:
        if value in _PATH_CHARS:
            return bytes([value])
    return bytes([readings[0]])


def _url_decode(text: str) -> str:
    if "%u" in text or "%U" in text:
        text = _PCT_U.sub(lambda m: chr(int(m.group(1), 16)), text)
    raw = unquote_to_bytes(text.replace("+", " ")) if "%" in text else text.encode()
    if (
        b"\xc0" in raw
        or b"\xc1" in raw
        or b"\xe0\x80" in raw
        or b"\xf0\x80" in raw
        or b"\xf8" in raw
    ):
        raw = _OVERLONG.sub(_overlong, raw)
    return raw.decode("utf-8", "replace")


_CONTROL = {"n": "\n", "r": "\n", "t": " "}


def _hex_escape(match: re.Match[str]) -> str:
    control = match.group(4)
    if control:
        return _CONTROL[control]
    code = match.group(1) or match.group(2) or match.group(3)
    return chr(int(code, 16))


def normalize(text: str) -> str:
    """Decode *text* the ways a server, a browser or a database would, then fold it.

    Returns lower-case text with runs of blanks folded to one space and line
    breaks to one newline (a newline separates shell commands).
    """
    for _ in range(MAX_PASSES):
        before = text
        if "%" in text:
            text = _url_decode(text)
        if "&" in text:
            text = html.unescape(text)
        if "\\" in text or "0x" in text or "0X" in text:
            text = _HEX_ESC.sub(_hex_escape, text)
        if text == before:
            break
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_LOOKALIKE)
    elif "\x00" in text:
        text = text.replace("\x00", "")
    text = text.lower()
    if "  " in text or "\t" in text or "\f" in text or "\v" in text:
        text = _BLANKS.sub(" ", text)
    if "\n" in text or "\r" in text:
        text = _NEWLINES.sub("\n", text)
    return text
