"""RFC 9457 problem details: the body of every response seawall writes itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

__all__ = ["IANA_PROBLEM_TYPES", "PROBLEM_CONTENT_TYPE", "problem_body", "problem_type_uri"]

PROBLEM_CONTENT_TYPE = "application/problem+json"

#: Problem types registered with IANA by draft-ietf-httpapi-ratelimit-headers;
#: these get the registry's URI, our own get a ``urn:seawall:problem:`` URN.
IANA_PROBLEM_TYPES = frozenset(
    {"quota-exceeded", "temporary-reduced-capacity", "abnormal-usage-detected"}
)
_IANA_BASE = "https://iana.org/assignments/http-problem-types#"
_OWN_BASE = "urn:seawall:problem:"


def problem_type_uri(slug: str) -> str:
    """Return the ``type`` URI for a problem *slug* (``"quota-exceeded"``).

    A slug that already looks like a URI (``about:blank``, ``https://...``)
    is returned unchanged.
    """
    if ":" in slug:
        return slug
    if slug in IANA_PROBLEM_TYPES:
        return _IANA_BASE + slug
    return _OWN_BASE + slug


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    problem_type: str = "about:blank",
    title: str | None = None,
    detail: str | None = None,
    instance: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialise a problem details object to compact UTF-8 JSON bytes.

    Extension members never override the standard members. Callers must pass
    only safe text in *detail* and *extensions*: this function does not know
    which parts of a request were hostile.
    """
    doc: dict[str, Any] = {
        "type": problem_type_uri(problem_type),
        "title": title or _phrase(status),
        "status": status,
    }
    if detail:
        doc["detail"] = detail
    if instance:
        doc["instance"] = instance
    if extensions:
        for key, value in extensions.items():
            doc.setdefault(key, value)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, default=str).encode()
