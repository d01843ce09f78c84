"""Bounded decoding of a value before the detectors see it.

Attackers hide payloads behind encodings a browser, a framework or a
database undoes later: URL encoding (often twice), HTML entities, IIS-style
``%uXXXX`` escapes, overlong UTF-8 (``%c0%ae`` for ``.``), full-width
Unicode, null bytes and SQL comments. :func:`normalize` undoes each of these
a bounded number of times (:data:`MAX_PASSES`), so the work per value stays
linear in its length whatever it contains.

NFKC puts combining marks in canonical order with an insertion sort, so its
cost grows with the square of a run of them (32,768 U+0F75: 6 s).
Text is first made Stream-Safe (UAX #15): a run of more than
:data:`MAX_NON_STARTERS` non-starters keeps its first ones, the rest are
dropped (no rule reads a combining mark).
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import unquote_to_bytes

__all__ = ["MAX_NON_STARTERS", "MAX_PASSES", "normalize", "stream_safe"]

#: Consecutive non-starters (combining marks) kept before NFKC, as UAX #15's
#: Stream-Safe Text Format allows.
MAX_NON_STARTERS = 30

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


#: (runs of BMP non-starters, runs of any, the span of non-BMP ones), built once.
_runs: tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]] | None = None


def _char_class(points: list[int]) -> str:
    ranges = []
    start = prev = points[0]
    for point in [*points[1:], -1]:
        if point != prev + 1:
            ranges.append(f"\\U{start:08x}-\\U{prev:08x}" if prev > start else f"\\U{start:08x}")
            start = point
        prev = point
    return f"[{''.join(ranges)}]"


def _non_starter_runs() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Patterns for runs of more than MAX_NON_STARTERS non-starters, built once.

    Built on the first non-ASCII text (~30 ms), not at import, from this
    Python's own Unicode tables: a character whose combining class is not 0,
    or that decomposes into such characters only (U+0F75, U+FF9E). A class
    of BMP characters only is a bitmap to the regex engine (~8 ns a
    character); with the others it is a list of ranges (~100 ns), so that
    one runs only on text with a character in their span (U+101FD to
    U+1E94A: not emoji, not CJK).
    """
    global _runs
    if _runs is None:
        combining = unicodedata.combining
        decomposition = unicodedata.decomposition
        marks = []
        for point in range(0x300, 0x20000):
            char = chr(point)
            if combining(char) or (
                decomposition(char)
                and all(combining(c) for c in unicodedata.normalize("NFKD", char))
            ):
                marks.append(point)
        bmp = [p for p in marks if p <= 0xFFFF]
        wide = [p for p in marks if p > 0xFFFF]
        run = f"{{{MAX_NON_STARTERS + 1},}}"
        _runs = (
            re.compile(_char_class(bmp) + run),
            re.compile(_char_class(marks) + run),
            re.compile(f"[\\U{wide[0]:08x}-\\U{wide[-1]:08x}]"),
        )
    return _runs


def _keep_first(match: re.Match[str]) -> str:
    return match.group()[:MAX_NON_STARTERS]


def stream_safe(text: str) -> str:
    """*text* with each run of non-starters cut to :data:`MAX_NON_STARTERS` (UAX #15).

    Linear in the length of *text*; what NFKC then does with it is too.
    """
    if len(text) <= MAX_NON_STARTERS:
        return text
    bmp, every, wide = _non_starter_runs()
    runs = every if wide.search(text) else bmp
    if runs.search(text) is None:
        return text
    return runs.sub(_keep_first, text)


#: Characters of text given to NFKC at a time, when its output is bounded.
_NFKC_CHUNK = 4096


def _nfkc(text: str, limit: int | None) -> str:
    """NFKC of *text*, stopping once more than *limit* characters are out.

    NFKC writes some characters as many (U+FDFA as 18): a bound on what goes
    in is none on what comes out. Cut in pieces, each before a starter (a
    Stream-Safe text has one within 31 characters); a composition across a
    cut is missed, which changes no ASCII the rules read.
    """
    if limit is None or len(text) <= _NFKC_CHUNK:
        return unicodedata.normalize("NFKC", text)
    combining = unicodedata.combining
    pieces = []
    size = 0
    pos = 0
    end = len(text)
    while pos < end and size <= limit:
        cut = pos + _NFKC_CHUNK
        while cut < end and combining(text[cut]):
            cut += 1
        piece = unicodedata.normalize("NFKC", text[pos:cut])
        pieces.append(piece)
        size += len(piece)
        pos = cut
    return "".join(pieces)


def normalize(text: str, limit: int | None = None) -> str:
    """Decode *text* the ways a server, a browser or a database would, then fold it.

    Returns lower-case text with runs of blanks folded to one space and line
    breaks to one newline (a newline separates shell commands). With a
    *limit*, at most ``limit + 1`` characters are returned: longer decoded
    text is cut there (so the caller can tell), before the costlier steps.
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
        text = _nfkc(stream_safe(text), limit)
        if limit is not None and len(text) > limit:
            text = text[: limit + 1]
        text = text.translate(_LOOKALIKE)
    elif "\x00" in text:
        text = text.replace("\x00", "")
    text = text.lower()
    if "  " in text or "\t" in text or "\f" in text or "\v" in text:
        text = _BLANKS.sub(" ", text)
    if "\n" in text or "\r" in text:
        text = _NEWLINES.sub("\n", text)
    return text
