"""Apps and helpers for the validation tests."""

from __future__ import annotations

import json
from typing import Any

import httpx

from seawall import Seawall
from tests.apps import client_for


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echo the body, with what the app saw of Content-Length and the query."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    length = dict(scope["headers"]).get(b"content-length", b"").decode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"x-seen-length", length.encode()),
                (b"x-seen-query", scope.get("query_string", b"")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_echo(environ: dict[str, Any], start_response: Any) -> Any:
    """The same as :func:`asgi_echo`, reading ``wsgi.input`` to its end."""
    body = environ["wsgi.input"].read()
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("X-Seen-Length", environ.get("CONTENT_LENGTH", "")),
            ("X-Seen-Query", environ.get("QUERY_STRING", "")),
        ],
    )
    return [body]


def echo_client(interface: str, layers: list[Any], **kw: Any) -> httpx.Client:
    app = asgi_echo if interface == "asgi" else wsgi_echo
    return client_for(Seawall(app, layers=layers, **kw))


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    doc = json.loads(response.content)
    assert doc["status"] == response.status_code
    return doc  # type: ignore[no-any-return]


class Probe:
    """A layer that records what the request looked like to the layers."""

    name = "probe"
    order = 950

    def __init__(self) -> None:
        self.header_count = 0
        self.header_bytes = 0
        self.target = ""

    def on_request(self, request: Any) -> None:
        self.header_count = request.header_count
        self.header_bytes = sum(
            len(name) + len(value) for name, values in request.headers.items() for value in values
        )
        self.target = request.target
