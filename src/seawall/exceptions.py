"""The exceptions seawall raises.

::

    SeawallError
    ├── ConfigurationError      bad arguments or settings; raised at startup
    ├── StorageError            a storage (Redis, memcached...) failed or timed out
    └── Rejected                a layer refused the request (abstract)
        ├── RateLimited         status_hint 429
        ├── CircuitOpen         status_hint 503
        ├── Overloaded          status_hint 503
        ├── RequestTimeout      status_hint 504
        └── ValidationFailed    status_hint 400, 403, 405, 413, 414, 415, 422 or 431

Handler decorators raise a :class:`Rejected`; the drivers and the framework
adapters render it as an RFC 9457 ``application/problem+json`` response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "CircuitOpen",
    "ConfigurationError",
    "Overloaded",
    "RateLimited",
    "Rejected",
    "RequestTimeout",
    "SeawallError",
    "StorageError",
    "ValidationFailed",
]


class SeawallError(Exception):
    """Base class of every exception seawall raises."""


class ConfigurationError(SeawallError, ValueError):
    """A setting is unknown, ill-typed or out of range.

    The message names the key and the expected form, so a typo in a settings
    file fails at startup rather than silently doing nothing.
    """


class StorageError(SeawallError):
    """A storage operation failed or took longer than its timeout.

    Wraps the underlying ``redis``/``limits`` error (``raise ... from exc``).
    Layers catch it and apply their ``on_storage_error`` policy.
    """


class Rejected(SeawallError):
    """A layer refused the request; rendered as ``application/problem+json``.

    Abstract: raise one of the subclasses. Carries everything a renderer
    needs: :attr:`status_hint`, a problem :attr:`problem_type` slug, a
    :attr:`title`, a safe :attr:`detail` (never the offending input), extra
    response :attr:`headers` and problem :attr:`extensions`.
    """

    status_hint: ClassVar[int] = 400
    problem_type: ClassVar[str] = "about:blank"
    title: ClassVar[str] = "Bad Request"
    #: Whether the rendered problem names the request's path as its ``instance``.
    echo_instance: ClassVar[bool] = True

    def __init__(
        self,
        detail: str = "",
        *,
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        if type(self) is Rejected:
            msg = "Rejected is abstract: raise RateLimited, CircuitOpen, ValidationFailed, ..."
            raise TypeError(msg)
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.status = status if status is not None else self.status_hint
        self.headers = list(headers)
        self.extensions = dict(extensions or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, status={self.status})"


def _retry_after_headers(retry_after: float | None) -> list[tuple[str, str]]:
    if retry_after is None:
        return []
    # Retry-After is whole seconds; round up so a client never retries early.
    seconds = max(0, int(retry_after) + (0 if float(retry_after).is_integer() else 1))
    return [("Retry-After", str(seconds))]


class RateLimited(Rejected):
    """The client used up a rate limit (429 ``quota-exceeded``)."""

    status_hint = 429
    problem_type = "quota-exceeded"
    title = "Too Many Requests"

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: float | None = None,
        policy: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        ext = dict(extensions or {})
        if policy is not None:
            ext.setdefault("policy", policy)
        if retry_after is not None:
            ext.setdefault("retry_after", max(0, round(retry_after)))
        super().__init__(
            detail, headers=[*_retry_after_headers(retry_after), *headers], extensions=ext
        )
        self.retry_after = retry_after
        self.policy = policy


class CircuitOpen(Rejected):
    """A circuit breaker is open (503 ``temporary-reduced-capacity``)."""

    status_hint = 503
    problem_type = "temporary-reduced-capacity"
    title = "Service Unavailable"

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: float | None = None,
        breaker: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        ext = dict(extensions or {})
        if breaker is not None:
            ext.setdefault("breaker", breaker)
        super().__init__(
            detail, headers=[*_retry_after_headers(retry_after), *headers], extensions=ext
        )
        self.retry_after = retry_after
        self.breaker = breaker


class Overloaded(Rejected):
    """The service is shedding load or out of concurrency slots (503)."""

    status_hint = 503
    problem_type = "temporary-reduced-capacity"
    title = "Service Unavailable"

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: float | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            detail, headers=[*_retry_after_headers(retry_after), *headers], extensions=extensions
        )
        self.retry_after = retry_after


class RequestTimeout(Rejected):
    """The handler did not answer within its deadline (504)."""

    status_hint = 504
    problem_type = "timeout"
    title = "Gateway Timeout"


class ValidationFailed(Rejected):
    """The request is malformed, too large or not allowed.

    *status* picks the precise code (400, 403, 405, 413, 414, 415, 422, 431);
    *errors* is a list of ``{"loc", "msg", "type"}`` dicts that never echo
    more than a few characters of the input.
    """

    status_hint = 400
    problem_type = "invalid-request"
    title = "Bad Request"
    # The path may be the payload (a traversal, an injection in a segment):
    # a refusal never echoes what the client sent.
    echo_instance = False

    def __init__(
        self,
        detail: str = "",
        *,
        status: int = 400,
        problem_type: str | None = None,
        title: str | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
        headers: Sequence[tuple[str, str]] = (),
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        ext = dict(extensions or {})
        if errors:
            ext["errors"] = [dict(e) for e in errors]
        super().__init__(detail, status=status, headers=headers, extensions=ext)
        if problem_type is not None:
            self.problem_type = problem_type  # type: ignore[misc]
        if title is not None:
            self.title = title  # type: ignore[misc]
        self.errors = [dict(e) for e in errors]
