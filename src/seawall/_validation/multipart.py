"""The text fields of a ``multipart/form-data`` body (RFC 7578), read in bounded time.

The standard library's :mod:`email` parser took ~4 µs per byte of a benign
body and time quadratic in the encoded words (``=?utf-8?q?a?=``) of a part
header (a 224 KB body: 6-12 s); its header objects raised ``LookupError`` or
``RecursionError`` on a bad charset or nested comments. This parser does
only what a form needs: find the parts with :meth:`bytes.find` (each byte is
searched a bounded number of times), read ``Content-Disposition`` and
``Content-Type`` parameters with a linear scan, and refuse what it cannot
read (:class:`MultipartError`) rather than guess. Part headers are bounded
(:data:`MAX_PART_HEADER`) and so is the number of parts (the caller's
*max_parts*).
"""

from __future__ import annotations

import binascii
import re
from urllib.parse import unquote

from seawall._validation.charsets import codec_for

__all__ = ["MAX_PART_HEADER", "MultipartError", "TooManyParts", "form_pairs", "parameters"]

#: Bytes of one part's header block at most: a browser's is ~100 bytes
#: (a name, a file name, a content type).
MAX_PART_HEADER = 4096

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


class MultipartError(ValueError):
    """The body is not multipart this parser can read (a 400)."""


class TooManyParts(MultipartError):
    """The body has more parts than allowed."""


def parameters(value: str) -> tuple[str, dict[str, str]]:
    r"""``("form-data", {"name": "a"})`` for ``form-data; name="a"``: the value and its parameters.

    Names are lower-cased; a quoted value is unquoted (``\"`` is ``"``);
    ``name*=utf-8''caf%C3%A9`` (RFC 8187) is decoded and takes the place of
    ``name``. Every character is looked at a bounded number of times.
    """
    end = len(value)
    semi = value.find(";")
    kind = (value if semi < 0 else value[:semi]).strip().lower()
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    pos = semi
    while 0 <= pos < end:
        pos += 1
        nxt = value.find(";", pos)
        stop = end if nxt < 0 else nxt
        eq = value.find("=", pos, stop)
        if eq < 0:
            pos = nxt  # a bare word: no parameter
            continue
        key = value[pos:eq].strip().lower()
        pos = eq + 1
        while pos < end and value[pos] in " \t":
            pos += 1
        if pos < end and value[pos] == '"':
            quoted = _QUOTED.match(value, pos)
            if quoted is None:
                msg = "an unterminated quoted parameter"
                raise MultipartError(msg)
            text = quoted.group(1)
            params[key] = _ESCAPE.sub(r"\1", text) if "\\" in text else text
            pos = value.find(";", quoted.end())
        else:
            params[key] = value[pos:stop].strip()
            pos = nxt
    for key, raw in params.items():
        if key.endswith("*"):
            charset, _, rest = raw.partition("'")
            _, _, encoded = rest.partition("'")
            codec = codec_for(charset) or "utf-8"
            extended[key[:-1]] = unquote(encoded, encoding=codec, errors="replace")
    params.update(extended)
    return kind, params


def _headers(block: bytes) -> dict[str, str]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    headers: dict[str, str] = {}
    last = ""
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and last:
            headers[last] += " " + line.strip()  # an obsolete folded line
            continue
        name, colon, value = line.partition(":")
        if not colon:
            msg = "a part header line without a colon"
            raise MultipartError(msg)
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


def _content(data: bytes, encoding: str) -> bytes:
    # RFC 7578 deprecates Content-Transfer-Encoding, but Django still
    # decodes base64 and quoted-printable parts: read them as it would.
    coding = encoding.strip().lower()
    if coding == "base64":
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            msg = "a base64 part that does not decode"
            raise MultipartError(msg) from None
    if coding == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


def form_pairs(body: bytes, content_type: str, max_parts: int | None) -> list[tuple[str, str]]:
    """The ``(name, text)`` of each field of *body* that is not a file, in order.

    Raises:
        TooManyParts: more than *max_parts* parts (files included).
        MultipartError: no boundary, a missing delimiter, an unreadable part header.
    """
    _, params = parameters(content_type)
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or "\r" in boundary or "\n" in boundary:
        msg = "no usable boundary"
        raise MultipartError(msg)
    if not body.strip():
        return []
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    separator = b"\r\n" + delimiter
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        first = body.find(separator)  # after a preamble
        if first < 0:
            msg = "no delimiter"
            raise MultipartError(msg)
        pos = first + len(separator)
    pairs: list[tuple[str, str]] = []
    parts = 0
    while True:
        if body.startswith(b"--", pos):
            return pairs  # the close delimiter; an epilogue after it is ignored
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            msg = "a delimiter line with more on it"
            raise MultipartError(msg)
        start = eol + 2
        end = body.find(separator, start)
        if end < 0:
            msg = "a part with no delimiter after it"
            raise MultipartError(msg)
        parts += 1
        if max_parts is not None and parts > max_parts:
            msg = f"more than {max_parts} parts"
            raise TooManyParts(msg)
        if body.startswith(b"\r\n", start):
            head, data = b"", body[start + 2 : end]
        else:
            blank = body.find(b"\r\n\r\n", start, min(end, start + MAX_PART_HEADER + 4))
            if blank < 0:
                msg = "a part header too long or not ended"
                raise MultipartError(msg)
            head, data = body[start:blank], body[blank + 4 : end]
        pos = end + len(separator)
        headers = _headers(head) if head else {}
        _, disposition = parameters(headers.get("content-disposition", ""))
        name = disposition.get("name")
        if name is None or "filename" in disposition:
            continue  # a file, or no field: not part of the document
        data = _content(data, headers.get("content-transfer-encoding", ""))
        _, ctype = parameters(headers.get("content-type", ""))
        pairs.append((name, data.decode(codec_for(ctype.get("charset")) or "utf-8", "replace")))
