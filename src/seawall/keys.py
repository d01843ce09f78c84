"""Key functions: who a rate limit counts a request against.

A key function takes the :class:`~seawall.RequestView` and returns a string
(or ``None`` to leave the request unlimited). It may be ``async``: the ASGI
driver awaits it on the event loop; the WSGI driver runs it to completion on
its thread. The default, :func:`client`, is the client identity that
seawall resolved once for every layer, with the trusted-proxy rules given
to :class:`~seawall.Seawall`: with no trusted proxy, ``X-Forwarded-For``,
``Forwarded`` and ``X-Real-IP`` are ignored, so rotating them never changes
the bucket; IPv6 clients are grouped by their /64.

Example::

    from seawall import keys

    RateLimit("100/minute", key=keys.header("X-API-Key"))
    RateLimit("100/minute", key=keys.composite(keys.client, keys.path))
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from seawall.exceptions import ConfigurationError

if TYPE_CHECKING:
    from seawall._core.request import RequestView

__all__ = [
    "KeyFunc",
    "client",
    "composite",
    "header",
    "is_async_key",
    "method",
    "path",
    "resolve_key",
]

#: A key function: sync or async, returning the key or ``None`` (not limited).
KeyFunc: TypeAlias = Callable[["RequestView"], "str | Awaitable[str | None] | None"]


def client(request: RequestView) -> str:
    """The client identity: its address (IPv6: its /64), after trusted-proxy rules."""
    return request.client_key


def path(request: RequestView) -> str:
    """The request path (pair it with :func:`client` in :func:`composite` for per-path buckets)."""
    return request.path


def method(request: RequestView) -> str:
    """The request method."""
    return request.method


class header:  # lower case: reads as a function at the call site, keys.header("X-API-Key")
    """Key on the value of request header *name*.

    Args:
        name: the header (case-insensitive).
        fallback: what to do when the header is missing: ``"client"`` (key
            on the client identity instead, the default, so a missing header
            is not a free pass), ``"skip"`` (do not limit the request) or a
            fixed string (one shared bucket for every request without it).
    """

    __slots__ = ("fallback", "name")

    def __init__(self, name: str, *, fallback: str = "client") -> None:
        if not name or not isinstance(name, str):
            msg = f"keys.header: expected a header name, got {name!r}"
            raise ConfigurationError(msg)
        self.name = name.lower()
        self.fallback = fallback

    def __call__(self, request: RequestView) -> str | None:
        """The header's value, or the fallback."""
        value = request.header(self.name)
        if value:
            return f"h:{value}"
        if self.fallback == "client":
            return request.client_key
        if self.fallback == "skip":
            return None
        return self.fallback

    def __repr__(self) -> str:
        return f"header({self.name!r}, fallback={self.fallback!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, header):
            return NotImplemented
        return (self.name, self.fallback) == (other.name, other.fallback)

    def __hash__(self) -> int:
        return hash((self.name, self.fallback))


class composite:  # lower case: reads as a function, keys.composite(keys.client, ...)
    """Join several keys into one (``"a|b"``); ``None`` if any part is ``None``.

    Parts may be sync or async key functions.
    """

    __slots__ = ("is_async", "parts")

    def __init__(self, *parts: Callable[..., Any]) -> None:
        if not parts:
            msg = "keys.composite: give at least one key function"
            raise ConfigurationError(msg)
        self.parts = tuple(resolve_key(p) for p in parts)
        self.is_async = any(is_async_key(p) for p in self.parts)

    def __call__(self, request: RequestView) -> Any:
        """The joined key (a coroutine if any part is async)."""
        if self.is_async:
            return self._acall(request)
        out = []
        for part in self.parts:
            value = part(request)
            if value is None:
                return None
            out.append(str(value))
        return "|".join(out)

    async def _acall(self, request: RequestView) -> str | None:
        out = []
        for part in self.parts:
            value = part(request)
            if inspect.isawaitable(value):
                value = await value
            if value is None:
                return None
            out.append(str(value))
        return "|".join(out)

    def __repr__(self) -> str:
        return f"composite{self.parts!r}"


def is_async_key(func: Any) -> bool:
    """Whether calling *func* returns an awaitable (an ``async def`` or async composite)."""
    if isinstance(func, composite):
        return func.is_async
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async __call__ on an object
    )


def resolve_key(spec: Any) -> Callable[..., Any]:
    """Turn a key spec into a key function.

    Accepts a callable, ``None``/``"client"`` (the client identity),
    ``"header:X-API-Key"``, ``"path"``, ``"method"`` or an import string
    ``"module:function"`` (so settings files can name keys as plain strings).
    """
    if spec is None or spec == "client":
        return client
    if callable(spec):
        func: Callable[..., Any] = spec
        return func
    if isinstance(spec, str):
        if spec.lower().startswith("header:") and spec[7:].strip():
            return header(spec[7:].strip())
        if spec == "path":
            return path
        if spec == "method":
            return method
        module, sep, name = spec.partition(":")
        if sep and module and name and "." not in name.replace("_", ""):
            # An import string from a settings file: "myapp.limits:tenant_key".
            import importlib

            try:
                found = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                msg = f"key: cannot import {spec!r}"
                raise ConfigurationError(msg) from None
            if callable(found):
                imported: Callable[..., Any] = found
                return imported
    msg = f"key: expected a callable, 'client', 'path', 'method' or 'header:<name>', got {spec!r}"
    raise ConfigurationError(msg)
