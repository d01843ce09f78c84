"""What a layer answers: carry on, respond, or ask the driver for an effect.

A layer's ``on_request`` returns ``None``/:data:`CONTINUE` (carry on), a
:class:`Respond` (answer now; the app is not called), or a generator (a
*flow*) that yields :class:`Effect` objects and finally returns one of the
first two. The drivers run each effect with the sync or the async client and
send the result back into the flow, or throw the effect's
:class:`~seawall.exceptions.StorageError` into it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, runtime_checkable

from seawall._core.problem import PROBLEM_CONTENT_TYPE, problem_body

if TYPE_CHECKING:
    from seawall.exceptions import Rejected

__all__ = [
    "CONTINUE",
    "Continue",
    "Decision",
    "Effect",
    "Flow",
    "ReadBody",
    "ReplaceBody",
    "Respond",
]


class Continue:
    """The request goes on to the next layer; use the :data:`CONTINUE` singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CONTINUE"


#: The one :class:`Continue` instance.
CONTINUE: Final = Continue()


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the request now with this response; the app is not called.

    Build one with :meth:`problem` or :meth:`from_rejection`; the body of every
    rejection seawall writes is RFC 9457 ``application/problem+json``.
    """

    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    content_type: str = PROBLEM_CONTENT_TYPE

    @classmethod
    def problem(
        cls,
        status: int,
        problem_type: str = "about:blank",
        title: str | None = None,
        detail: str | None = None,
        *,
        instance: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        **extensions: Any,
    ) -> Respond:
        """Build a problem+json response; *extensions* become extra members."""
        body = problem_body(status, problem_type, title, detail, instance, extensions)
        return cls(status, body, tuple(headers))

    @classmethod
    def from_rejection(
        cls, exc: Rejected, *, instance: str | None = None, request_id: str | None = None
    ) -> Respond:
        """Render a :class:`~seawall.exceptions.Rejected` exception as a problem response."""
        ext = dict(exc.extensions)
        if request_id is not None:
            ext.setdefault("request_id", request_id)
        if not exc.echo_instance:
            instance = None
        body = problem_body(exc.status, exc.problem_type, exc.title, exc.detail, instance, ext)
        return cls(exc.status, body, tuple(exc.headers))


Decision: TypeAlias = "Continue | Respond | None"


@runtime_checkable
class Effect(Protocol):
    """I/O a layer asks the driver to run, the way tenacity yields ``DoSleep``.

    An effect knows how to run itself with the sync client (:meth:`run`, on a
    WSGI thread) and the async one (:meth:`arun`, on the event loop); it must
    raise :class:`~seawall.exceptions.StorageError` for a failed or timed-out
    storage call so the layer can apply its failure policy. Drivers own the
    effects that touch the request itself (:class:`ReadBody`,
    :class:`ReplaceBody`).
    """

    def run(self) -> Any:
        """Run the I/O synchronously and return its result."""

    def arun(self) -> Awaitable[Any]:
        """Run the I/O on the event loop and return its result."""


@dataclass(frozen=True, slots=True)
class ReadBody:
    """Ask the driver for the request body, at most *limit* bytes.

    The driver answers with the body ``bytes`` and replays them to the app
    byte-identical. If the body is longer than *limit* the driver stops
    reading and answers ``None`` instead, without buffering the rest.
    """

    limit: int


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    """Ask the driver to give the app *body* instead of the original one.

    *body* is plain: the driver drops the request's ``Content-Encoding``
    (a layer that read a gzip body hands back what it decoded).
    """

    body: bytes
    content_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Flow: TypeAlias = Generator[Any, Any, "Continue | Respond | None"]
