"""The WSGI driver against generated apps, requests and stacks (hypothesis).

The WSGI twin of ``test_conformance_asgi.py``. The driver runs between two
``wsgiref.validate`` validators, so PEP 3333 is checked on both of its
sides (toward the server and toward the app), under a small server that
follows PEP 3333's rules for ``write()``, ``exc_info`` and ``close()``.
What the server and the app saw is then checked against the driver's
promises:

- the app's status, headers and chunks reach the server unchanged, a
  generator's chunks each before it resumes;
- the app reads the request body byte-identical, whatever a layer read first;
- the request id goes out exactly once, the app's own if it set one;
- an exception before any body byte went out becomes a problem response
  when ErrorCapture is there (a ``Rejected`` always does), and propagates
  otherwise; once a byte went out it propagates;
- the app's iterable is closed exactly once, and every layer hears
  ``on_complete`` exactly once, after that close, with the status the
  server saw;
- the request's logging context is gone afterwards.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seawall
from seawall._core.layer import Outcome
from seawall.exceptions import RateLimited
from tests.drivers.test_conformance_asgi import (
    LAYERS,
    SMALL_BODY,
    Boom,
    assert_released,
    gone_at,
    requests,
    stacks,
    too_large,
)

PROBLEM = "application/problem+json"


class Probe:
    """The outermost layer (``order`` 0): records what the driver tells the layers."""

    name: ClassVar[str] = "probe"
    order: ClassVar[int] = 0

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests = 0
        self.outcomes: list[Outcome] = []
        self.closed_first: list[int] = []

    def on_request(self, request: Any) -> None:
        self.requests += 1

    def on_complete(self, request: Any, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.closed_first.append(self.script.closes)


@dataclass
class Script:
    status: str
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    kind: str  # "list", "generator", "closing" (an iterable with close()), "write"
    read_body: bool
    raise_at: str | None  # None, "start" (before start_response), "returned", "chunk"
    rejected: bool
    # What the app saw, filled in as it runs.
    called: bool = False
    received: bytes | None = None
    closes: int = 0
    lags: list[int] = field(default_factory=list)


headers_st = st.lists(
    st.tuples(
        st.sampled_from(["X-App", "Set-Cookie", "Cache-Control"]),
        st.binary(max_size=12).map(lambda b: b.hex()),
    ),
    max_size=3,
).map(lambda h: [("Content-Type", "text/plain"), *h])

scripts = st.builds(
    Script,
    status=st.sampled_from(
        [
            "200 OK",
            "201 Created",
            "302 Found",
            "404 Not Found",
            "418 I'm a teapot",
            "500 Internal Server Error",
            "503 Service Unavailable",
        ]
    ),
    headers=st.one_of(headers_st, headers_st.map(lambda h: [*h, ("X-Request-ID", "from-the-app")])),
    chunks=st.lists(st.binary(max_size=64), min_size=1, max_size=5),
    kind=st.sampled_from(["list", "generator", "closing", "write"]),
    read_body=st.booleans(),
    raise_at=st.sampled_from([None, None, "start", "returned", "chunk"]),
    rejected=st.booleans(),
)


class Closing:
    """An app iterable with a ``close()`` the driver must call."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.script.chunks)

    def close(self) -> None:
        self.script.closes += 1


def make_app(script: Script, server: Server) -> Any:
    def fail() -> None:
        if script.rejected:
            raise RateLimited("generated", retry_after=3)
        raise Boom("generated")

    def body(start_response: Any) -> Iterator[bytes]:
        try:
            start_response(script.status, list(script.headers))
            for index, chunk in enumerate(script.chunks):
                before = len(server.chunks)
                yield chunk
                script.lags.append(len(server.chunks) - before)
                if index == 0 and script.raise_at == "chunk":
                    fail()
        finally:
            script.closes += 1

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        script.called = True
        if script.read_body:
            stream = environ["wsgi.input"]
            if environ.get("CONTENT_LENGTH"):
                script.received = stream.read(int(environ["CONTENT_LENGTH"]))
            else:  # chunked: the server marks the stream's end (wsgi.input_terminated)
                script.received = b"".join(iter(lambda: stream.read(64), b""))
        if script.raise_at == "start":
            fail()
        if script.kind == "generator":
            return body(start_response)
        write = start_response(script.status, list(script.headers))
        chunks = script.chunks
        if script.kind == "write":
            write(chunks[0])
            chunks = chunks[1:]
        if script.raise_at in ("returned", "chunk"):
            fail()
        if script.kind == "closing":
            return Closing(script)
        return list(chunks)

    return app


