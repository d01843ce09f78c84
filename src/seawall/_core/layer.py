"""The layer protocol, the response head layers may edit, and the outcome they learn.

A layer is any object with some of these hooks (all optional, looked up once
when the stack is built)::

    on_request(request) -> None | CONTINUE | Respond | Flow
    on_response(request, response: ResponseHead) -> None
    add_headers(request, status: int) -> Iterable[tuple[str, str]] | None
    on_exception(request, exc) -> Respond | None
    on_complete(request, outcome: Outcome) -> None
    on_websocket_message(request) -> None | Rejected | Flow
    stats() -> dict

and two class attributes: ``name`` (a short id used in stats and logs) and
``order`` (its place in the canonical order, see :data:`ORDER`). A layer
may also have ``skip_methods``, methods whose requests its ``on_request``
never needs to see (ErrorCapture: GET, HEAD, OPTIONS); the stack then does
not call it for them.

``on_websocket_message`` is asked about every message a client sends on a
websocket the handshake hooks admitted (ASGI only); a :class:`Rejected`
answer closes the connection with code 1008 and tells the app the client
left.

``add_headers`` is the cheap form of ``on_response`` for a layer that only
adds header lines (Timing's ``Server-Timing``): it returns the lines and the
driver appends them to the response start in its own format, after every
``on_response`` edit, without building a :class:`ResponseHead`. Per response
that is one call where ``on_response`` costs four.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from seawall._core.decisions import Continue, Flow, Respond
    from seawall._core.request import RequestView

__all__ = ["ORDER", "Layer", "Outcome", "ResponseHead"]

#: Canonical positions, outermost first (DESIGN.md section 3). Layers of the
#: same position keep the order they were given in. Custom layers without an
#: ``order`` sit just outside the app.
ORDER: dict[str, int] = {
    "timing": 100,
    "errors": 200,
    "health": 300,
    "metrics": 350,
    "shedding": 400,
    "concurrency": 450,
    "ratelimit": 500,
    "validation": 600,
    "breaker": 700,
    "timeout": 800,
    "custom": 900,
}


@runtime_checkable
class Layer(Protocol):
    """What the stack needs of a layer: a ``name``; every hook is optional.

    Hooks must not block, sleep or do I/O: yield an effect instead (see
    :mod:`seawall._core.decisions`). Per-request data goes in
    ``request.state[self]``, never on the layer.
    """

    name: str


class RequestHook(Protocol):
    """The type of ``on_request``."""

    def __call__(self, request: RequestView, /) -> Continue | Respond | Flow | None:
        """Decide about *request*."""


@dataclass(slots=True)
class Outcome:
    """How a request ended, given to ``on_complete`` after the last byte.

    Attributes:
        status: the status sent, or ``None`` if no response started.
        exception: what the app (or a layer) raised, if anything.
        duration: seconds from arrival to the last body chunk (WSGI: ``close()``).
        ttfb: seconds from arrival to the response start, if it started.
        route: the route template when known, else the raw path.
        responded_by: the ``name`` of the layer that answered, or ``None`` if the app did.
        disconnected: the client went away before the response finished.
        timed_out: a :class:`~seawall.layers.Timeout` deadline expired.
        templated: *route* is a route template, not a raw path.
    """

    status: int | None
    exception: BaseException | None
    duration: float
    ttfb: float | None
    route: str
    responded_by: str | None = None
    disconnected: bool = False
    timed_out: bool = False
    templated: bool = False

    @property
    def failed(self) -> bool:
        """A server-side failure: an exception, a timeout or a 5xx status."""
        return (
            self.exception is not None
            or self.timed_out
            or (self.status is not None and self.status >= 500)
        )


_NOTHING: frozenset[str] = frozenset()


class ResponseHead:
    """The status and headers of a response about to start; layers may add headers.

    Edits are collected and applied by the driver in its own header format,
    so reading the original headers costs nothing unless a layer asks.
    """

    __slots__ = ("_get", "_items", "added", "removed", "status")

    def __init__(self, status: int, items: Any, getter: Any = None) -> None:
        self.status = status
        self._items = items
        self._get = getter
        self.added: list[tuple[str, str]] = []
        # Shared empty default: most responses remove nothing (see set()).
        self.removed: set[str] | frozenset[str] = _NOTHING

    def get(self, name: str) -> str | None:
        """Return the response's value of header *name* (added ones first)."""
        lname = name.lower()
        for key, value in reversed(self.added):
            if key.lower() == lname:
                return value
        if lname in self.removed:
            return None
        return self._get(self._items, lname) if self._get is not None else None

    def add(self, name: str, value: str) -> None:
        """Add a header line (keeps any the app set)."""
        self.added.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of header *name* with one of *value*."""
        lname = name.lower()
        if not self.removed:
            self.removed = set()
        self.removed.add(lname)  # type: ignore[union-attr]
        self.added = [(k, v) for k, v in self.added if k.lower() != lname]
        self.added.append((name, value))

    def extend(self, headers: Iterable[tuple[str, str]]) -> None:
        """Add several header lines."""
        self.added.extend(headers)
