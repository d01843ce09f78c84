"""Dotted field paths into a parsed body: ``"title"``, ``"author.name"``, ``"tags.*"``.

``*`` stands for every key of an object or every item of an array; a path
that names an array without ``*`` applies to each of its items too, so
``"tags"`` covers ``{"tags": ["a", "b"]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["apply_to_fields", "iter_strings", "path_of", "safe_loc"]

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


# Where a value is in a document is a link, ``(parent link, key)`` or
# ``None`` at the top, not a dotted string: a string per key, each repeating
# its parent's, cost memory with the square of the depth (a 111 KB body of
# long keys 8 deep: 141 MB).


def path_of(link: tuple[Any, str] | None) -> list[str]:
    """The keys from the top of the document down to *link* (array indexes left out)."""
    keys: list[str] = []
    while link is not None:
        link, key = link
        keys.append(key)
    keys.reverse()
    return keys


def iter_strings(
    doc: Any, skip: frozenset[str] = frozenset(), *, limit: int = 100_000
) -> Iterator[tuple[tuple[Any, str] | None, str]]:
    """Yield ``(where, string)`` for every key and string value of *doc*.

    *where* is a link (see :func:`path_of`). Fields whose dotted path
    (array indexes left out) or last key is in *skip* are not visited. At
    most *limit* nodes are visited.
    """
    dotted = [name for name in skip if "." in name]
    # A dotted name of n dots can only be the path of a key n deep: deeper
    # keys need no path built.
    depth_cap = max(name.count(".") for name in dotted) + 1 if dotted else 0
    stack: list[tuple[Any, tuple[Any, str] | None, int]] = [(doc, None, 0)]
    seen = 0
    while stack and seen < limit:
        node, link, depth = stack.pop()
        seen += 1
        if isinstance(node, str):
            yield link, node
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in skip:
                    continue
                sub = (link, key)
                if depth < depth_cap and ".".join(path_of(sub)) in skip:
                    continue
                yield sub, key
                if isinstance(value, (str, dict, list)):
                    stack.append((value, sub, depth + 1))
        elif isinstance(node, list):
            stack.extend(
                (item, link, depth) for item in node if isinstance(item, (str, dict, list))
            )
