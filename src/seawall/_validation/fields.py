"""Dotted field paths into a parsed body: ``"title"``, ``"author.name"``, ``"tags.*"``.

``*`` stands for every key of an object or every item of an array; a path
that names an array without ``*`` applies to each of its items too, so
``"tags"`` covers ``{"tags": ["a", "b"]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["apply_to_fields", "iter_strings", "safe_loc"]

_MAX_LOC_PART = 32


def safe_loc(part: Any) -> str | int:
    """A location part safe to send back: array indexes and short, plain key names.

    Other keys are client input, replaced by ``"<key>"`` so a problem body
    never echoes more than a field name.
    """
    if isinstance(part, int):
        return part
    text = str(part)
    if len(text) <= _MAX_LOC_PART and text.replace("_", "a").replace("-", "a").isalnum():
        return text
    return "<key>"


def apply_to_fields(
    doc: Any, paths: tuple[tuple[str, ...], ...], fn: Callable[[str], str]
) -> tuple[Any, bool]:
    """Replace each string at *paths* in *doc* with ``fn(string)``; return ``(doc, changed)``.

    *doc* is modified in place (it is a freshly parsed body).
    """
    changed = False

    def visit(node: Any, path: tuple[str, ...]) -> Any:
        nonlocal changed
        if isinstance(node, list):
            # "tags.*" names each item, and so does a bare "tags": a "*"
            # here is used up by the array, not passed on to its items.
            inner = path[1:] if path and path[0] == "*" else path
            if inner and inner[0] == "*":
                for i, item in enumerate(node):
                    node[i] = visit(item, inner)
                return node
            # Arrays in arrays keep *inner*: walked with a stack, as a
            # recursion as deep as the client nests them would fail.
            lists = [node]
            while lists:
                items = lists.pop()
                for i, item in enumerate(items):
                    if isinstance(item, list):
                        lists.append(item)
                    else:
                        items[i] = visit(item, inner)
            return node
        if not path:
            if isinstance(node, str):
                new = fn(node)
                if new != node:
                    changed = True
                return new
            return node
        if isinstance(node, dict):
            head, rest = path[0], path[1:]
            if head == "*":
                for key in node:
                    node[key] = visit(node[key], rest)
            elif head in node:
                node[head] = visit(node[head], rest)
        return node

    for path in paths:
        doc = visit(doc, path)
    return doc, changed


def iter_strings(
    doc: Any, skip: frozenset[str] = frozenset(), *, limit: int = 100_000
) -> Iterator[tuple[str, str]]:
    """Yield ``(dotted path, string)`` for every key and string value of *doc*.

    Fields whose dotted path (array indexes left out) or last key is in *skip*
    are not visited. At most *limit* nodes are visited.
    """
    stack: list[tuple[Any, str, str]] = [(doc, "", "")]
    seen = 0
    while stack and seen < limit:
        node, path, last = stack.pop()
        seen += 1
        if isinstance(node, str):
            yield path, node
        elif isinstance(node, dict):
            for key, value in node.items():
                sub = f"{path}.{key}" if path else key
                if sub in skip or key in skip:
                    continue
                yield sub, key
                stack.append((value, sub, key))
        elif isinstance(node, list):
            stack.extend((item, path, last) for item in node)
