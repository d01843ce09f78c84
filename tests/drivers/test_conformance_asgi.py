"""The ASGI driver against generated apps, requests and stacks (hypothesis).

Each example builds a stack from the shipped layers (limits loose enough that
none refuses unless the app misbehaves), an app that follows a generated
script (status, headers, streamed chunks, whether it reads the body, where it
raises) and a request (method, streamed body, request id), then checks what
the server and the app saw against the driver's promises:

- at most one ``http.response.start`` ever reaches the server;
- what the app sends reaches the server unchanged and at once (its chunks,
  in order, each before the app's next step), except a 500 start, held
  until the app returns;
- the app reads the request body byte-identical, whatever a layer read first;
- the request id goes out exactly once, the app's own if it set one;
- an exception before the response started becomes a problem response when
  ErrorCapture is there (a ``Rejected`` always does), and propagates
  otherwise; after the start it always propagates, with no second start;
- every layer hears ``on_complete`` exactly once, after the app returned,
  with the status the server saw and the exception that was raised;
- the request's logging context is gone afterwards.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seawall
from seawall import (
    CircuitBreaker,
    ConcurrencyLimit,
    ErrorCapture,
    RateLimit,
    Timeout,
    Timing,
    Validation,
)
from seawall._core.layer import Outcome
from seawall.exceptions import RateLimited

PROBLEM = b"application/problem+json"


class Boom(RuntimeError):
    """What a generated app raises."""


class Probe:
    """A layer that records what the driver tells the layers.

    Outermost (``order`` 0), so it sees every request, whichever layer answers.
    """

    name: ClassVar[str] = "probe"
    order: ClassVar[int] = 0

    def __init__(self) -> None:
        self.requests = 0
        self.outcomes: list[Outcome] = []
        self.app_returned_first: list[bool] = []
        self.app_called = False
        self.app_done = False

    def on_request(self, request: Any) -> None:
        self.requests += 1

    def on_complete(self, request: Any, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.app_returned_first.append(self.app_done)


LAYERS = {
    "timing": lambda: Timing(response_time_header=True),
    "errors": ErrorCapture,
    "ratelimit": lambda: RateLimit("1000000/minute"),
    "validation": lambda: Validation(read_body=True),
    "breaker": lambda: CircuitBreaker(per="route", failure_rate_threshold=0.5),
    "concurrency": lambda: ConcurrencyLimit(1000),
    "timeout": lambda: Timeout(30.0),
    # A body limit some generated bodies pass: over it, a Validation layer
    # refuses (413) before the app runs, or the app's own read fails with
    # 413, if the request does not say its length.
    "small_body": lambda: Validation(max_body=SMALL_BODY),
}
SMALL_BODY = 100


@dataclass
class Script:
    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]
    read_body: bool
    raise_at: str | None  # None, "start", "chunk" (after the first chunk), "end"
    rejected: bool  # raise RateLimited rather than a plain exception
    # What the app saw, filled in as it runs.
    received: list[dict[str, Any]] = field(default_factory=list)
    lags: list[int] = field(default_factory=list)


headers_st = st.lists(
    st.tuples(
        st.sampled_from([b"content-type", b"x-app", b"set-cookie", b"cache-control"]),
        st.binary(max_size=12).map(lambda b: b.hex().encode()),
    ),
    max_size=4,
)

scripts = st.builds(
    Script,
    status=st.sampled_from([200, 201, 204, 302, 404, 418, 500, 503]),
    headers=st.one_of(
        headers_st,
        headers_st.map(lambda h: [*h, (b"x-request-id", b"from-the-app")]),
    ),
    chunks=st.lists(st.binary(max_size=64), min_size=1, max_size=5),
    read_body=st.booleans(),
    raise_at=st.sampled_from([None, None, "start", "chunk", "end"]),
    rejected=st.booleans(),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


json_bodies = st.tuples(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    ).map(lambda doc: json.dumps(doc).encode()),
    st.lists(st.integers(min_value=0, max_value=300), max_size=3),
).map(lambda pair: _split(*pair))

requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "PUT"]),
        "content_type": st.sampled_from(
            [b"application/octet-stream", b"application/json", b"application/x-www-form-urlencoded"]
        ),
        # Bodies a layer reads (JSON, form) are also the bodies it may refuse.
        "body": st.one_of(
            st.lists(st.binary(max_size=200), min_size=1, max_size=4),
            json_bodies,
            st.just([b"a=1&b=", b"2&c=%20x"]),
        ),
        "rid": st.sampled_from([None, b"abc-123", b"<bad id>"]),
        # How the request frames its body: Content-Length, chunked, or
        # neither (HTTP/2 may send a body without either). Without a length
        # a body limit can only be checked as the body is read.
        "framing": st.sampled_from(["length", "chunked", "none"]),
    }
)


def too_large(request: dict[str, Any], names: list[str]) -> bool:
    """Whether the app's read of the body must fail with 413.

    A GET that frames no body is believed to have none (docs/validation.md):
    its body is not counted.
    """
    unframed_get = request["framing"] == "none" and request["method"] == "GET"
    return (
        "small_body" in names and sum(map(len, request["body"])) > SMALL_BODY and not unframed_get
    )


# The client leaves at the server's nth send (if the response has one).
gone_at = st.one_of(st.none(), st.none(), st.integers(min_value=0, max_value=4))


def assert_released(layers: list[Any]) -> None:
    """No layer still holds a slot for the request that ended."""
    for layer in layers:
        if layer.name == "concurrency":
            assert layer.stats()["in_flight"] == 0


stacks = st.lists(st.sampled_from(sorted(LAYERS)), unique=True, max_size=len(LAYERS))


def make_app(script: Script, server_log: list[dict[str, Any]], probe: Probe) -> Any:
    def fail() -> None:
        if script.rejected:
            raise RateLimited("generated", retry_after=3)
        raise Boom("generated")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        probe.app_called = True
        try:
            if script.read_body:
                while True:
                    message = await receive()
                    script.received.append(message)
                    if not message.get("more_body", False):
                        break
            if script.raise_at == "start":
                fail()
            await send(
                {"type": "http.response.start", "status": script.status, "headers": script.headers}
            )
            last = len(script.chunks) - 1
            for index, chunk in enumerate(script.chunks):
                before = len(server_log)
                await send({"type": "http.response.body", "body": chunk, "more_body": index < last})
                script.lags.append(len(server_log) - before)
                if index == 0 and script.raise_at == "chunk":
                    fail()
            if script.raise_at == "end":
                fail()
        finally:
            probe.app_done = True

    return app


@dataclass
class Gone:
    """The client leaves when the server's send number *at* (from 0) is tried."""

    at: int | None
    tried: int = 0
    after: int = 0  # sends tried once the client had gone

    @property
    def happened(self) -> bool:
        return self.at is not None and self.tried > self.at


