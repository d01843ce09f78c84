"""Parse a JSON body under structure limits, with precise, safe errors.

The parse itself is :func:`json.loads` (C speed). The limits are checked
afterwards, but only when cheap byte counts on the raw body say they could
be exceeded: a body with fewer ``[``/``{`` than the depth limit cannot be
too deep, one shorter than the string limit has no string too long, and so
on, so a typical small body costs one parse and four ``bytes.count`` calls.
"""

from __future__ import annotations

import json
from typing import Any

from seawall._validation.fields import safe_loc

__all__ = ["JsonLimits", "check_structure", "parse_json"]


class JsonLimits:
    """Structure limits for a JSON body (``None``: no limit)."""

    __slots__ = ("max_array", "max_depth", "max_keys", "max_string")

    def __init__(
        self,
        max_depth: int | None,
        max_keys: int | None,
        max_array: int | None,
        max_string: int | None,
    ) -> None:
        self.max_depth = max_depth
        self.max_keys = max_keys
        self.max_array = max_array
        self.max_string = max_string

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonLimits) and (
            (self.max_depth, self.max_keys, self.max_array, self.max_string)
            == (other.max_depth, other.max_keys, other.max_array, other.max_string)
        )

    def __hash__(self) -> int:
        return hash((self.max_depth, self.max_keys, self.max_array, self.max_string))


def parse_json(body: bytes) -> tuple[Any, dict[str, Any] | None]:
    """Parse *body*; return ``(doc, None)`` or ``(None, error)``.

    The error is a ``{"loc", "msg", "type", "line", "column"}`` dict whose
    message comes from the parser and names no input.
    """
    try:
        return json.loads(body), None
    except json.JSONDecodeError as exc:
        return None, {
            "loc": ["body"],
            "msg": f"{exc.msg} at line {exc.lineno} column {exc.colno}",
            "type": "json_invalid",
            "line": exc.lineno,
            "column": exc.colno,
        }
    except UnicodeDecodeError:
        return None, {
            "loc": ["body"],
            "msg": "The body is not valid UTF-8.",
            "type": "json_invalid",
        }
    except RecursionError:
        return None, {
            "loc": ["body"],
            "msg": "The JSON is nested too deeply.",
            "type": "json_too_deep",
        }
    except ValueError:
        # An integer past CPython's int_max_str_digits (4300 digits) raises
        # a bare ValueError from inside the parser. Raised into the stack, it
        # would make the layer fail open: the body would reach the app unread.
        return None, {
            "loc": ["body"],
            "msg": "The JSON has a number too long to parse.",
            "type": "json_invalid",
        }


def check_structure(body: bytes, doc: Any, limits: JsonLimits) -> dict[str, Any] | None:
    """Return the first structure-limit violation in *doc* as an error dict, or ``None``."""
    depth_limit = limits.max_depth
    keys_limit = limits.max_keys
    array_limit = limits.max_array
    string_limit = limits.max_string
    # Cheap upper bounds from the raw bytes: skip what cannot be exceeded.
    if depth_limit is not None and body.count(b"[") + body.count(b"{") <= depth_limit:
        depth_limit = None
    if keys_limit is not None and body.count(b":") <= keys_limit:
        keys_limit = None
    if array_limit is not None and body.count(b",") < array_limit:
        array_limit = None
    if string_limit is not None and len(body) <= string_limit:
        string_limit = None
    if depth_limit is None and keys_limit is None and array_limit is None and string_limit is None:
        return None
    # Containers only go on the stack, each with a link to its parent
    # ((parent link, key or index)): a location tuple per node cost ten times
    # the parse (1 MB: 520 ms). The location is built only for an error.
    stack: list[tuple[Any, int, Any]] = [(doc, 1, None)]
    while stack:
        node, depth, link = stack.pop()
        if type(node) is dict:
            if depth_limit is not None and depth > depth_limit:
                return _error(link, f"nested deeper than {depth_limit} levels", "json_too_deep")
            if keys_limit is not None and len(node) > keys_limit:
                return _error(link, f"more than {keys_limit} keys", "json_too_many_keys")
            for key, value in node.items():
                if string_limit is not None and len(key) > string_limit:
                    return _error(
                        link, f"a key longer than {string_limit} characters", "json_string_too_long"
                    )
                kind = type(value)
                if kind is dict or kind is list:
                    stack.append((value, depth + 1, (link, key)))
                elif kind is str and string_limit is not None and len(value) > string_limit:
                    return _too_long((link, key), string_limit)
        elif type(node) is list:
            if depth_limit is not None and depth > depth_limit:
                return _error(link, f"nested deeper than {depth_limit} levels", "json_too_deep")
            if array_limit is not None and len(node) > array_limit:
                return _error(link, f"more than {array_limit} items", "json_array_too_long")
            for i, item in enumerate(node):
                kind = type(item)
                if kind is dict or kind is list:
                    stack.append((item, depth + 1, (link, i)))
                elif kind is str and string_limit is not None and len(item) > string_limit:
                    return _too_long((link, i), string_limit)
        elif type(node) is str and string_limit is not None and len(node) > string_limit:
            return _too_long(link, string_limit)  # the document is one string
    return None


def _too_long(link: Any, limit: int) -> dict[str, Any]:
    return _error(link, f"longer than {limit} characters", "json_string_too_long")


def _error(link: Any, msg: str, kind: str) -> dict[str, Any]:
    loc = []
    while link is not None:
        link, part = link
        loc.append(safe_loc(part))
    loc.reverse()
    return {"loc": ["body", *loc], "msg": msg, "type": kind}