class Server:
    """A WSGI server by PEP 3333's rules, in process."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, list[tuple[str, str]]]] = []
        self.chunks: list[bytes] = []
        self.headers_sent = False
        self.gone = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        else:
            assert not self.starts, "start_response called twice without exc_info"
        self.starts.append((status, headers))
        return self.write

    def write(self, data: bytes) -> None:
        assert self.starts, "write() before start_response"
        self.headers_sent = True
        self.chunks.append(data)

    def serve(self, app: Any, request: dict[str, Any], gone_at: int | None) -> BaseException | None:
        """Serve *request*; the client leaves as chunk number *gone_at* (from 0) comes."""
        body = b"".join(request["body"])
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request["method"],
            "PATH_INFO": "/things/1",
            "QUERY_STRING": "",
            "SCRIPT_NAME": "",
            "CONTENT_TYPE": request["content_type"].decode(),
            "wsgi.input": io.BytesIO(body),
        }
        if request["framing"] == "length":
            environ["CONTENT_LENGTH"] = str(len(body))
        else:
            environ["wsgi.input_terminated"] = True
            if request["framing"] == "chunked":
                environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        if request["rid"] is not None:
            environ["HTTP_X_REQUEST_ID"] = request["rid"].decode()
        setup_testing_defaults(environ)
        result = None
        try:
            result = app(environ, self.start_response)
            for index, data in enumerate(result):
                if index == gone_at:
                    self.gone = True
                    break
                if data:
                    self.headers_sent = True
                    self.chunks.append(data)
        except Exception as exc:
            return exc
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            # The request's logging context went with it.
            assert seawall.request_id() is None
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, request=requests, names=stacks, gone_at=gone_at)
def test_wsgi_driver_keeps_its_promises(
    script: Script, request: dict[str, Any], names: list[str], gone_at: int | None
) -> None:
    probe = Probe(script)
    server = Server()
    layers = [LAYERS[name]() for name in names]
    inner = validator(make_app(script, server))
    wall = seawall.Seawall(inner, layers=[*layers, probe], interface="wsgi")
    with warnings.catch_warnings():
        # wsgiref.validate warns where PEP 3333 says "should"; turned into
        # errors, a warning the driver causes fails the example.
        warnings.simplefilter("error")
        raised = server.serve(validator(wall), request, gone_at)

    assert probe.requests == 1
    assert len(probe.outcomes) == 1
    outcome = probe.outcomes[0]
    assert_released(layers)
    # Whether the app returned an iterable with a close() of its own (not if
    # its read of the body failed first).
    closable = (
        script.called
        and not (script.read_body and too_large(request, names))
        and (
            (script.kind == "closing" and script.raise_at is None)
            or (script.kind == "generator" and script.raise_at != "start")
        )
    )
    if server.gone:
        # The server stopped iterating and closed: the app's iterable is
        # closed, and a response cut short with no exception is a disconnect.
        assert raised is None
        if closable:
            assert script.closes == 1
        assert outcome.disconnected == (outcome.exception is None)
        return
    final_status, final_headers = server.starts[-1] if server.starts else (None, [])
    code = None if final_status is None else int(final_status[:3])

    if not script.called:
        # A layer refused the request: a complete problem response of its own.
        assert raised is None
        assert outcome.responded_by is not None
        assert len(server.starts) == 1
        assert code is not None
        assert 400 <= code < 600
        assert dict(final_headers)["Content-Type"] == PROBLEM
        assert outcome.status == code
        return

    if script.read_body and too_large(request, names):
        # The app's read failed (it did not look): our 413, complete.
        assert raised is None
        assert code == 413
        assert dict(final_headers)["Content-Type"] == PROBLEM
        assert json.loads(b"".join(server.chunks))["max_body"] == SMALL_BODY
        assert outcome.status == 413
        return
    if script.read_body:
        assert script.received == b"".join(request["body"])
    generator = script.kind == "generator"
    # A generator raises only while iterated: "returned" does not apply to it.
    normal = script.raise_at is None or (generator and script.raise_at == "returned")
    if closable:
        # The app's iterable was closed once, before the layers heard the end.
        assert script.closes == 1
        assert probe.closed_first == [1]

    if normal:
        assert raised is None
        assert len(server.starts) == 1
        assert final_status == script.status
        _assert_subsequence(script.headers, final_headers)
        rids = [v for k, v in final_headers if k.lower() == "x-request-id"]
        assert len(rids) == 1
        if ("X-Request-ID", "from-the-app") in script.headers:
            assert rids == ["from-the-app"]
        elif request["rid"] == b"abc-123":
            assert rids == ["abc-123"]
        else:
            assert rids[0] != "<bad id>"
        assert [c for c in server.chunks if c] == [c for c in script.chunks if c]
        if generator:
            # Streaming: each chunk reached the server before the app resumed.
            assert script.lags == [1 if c else 0 for c in script.chunks]
        assert outcome.status == code
        assert outcome.exception is None
        return

    exc_type: type[BaseException] = RateLimited if script.rejected else Boom
    answered = script.rejected or "errors" in names
    # PEP 3333: write() sends the headers; iteration, once a chunk is not empty.
    sent = script.raise_at != "start" and (
        script.kind == "write" or (generator and script.chunks[0] != b"")
    )
    if sent:
        assert isinstance(raised, exc_type)
        assert server.chunks[0] == script.chunks[0]
        assert final_status == script.status
    elif answered:
        assert raised is None
        status = 429 if script.rejected else 500
        assert code == status
        headers = dict(final_headers)
        assert headers["Content-Type"] == PROBLEM
        doc = json.loads(b"".join(server.chunks))
        assert doc["status"] == status
        assert doc["request_id"] == headers["X-Request-ID"]
        assert outcome.status == status
    else:
        assert isinstance(raised, exc_type)
        assert b"".join(server.chunks) == b""
    assert isinstance(outcome.exception, exc_type)


def _assert_subsequence(expected: list[tuple[str, str]], actual: list[tuple[str, str]]) -> None:
    position = 0
    for item in actual:
        if position < len(expected) and item == expected[position]:
            position += 1
    assert position == len(expected), (expected, actual)