def run(
    app: Any, request: dict[str, Any], log: list[dict[str, Any]], gone: Gone
) -> BaseException | None:
    """Serve *request* to *app*; what it sent lands in *log*; what it raised is returned."""
    size = sum(map(len, request["body"]))
    headers = [(b"host", b"test"), (b"content-type", request["content_type"])]
    if request["framing"] == "length":
        headers.append((b"content-length", str(size).encode()))
    elif request["framing"] == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
    if request["rid"] is not None:
        headers.append((b"x-request-id", request["rid"]))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": "/things/1",
        "raw_path": b"/things/1",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    body = list(request["body"])

    async def receive() -> dict[str, Any]:
        if body:
            chunk = body.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(body)}
        # Past the end, a server's receive waits for the client to leave; a
        # driver that lost a message would hang here: say so at once instead.
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.happened:
            gone.after += 1
        gone.tried += 1
        if gone.happened:
            raise OSError("the client went away")
        log.append(message)

    async def serve() -> BaseException | None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            return exc
        finally:
            # The request's logging context went with it.
            assert seawall.request_id() is None
        return None

    return asyncio.run(serve())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, request=requests, names=stacks, gone_at=gone_at)
def test_asgi_driver_keeps_its_promises(
    script: Script, request: dict[str, Any], names: list[str], gone_at: int | None
) -> None:
    probe = Probe()
    log: list[dict[str, Any]] = []
    layers = [LAYERS[name]() for name in names]
    wall = seawall.Seawall(make_app(script, log, probe), layers=[*layers, probe], interface="asgi")
    gone = Gone(gone_at)
    raised = run(wall, request, log, gone)

    starts = [m for m in log if m["type"] == "http.response.start"]
    bodies = [m for m in log if m["type"] == "http.response.body"]
    assert len(starts) <= 1
    assert all(m["type"] in ("http.response.start", "http.response.body") for m in log)

    # Every layer heard the end, once, after the app returned, and gave
    # back what it held.
    assert len(probe.outcomes) == 1
    outcome = probe.outcomes[0]
    assert wall.in_flight == 0
    assert_released(layers)

    if gone.happened:
        # The server's send failed: the error goes up, nothing more is sent.
        assert isinstance(raised, OSError)
        assert gone.after == 0
        return

    assert probe.requests == 1
    if not probe.app_called:
        # A layer refused the request: a complete problem response of its own.
        assert raised is None
        assert outcome.responded_by is not None
        assert len(starts) == 1
        assert 400 <= starts[0]["status"] < 600
        assert dict(starts[0]["headers"])[b"content-type"] == PROBLEM
        assert not bodies[-1].get("more_body", False)
        assert outcome.status == starts[0]["status"]
        return
    assert probe.app_returned_first == [True]

    sent_request = b"".join(request["body"])
    if script.read_body and too_large(request, names):
        # The app's read failed (it did not look): our 413, complete.
        assert raised is None
        assert [m["status"] for m in starts] == [413]
        assert dict(starts[0]["headers"])[b"content-type"] == PROBLEM
        assert json.loads(b"".join(m.get("body", b"") for m in bodies))["max_body"] == SMALL_BODY
        assert outcome.status == 413
        return
    if script.read_body:
        assert b"".join(m.get("body", b"") for m in script.received) == sent_request
        assert all(m["type"] == "http.request" for m in script.received)
        assert not script.received[-1].get("more_body", False)

    error_capture = "errors" in names
    if script.raise_at is None:
        # A normal response: forwarded as it came.
        assert raised is None
        assert len(starts) == 1
        start = starts[0]
        assert start["status"] == script.status
        out = list(start["headers"])
        _assert_subsequence(script.headers, out)
        rids = [v for k, v in out if k == b"x-request-id"]
        assert len(rids) == 1
        if (b"x-request-id", b"from-the-app") in script.headers:
            assert rids == [b"from-the-app"]
        elif request["rid"] == b"abc-123":
            assert rids == [b"abc-123"]
        else:
            assert rids[0] != b"<bad id>"
        assert [m.get("body", b"") for m in bodies] == script.chunks
        assert not bodies[-1].get("more_body", False)
        assert log[0] is start
        if script.status != 500:
            # Streaming: each chunk reached the server before the app went on.
            assert script.lags == [1] * len(script.chunks)
        assert outcome.status == script.status
        assert outcome.exception is None
        return

    exc_type: type[BaseException] = RateLimited if script.rejected else Boom
    started = script.raise_at != "start"
    held = started and script.status == 500
    answered = script.rejected or error_capture
    if started and not held:
        # After the start: no second start, the exception propagates.
        assert isinstance(raised, exc_type)
        assert len(starts) == 1
        assert starts[0]["status"] == script.status
        forwarded = [m.get("body", b"") for m in bodies]
        assert forwarded == script.chunks[: len(forwarded)]
        assert outcome.status == script.status
    elif answered:
        # Before anything went out: our problem response, complete.
        assert raised is None
        assert len(starts) == 1
        status = 429 if script.rejected else 500
        assert starts[0]["status"] == status
        headers = dict(starts[0]["headers"])
        assert headers[b"content-type"] == PROBLEM
        doc = json.loads(b"".join(m.get("body", b"") for m in bodies))
        assert doc["status"] == status
        assert doc["request_id"] == headers[b"x-request-id"].decode()
        assert "generated" not in json.dumps(doc) or script.rejected
        assert not bodies[-1].get("more_body", False)
        assert outcome.status == status
    else:
        # No ErrorCapture: the server's to answer, after what the app itself
        # sent (a held 500 goes out before the exception is re-raised).
        assert isinstance(raised, exc_type)
        if held:
            assert [m["status"] for m in starts] == [500]
            forwarded = [m.get("body", b"") for m in bodies]
            assert forwarded == script.chunks[: len(forwarded)]
        else:
            assert starts == []
        assert outcome.status in (None, 500)
    assert isinstance(outcome.exception, exc_type)


def _assert_subsequence(
    expected: list[tuple[bytes, bytes]], actual: list[tuple[bytes, bytes]]
) -> None:
    position = 0
    for item in actual:
        if position < len(expected) and item == expected[position]:
            position += 1
    assert position == len(expected), (expected, actual)
