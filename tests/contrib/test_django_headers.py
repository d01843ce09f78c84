"""How the Django middleware writes the layers' header edits onto Django's response."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.http import HttpResponse
from django.http.response import BadHeaderError

from seawall.contrib import django as adapter

RID = ("X-Request-ID", "x-request-id", "0123abcd")


def reference(response: Any, removed: set[str], added: list[tuple[Any, Any]]) -> None:
    """The edits through Django's public mapping: removals, then additions folded into
    one value per name, then the request id if no line carries one (the view's or a
    layer's is kept, as the ASGI and WSGI drivers keep the app's)."""
    headers = response.headers
    for name in removed:
        if name in headers:
            del headers[name]
    for name, value in added:
        if isinstance(name, str) and name.lower() == RID[1] and RID[0] in headers:
            continue
        old = headers.get(name)
        headers[name] = value if old is None else f"{old}, {value}"
    if RID[0] not in headers:
        headers[RID[0]] = RID[2]


def fresh() -> HttpResponse:
    response = HttpResponse(b"x", content_type="text/plain")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Request-ID"] = "from-the-app"
    response.headers["Link"] = "</a>; rel=preload"
    return response


CASES: list[tuple[set[str], list[tuple[Any, Any]]]] = [
    (set(), []),
    (set(), [("RateLimit", '"default";r=9;t=60'), ("Server-Timing", "total;dur=1.5")]),
    (set(), [("Link", "</b>; rel=preload"), ("link", "</c>; rel=preload")]),
    ({"cache-control"}, [("Cache-Control", "max-age=5")]),
    ({"link"}, []),
    (set(), [("x-request-id", "from-a-layer"), ("X-Other", "1")]),
    (set(), [("X-Latin", "caf\u00e9")]),
    (set(), [("X-Euro", "5 \u20ac")]),
    (set(), [("Link", "caf\u00e9")]),
    (set(), [("X-Number", 5), ("X-Bytes", b"raw")]),
    (set(), [(b"X-Bytes-Name", "v")]),
]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize(("removed", "added"), CASES)
def test_same_headers_as_djangos_own_path(
    monkeypatch: pytest.MonkeyPatch, direct: bool, removed: set[str], added: list[Any]
) -> None:
    """Stored lines, their order and their encoding match Django's ``__setitem__`` path."""
    monkeypatch.setattr(adapter, "_DIRECT", direct)
    expected = fresh()
    reference(expected, removed, added)
    got = fresh()
    adapter._write_headers(got.headers, removed, list(added), *RID)
    assert list(got.items()) == list(expected.items())
    assert got.headers._store == expected.headers._store


def test_the_direct_path_is_used_on_this_django() -> None:
    """The installed Django keeps its headers as the direct path expects."""
    assert adapter._DIRECT is True


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize(
    ("line", "error"),
    [
        (("X-Split", "a\r\nSet-Cookie: x=1"), BadHeaderError),
        (("X-Split", "a\nb"), BadHeaderError),
        (("X-Caf\u00e9", "1"), UnicodeError),
        (("X-Bad\nName", "1"), BadHeaderError),
    ],
)
def test_unsafe_lines_still_refused(
    monkeypatch: pytest.MonkeyPatch, direct: bool, line: tuple[str, str], error: type
) -> None:
    """Header injection and non-ASCII names raise as Django's own checks do."""
    monkeypatch.setattr(adapter, "_DIRECT", direct)
    with pytest.raises(error):
        adapter._write_headers(fresh().headers, set(), [line], *RID)


@pytest.mark.parametrize("direct", [True, False])
def test_an_unsafe_request_id_header_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """The request id line gets Django's checks too (its name comes from the settings)."""
    monkeypatch.setattr(adapter, "_DIRECT", direct)
    with pytest.raises(BadHeaderError):
        adapter._write_headers(fresh().headers, set(), [], "X-Id\nX-Other", "x-id\nx-other", "1")


def test_a_headers_subclass_takes_the_public_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A response whose headers mapping is not Django's own class is written through it."""
    writes: list[str] = []

    class Recording(adapter.ResponseHeaders):  # type: ignore[misc]
        def __setitem__(self, key: str, value: Any) -> None:
            writes.append(key)
            super().__setitem__(key, value)

    headers = Recording({})
    adapter._write_headers(headers, set(), [("X-A", "1")], *RID)
    assert writes == ["X-A", "X-Request-ID"]


class Edits:
    """Edits the response head every way a layer can."""

    name = "edits"

    def on_request(self, request: Any) -> None:
        request.response_headers.append(("Vary", "Accept"))

    def on_response(self, request: Any, response: Any) -> None:
        response.add("Vary", "Origin")
        response.add("X-Latin", "caf\u00e9")
        response.add("X-Request-ID", "a-layer-id")
        response.set("Content-Type", "text/x-edited")


def run(mode: str, path: str, **headers: str) -> Any:
    import asyncio

    from django.test import AsyncClient, Client

    if mode == "sync":
        return Client().get(path, headers=headers)

    async def get() -> Any:
        return await AsyncClient().get(path, headers=headers)

    return asyncio.run(get())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_layer_edits_reach_the_response(mode: str) -> None:
    """Folded lines, a replaced header, latin-1 text and the request id, sync and async."""
    from django.test import override_settings

    with override_settings(SEAWALL={"layers": [Edits()]}):
        response = run(mode, "/items/1", x_request_id="kept-id.1")
    assert response.status_code == 200
    assert response.headers["Vary"] == "Accept, Origin"
    assert response.headers["X-Latin"] == "caf\u00e9"
    assert response.headers["Content-Type"] == "text/x-edited"
    # A layer's own id line is kept, as on the ASGI and WSGI drivers; the
    # view still saw the client's id.
    assert response.headers["X-Request-ID"] == "a-layer-id"
    assert json.loads(response.content)["rid"] == "kept-id.1"
