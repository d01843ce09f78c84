"""Charset names a client sends, judged without handing them to the codec registry.

``"abc".encode(name)`` with a client's *name* is not free: every unknown name
makes :mod:`encodings` try an import and cache the miss in
``encodings._cache`` forever, so random names grow memory without bound. The
names here are a fixed list, compared as text; nothing else is looked up.
"""

from __future__ import annotations

__all__ = ["MAX_CHARSET_NAME", "ascii_compatible", "codec_for"]

#: Longer names are no charset anyone registered (IANA's longest is 45,
#: for charsets nobody sends): refused without a look.
MAX_CHARSET_NAME = 40

# Charsets that spell printable ASCII as ASCII (so the threat detectors read
# what a framework decoding with them would), by the names clients use.
# tests/validation/test_hostile_inputs.py checks each against its codec.
_LATIN1 = ("iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "cp819", "ibm819")
_ISO = tuple(
    f"{prefix}{n}" for n in (*range(2, 12), 13, 14, 15, 16) for prefix in ("iso-8859-", "iso8859-")
)
_WINDOWS = tuple(f"{prefix}{n}" for n in range(1250, 1259) for prefix in ("windows-", "cp"))
_CJK = (
    "shift-jis",
    "sjis",
    "windows-31j",
    "cp932",
    "euc-jp",
    "euc-kr",
    "gb2312",
    "gbk",
    "gb18030",
    "big5",
)
_NAMES = (
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    *_LATIN1,
    *_ISO,
    *_WINDOWS,
    "koi8-r",
    "koi8-u",
    "latin-9",
    *_CJK,
)
#: Every name accepted (lower-case, ``_`` written ``-``): Python's codec name for it.
KNOWN: dict[str, str] = {name: name for name in _NAMES}
KNOWN["latin-9"] = "iso-8859-15"
KNOWN["windows-31j"] = "cp932"


def _canonical(name: str) -> str | None:
    if not name or len(name) > MAX_CHARSET_NAME:
        return None
    return name.strip().strip('"').strip().lower().replace("_", "-")


def codec_for(name: str | None) -> str | None:
    """The codec for charset *name* if it is a known ASCII-compatible one, else ``None``."""
    if name is None:
        return None
    canonical = _canonical(name)
    return None if canonical is None else KNOWN.get(canonical)


def ascii_compatible(name: str) -> bool:
    """Whether charset *name* keeps ASCII as ASCII (UTF-8, Latin-1; not UTF-7, UTF-16, unknown)."""
    return codec_for(name) is not None
