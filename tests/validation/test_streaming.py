"""The body is read only when a check needs it, cut off early, and replayed exactly."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall import Seawall, Validation
from seawall._core.decisions import ReadBody, ReplaceBody
from seawall._core.request import RequestView
from tests.validation.helpers import echo_client

MB = 1_000_000
CHUNK = 64 * 1024
TOTAL = 10 * MB


class _App:
    """An app that records whether it was called."""

    def __init__(self) -> None:
        self.called = False

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def wsgi(self, environ: Any, start_response: Any) -> Any:
        self.called = True
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"ok"]


class _Stream:
    """A 10 MB chunked body that counts what was pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = TOTAL
        size = min(size, TOTAL - self.pulled)
        self.pulled += size
        return b"{" * size


def _scope(content_type: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", content_type), (b"transfer-encoding", b"chunked")],
    }


class TestTenMegabytesChunked:
    def _asgi(self, content_type: bytes) -> tuple[_App, int, int]:
        app = _App()
        wall = Seawall(app.asgi, layers=[Validation(max_body=MB)], interface="asgi")
        pulled = 0
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            size = min(CHUNK, TOTAL - pulled)
            pulled += size
            return {"type": "http.request", "body": b"{" * size, "more_body": pulled < TOTAL}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(wall(_scope(content_type), receive, send))
        return app, sent[0]["status"], pulled

    def _wsgi(self, content_type: str) -> tuple[_App, str, int]:
        app = _App()
        wall = Seawall(app.wsgi, layers=[Validation(max_body=MB)], interface="wsgi")
        stream = _Stream()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "CONTENT_TYPE": content_type,
            "HTTP_TRANSFER_ENCODING": "chunked",
            "wsgi.input": stream,
            "wsgi.url_scheme": "http",
        }
        statuses: list[str] = []
        result = wall(environ, lambda status, headers, exc_info=None: statuses.append(status))
        b"".join(result)
        getattr(result, "close", lambda: None)()
        return app, statuses[-1], stream.pulled

    def test_asgi_read_body_is_cut_off_before_the_app(self) -> None:
        app, status, pulled = self._asgi(b"application/json")
        assert status == 413
        assert not app.called
        assert pulled <= MB + CHUNK  # the rest of the 10 MB was never received

    def test_wsgi_read_body_is_cut_off_before_the_app(self) -> None:
        app, status, pulled = self._wsgi("application/json")
        assert status.startswith("413")
        assert not app.called
        assert pulled <= MB + CHUNK

    def test_streamed_body_is_cut_off_while_the_app_reads(self) -> None:
        # A body no check needs is not read by the layer: the driver counts it
        # as the app reads and stops it at the limit.
        _, status, pulled = self._asgi(b"application/octet-stream")
        assert status == 413
        assert pulled <= MB + CHUNK
        _, wstatus, wpulled = self._wsgi("application/octet-stream")
        assert wstatus.startswith("413")
        assert wpulled <= MB + CHUNK


_CLIENTS: dict[tuple[str, str], Any] = {}


def _cached(interface: str, kind: str) -> Any:
    # Hypothesis runs many examples per test: build each client once.
    key = (interface, kind)
    if key not in _CLIENTS:
        if kind == "form":
            layer = Validation(read_body=True, max_query_params=None, max_body=8192)
        else:
            layer = Validation(
                sanitize={"/": ["untouched"]}, schemas={"/": lambda d: None}, threats="monitor"
            )
        _CLIENTS[key] = echo_client(interface, [layer])
    return _CLIENTS[key]


class TestReplay:
    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(body=st.binary(min_size=1, max_size=4096))
    def test_random_binary_bodies_reach_the_app_byte_identical(
        self, interface: str, body: bytes
    ) -> None:
        # read_body makes the layer read (and parse) every form body.
        client = _cached(interface, "form")
        ctype = {"content-type": "application/x-www-form-urlencoded"}
        response = client.post("/", content=body, headers=ctype)
        assert response.status_code == 200
        assert response.content == body

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        doc=st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        ),
        indent=st.sampled_from([None, 0, 2, "\t"]),
    )
    def test_json_bodies_no_rule_touches_are_byte_identical(
        self, interface: str, doc: Any, indent: Any
    ) -> None:
        body = json.dumps(doc, indent=indent, ensure_ascii=False).encode()
        client = _cached(interface, "json")
        response = client.post("/", content=body, headers={"content-type": "application/json"})
        assert response.content == body

    def test_the_flow_yields_no_replace_when_nothing_changed(self) -> None:
        layer = Validation(sanitize={"/": ["title"]})
        view = RequestView(
            method="POST",
            path="/",
            headers=[(b"content-length", b"14"), (b"content-type", b"application/json")],
        )
        flow = layer.on_request(view)
        assert next(flow) == ReadBody(1_000_000)
        with pytest.raises(StopIteration) as stop:
            flow.send(b'{"title": "a"}')
        assert stop.value.value is None

    def test_the_flow_replaces_a_sanitized_body(self) -> None:
        layer = Validation(sanitize={"/": ["title"]})
        view = RequestView(
            method="POST",
            path="/",
            headers=[(b"content-length", b"9"), (b"content-type", b"application/json")],
        )
        flow = layer.on_request(view)
        next(flow)
        effect = flow.send(b'{"title": "<script>x</script>ok"}')
        assert isinstance(effect, ReplaceBody)
        assert json.loads(effect.body) == {"title": "ok"}


def test_wsgi_app_can_read_a_replayed_body_in_chunks() -> None:
    seen: list[bytes] = []

    def app(environ: Any, start_response: Any) -> Any:
        stream = environ["wsgi.input"]
        while chunk := stream.read(3):
            seen.append(chunk)
        start_response("200 OK", [])
        return [b""]

    wall = Seawall(app, layers=[Validation()], interface="wsgi")
    body = b'{"a": [1, 2, 3]}'
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }
    # A server calls close(): it is what ends the request (and unbinds it).
    result = wall(environ, lambda *a: None)
    try:
        list(result)
    finally:
        result.close()
    assert b"".join(seen) == body
    assert all(len(c) <= 3 for c in seen)


@pytest.mark.parametrize(
    ("settings", "content_type"),
    [
        pytest.param({}, b"application/octet-stream", id="no check reads this type"),
        pytest.param(
            {"json": False, "threats": "block", "threat_body": False},
            b"application/json",
            id="json off",
        ),
    ],
)
def test_a_body_no_check_needs_streams_chunk_by_chunk(
    settings: dict[str, Any], content_type: bytes
) -> None:
    # The app sees each chunk as its own message, as the server sent it: the
    # layer did not read, join or replay the body.
    chunks = [b"[1," * 100, b"2," * 100, b"3]"]
    seen: list[bytes] = []
    pulled = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message.get("body", b""))
            # The next chunk is pulled only once the app asks for it.
            assert pulled == len(seen)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {
            "type": "http.request",
            "body": chunks[pulled - 1],
            "more_body": pulled < len(chunks),
        }

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    wall = Seawall(app, layers=[Validation(**settings)], interface="asgi")
    asyncio.run(wall(_scope(content_type), receive, send))
    assert sent[0]["status"] == 200
    assert seen == chunks
