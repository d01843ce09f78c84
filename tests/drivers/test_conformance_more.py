"""Protocol cases the generated conformance tests do not reach, each from an audit finding.

Every test here failed on the drivers before the fix it names:

1. a request stopped while its layers still decide gives back what the
   layers further out hold (shedding, concurrency slots);
2. an app's own 500 goes out when seawall has no answer for its exception;
3. a held 500 does not lose streaming, memory bounds or background tasks;
4. the app's messages and header lists are never changed in place;
5. WSGI never reads past the body (wsgiref hands over its socket);
6. a second lifespan admits requests again;
7. ``pathsend`` and a final ``zerocopy`` end the response;
8. WSGI keeps a list answer's length (servers add ``Content-Length``);
9. a body a layer read is replayed in few messages, with empty ones dropped.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Iterator
from typing import Any, ClassVar
from wsgiref.handlers import SimpleHandler
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from seawall import (
    ConcurrencyLimit,
    ErrorCapture,
    LoadShedding,
    ReadBody,
    Seawall,
    Timeout,
    Timing,
)
from seawall._core.layer import Outcome
from seawall._core.request import RequestView
from seawall.asgi import HOLD_BYTES

# -- helpers --


def http_scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 9),
        "server": ("127.0.0.1", 80),
        "extensions": {"http.response.pathsend": {}, "http.response.zerocopy": {}},
    }


async def empty_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def environ(**extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "t",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
    }
    env.update(extra)
    return env


def shedding() -> LoadShedding:
    return LoadShedding(
        cpu_threshold=None, memory_threshold=None, adaptive=False, max_concurrency=100
    )


class Now:
    """An effect that answers at once (a cache hit)."""

    def run(self) -> bool:
        return True

    async def arun(self) -> bool:
        return True


class Never:
    """An effect that never answers (a storage call hung): the request is cancelled in it."""

    reached: asyncio.Event | None = None

    def run(self) -> bool:  # pragma: no cover - the async tests only
        raise AssertionError

    async def arun(self) -> bool:
        assert Never.reached is not None
        Never.reached.set()
        await asyncio.Event().wait()
        return True  # pragma: no cover


class Outer:
    """Outermost: a flow, so the driver goes async before the layers inside it run."""

    name = "outer"
    order = 0

    def on_request(self, request: Any) -> Any:
        yield Now()


class Hang:
    """Innermost: waits for ever in a flow."""

    name = "hang"
    order = 950

    def __init__(self) -> None:
        self.active = True

    def on_request(self, request: Any) -> Any:
        if self.active:
            yield Never()


class Stop(BaseException):
    """What a gevent Timeout or GreenletExit is to the request: not an Exception."""


class Stopper:
    name = "stopper"
    order = 950

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def on_request(self, request: Any) -> None:
        raise self.exc


class Probe:
    """Records the outcomes the layers hear."""

    name = "probe"
    order = 0

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def on_complete(self, request: Any, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


class Reader:
    """Reads the request body (as Validation does for a JSON body)."""

    name = "reader"
    limit: ClassVar[int] = 10_000_000

    def on_request(self, request: Any) -> Any:
        yield ReadBody(self.limit)


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


# -- 1. a request stopped while the layers decide --


class TestStoppedWhileAdmitting:
    def test_asgi_cancelled_in_an_inner_layers_io_gives_back_the_outer_slots(self) -> None:
        shed, slots = shedding(), ConcurrencyLimit(10)
        wall = Seawall(ok_app, layers=[Outer(), shed, slots, Hang()], interface="asgi")

        async def main() -> None:
            Never.reached = asyncio.Event()
            task = asyncio.ensure_future(wall(http_scope("POST"), empty_receive, _drop))
            await Never.reached.wait()
            assert shed.in_flight == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert shed.in_flight == 0
        assert slots.stats()["in_flight"] == 0
        assert wall.in_flight == 0

    def test_asgi_later_requests_are_admitted_after_many_cancelled(self) -> None:
        shed = shedding()
        shed.max_concurrency = 5
        hang = Hang()
        wall = Seawall(ok_app, layers=[Outer(), shed, hang], interface="asgi")

        async def main() -> list[int]:
            for _ in range(10):
                Never.reached = asyncio.Event()
                task = asyncio.ensure_future(wall(http_scope("POST"), empty_receive, _drop))
                await Never.reached.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            hang.active = False
            statuses = []
            for _ in range(3):
                sent: list[Any] = []

                async def send(message: Any, sent: list[Any] = sent) -> None:
                    sent.append(message)

                await wall(http_scope("POST"), empty_receive, send)
                statuses.append(sent[0]["status"])
            return statuses

        assert asyncio.run(main()) == [200, 200, 200]
        assert shed.in_flight == 0

    @pytest.mark.parametrize("exc", [Stop(), KeyboardInterrupt()], ids=["greenlet", "interrupt"])
    def test_wsgi_base_exception_in_an_inner_layer_gives_back_the_outer_slots(
        self, exc: BaseException
    ) -> None:
        shed, slots = shedding(), ConcurrencyLimit(10)
        probe = Probe()

        def app(environ: Any, start_response: Any) -> Any:  # pragma: no cover - never called
            raise AssertionError

        wall = Seawall(app, layers=[Timing(), shed, slots, Stopper(exc), probe], interface="wsgi")
        with pytest.raises(type(exc)):
            wall(environ(), lambda *a: None)
        assert shed.in_flight == 0
        assert slots.stats()["in_flight"] == 0
        assert len(probe.outcomes) == 1  # once, as for any request

    @pytest.mark.layer_failures
    def test_wsgi_a_layer_error_raised_on_gives_back_the_outer_slots(self) -> None:
        shed = shedding()

        def app(environ: Any, start_response: Any) -> Any:  # pragma: no cover - never called
            raise AssertionError

        wall = Seawall(
            app,
            layers=[Timing(), shed, Stopper(RuntimeError("layer bug"))],
            interface="wsgi",
            on_layer_error="raise",
        )
        with pytest.raises(RuntimeError):
            wall(environ(), lambda *a: None)
        assert shed.in_flight == 0

    def test_every_shipped_on_complete_copes_with_a_request_it_never_saw(self) -> None:
        """The driver may now tell a layer that was running when the request stopped."""
        from seawall import CircuitBreaker, Metrics

        layers = [
            Timing(),
            shedding(),
            ConcurrencyLimit(10),
            CircuitBreaker(per="route"),
            Timeout(1.0),
            Metrics(),
        ]
        for layer in layers:
            view = RequestView(method="GET", path="/")
            layer.on_complete(view, Outcome(None, None, 0.01, None, "/"))  # type: ignore[attr-defined]
        assert layers[1].in_flight == 0  # type: ignore[attr-defined]


async def _drop(message: Any) -> None:
    pass


# -- 2. the app's own 500 when seawall has no answer --


def _starlette_custom_500() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def boom(request: Any) -> Any:
        raise RuntimeError("db down")

    async def on_error(request: Any, exc: Exception) -> Any:
        return JSONResponse({"error": "custom 500"}, status_code=500)

    return Starlette(routes=[Route("/", boom)], exception_handlers={Exception: on_error})


def _call(app: Any) -> tuple[list[Any], BaseException | None]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> BaseException | None:
        try:
            await app(http_scope(), empty_receive, send)
        except Exception as exc:
            return exc
        return None

    return sent, asyncio.run(main())


class TestAppsOwn500:
    @pytest.mark.parametrize(
        "layers",
        [
            pytest.param([], id="no layers"),
            pytest.param([Timing()], id="no ErrorCapture"),
            pytest.param([ErrorCapture(ignore=[RuntimeError])], id="ErrorCapture ignores it"),
        ],
    )
    def test_the_custom_500_goes_out_then_the_exception(self, layers: list[Any]) -> None:
        bare, bare_raised = _call(_starlette_custom_500())
        sent, raised = _call(Seawall(_starlette_custom_500(), layers=layers))
        assert isinstance(raised, RuntimeError)
        assert isinstance(bare_raised, RuntimeError)
        assert [m["type"] for m in sent] == [m["type"] for m in bare]
        assert sent[0]["status"] == 500
        assert b"".join(m.get("body", b"") for m in sent) == b'{"error":"custom 500"}'

    def test_error_capture_still_replaces_it(self) -> None:
        sent, raised = _call(Seawall(_starlette_custom_500(), layers=[ErrorCapture()]))
        assert raised is None
        assert dict(sent[0]["headers"])[b"content-type"] == b"application/problem+json"


# -- 3. a held 500 stays bounded --


def _serve(app: Any, reached: asyncio.Event | None = None) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)
        if reached is not None and message.get("body"):
            reached.set()

    asyncio.run(app(http_scope(), empty_receive, send))
    return sent


class TestHeld500:
    def test_a_streamed_500_streams(self) -> None:
        waited: list[bool] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            reached = asyncio.Event()
            scope["reached"] = reached
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            # The server has the chunk while the app waits for its next one.
            await asyncio.wait_for(reached.wait(), 2)
            waited.append(True)
            await send({"type": "http.response.body", "body": b""})

        def wrap(inner: Any) -> Any:
            async def outer(scope: Any, receive: Any, send: Any) -> None:
                async def watch(message: Any) -> None:
                    await send(message)
                    if message.get("body"):
                        scope["reached"].set()

                await inner(scope, receive, watch)

            return outer

        wall = Seawall(app, layers=[ErrorCapture()], interface="asgi")
        sent = _serve(wrap(wall))
        assert waited == [True]
        assert [m.get("body", None) for m in sent] == [None, b"x", b""]

    def test_a_500_reaches_the_client_before_its_background_task_ends(self) -> None:
        from starlette.background import BackgroundTask
        from starlette.responses import PlainTextResponse

        order: list[str] = []

        async def task() -> None:
            await asyncio.sleep(0.3)
            order.append("task done")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            response = PlainTextResponse("sorry", status_code=500, background=BackgroundTask(task))
            await response(scope, receive, send)

        async def send(message: Any) -> None:
            if message["type"] == "http.response.body":
                order.append("body sent")

        asyncio.run(Seawall(app, layers=[ErrorCapture()])(http_scope(), empty_receive, send))
        assert order == ["body sent", "task done"]

    def test_a_large_500_is_not_held_whole(self) -> None:
        chunk = b"z" * 65536
        sent_before_last: list[int] = []
        sent: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            for _ in range(31):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent_before_last.append(len(sent))
            await send({"type": "http.response.body", "body": b""})

        async def send(message: Any) -> None:
            sent.append(message)

        asyncio.run(Seawall(app, layers=[ErrorCapture()])(http_scope(), empty_receive, send))
        # At most HOLD_BYTES (and the chunk that went past it) were ever kept.
        assert sent_before_last[0] >= 31 - (HOLD_BYTES // len(chunk) + 1)
        assert b"".join(m.get("body", b"") for m in sent[1:]) == chunk * 31


# -- 4. the app's messages are its own --


START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}


class TestMessagesUntouched:
    def test_a_reused_start_message_is_not_changed(self) -> None:
        original = [(b"content-type", b"text/plain")]

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send(START)
            await send({"type": "http.response.body", "body": b"ok"})

        wall = Seawall(app, layers=[Timing()], interface="asgi")
        ids = []
        for rid in (b"alice-1", b"bob-7", None):
            sent: list[Any] = []

            async def send(message: Any, sent: list[Any] = sent) -> None:
                sent.append(message)

            headers = [(b"x-request-id", rid)] if rid else []
            asyncio.run(wall(http_scope(headers=headers), empty_receive, send))
            ids.append([v for k, v in sent[0]["headers"] if k == b"x-request-id"])
            assert START["headers"] == original
        assert ids[:2] == [[b"alice-1"], [b"bob-7"]]
        assert len(ids[2]) == 1
        assert ids[2][0] not in (b"alice-1", b"bob-7")

    def test_a_reused_websocket_accept_is_not_changed(self) -> None:
        accept = {"type": "websocket.accept", "headers": [(b"x-app", b"1")]}

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send(accept)
            await send({"type": "websocket.close", "code": 1000})

        wall = Seawall(app, layers=[Timing()], interface="asgi")
        for _ in range(2):
            sent: list[Any] = []
            inbox = [{"type": "websocket.connect"}]

            async def receive(inbox: list[Any] = inbox) -> Any:
                return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

            async def send(message: Any, sent: list[Any] = sent) -> None:
                sent.append(message)

            scope = {**http_scope(), "type": "websocket", "scheme": "ws"}
            asyncio.run(wall(scope, receive, send))
            assert len([k for k, _ in sent[0]["headers"] if k == b"x-request-id"]) == 1
        assert accept["headers"] == [(b"x-app", b"1")]

    def test_wsgi_leaves_the_apps_header_list_alone(self) -> None:
        headers = [("Content-Type", "text/plain")]

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", headers)
            return [b"ok"]

        for layers in ([], [Timing()], [Timing(), ErrorCapture()]):
            result = Seawall(app, layers=layers, interface="wsgi")(environ(), lambda *a: None)
            list(result)
            result.close()  # type: ignore[attr-defined]
            assert headers == [("Content-Type", "text/plain")]


# -- 5. WSGI never reads past the body --


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def wsgiref_server() -> Iterator[Any]:
    servers: list[Any] = []

    def start(app: Any) -> int:
        server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(request)
        answer = b""
        try:
            while chunk := conn.recv(4096):  # wsgiref closes the connection after each answer
                answer += chunk
        except TimeoutError:
            return answer or b"no response after 3 s"
        return answer


class TestWsgiBodyBounds:
    def test_a_chunked_body_wsgiref_does_not_frame_is_not_read(self, wsgiref_server: Any) -> None:
        seen: list[Any] = []

        class Look:
            name = "look"

            def on_request(self, request: Any) -> Any:
                seen.append((yield ReadBody(1000)))

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]

        port = wsgiref_server(Seawall(app, layers=[Look()], interface="wsgi"))
        answer = _exchange(
            port,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n7\r\n{"a":1}\r\n0\r\n\r\n',
        )
        assert answer.startswith(b"HTTP/1.0 200")
        assert seen == [b""]  # not the chunk framing

    @pytest.mark.parametrize("read_first", [False, True], ids=["counting", "part read"])
    def test_a_read_of_no_size_stops_at_content_length(
        self, wsgiref_server: Any, read_first: bool
    ) -> None:
        class Cap:
            name = "cap"

            def on_request(self, request: Any) -> Any:
                request.max_body = 1000
                if read_first:
                    yield ReadBody(3)  # part of the body: the app reads the rest after it

        def app(environ: Any, start_response: Any) -> Any:
            data = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Length", str(len(data)))])
            return [data]

        port = wsgiref_server(Seawall(app, layers=[Cap()], interface="wsgi"))
        answer = _exchange(port, b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{"a":1}')
        assert answer.startswith(b"HTTP/1.0 200")
        assert answer.endswith(b'{"a":1}')

    def test_in_memory_unframed_bodies_are_still_read(self) -> None:
        """A test transport (httpx) sends a chunked body in memory, with no length."""
        seen: list[Any] = []

        class Look:
            name = "look"

            def on_request(self, request: Any) -> Any:
                seen.append((yield ReadBody(1000)))

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            return [environ["wsgi.input"].read()]

        env = environ(REQUEST_METHOD="POST", HTTP_TRANSFER_ENCODING="chunked")
        env["wsgi.input"] = io.BytesIO(b"abc")
        result = Seawall(app, layers=[Look()], interface="wsgi")(env, lambda *a: None)
        assert b"".join(result) == b"abc"
        result.close()  # type: ignore[attr-defined]
        assert seen == [b"abc"]


# -- 6. a second lifespan --


def test_a_second_lifespan_admits_requests_again() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from seawall import Health

    inner = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    wall = Seawall(
        inner,
        layers=[shedding(), Health(memory_fail=None, disk_fail=None, open_files_fail=None)],
    )
    for _ in range(2):
        with TestClient(wall) as client:
            assert client.get("/").status_code == 200
            assert client.get("/health/ready").status_code == 200
        assert wall.draining


# -- 7. pathsend and zerocopy end the response --


class TestFinalMessages:
    @pytest.mark.parametrize(
        "last",
        [
            pytest.param({"type": "http.response.pathsend", "path": __file__}, id="pathsend"),
            pytest.param({"type": "http.response.zerocopy", "file": 0}, id="zerocopy"),
        ],
    )
    def test_the_deadline_is_disarmed_and_the_outcome_is_complete(
        self, last: dict[str, Any]
    ) -> None:
        ran: list[bool] = []
        probe = Probe()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send(last)
            await asyncio.sleep(0.3)  # a background task
            ran.append(True)

        wall = Seawall(app, layers=[Timeout(0.1), probe], interface="asgi")
        asyncio.run(wall(http_scope(), empty_receive, _drop))
        assert ran == [True]
        outcome = probe.outcomes[0]
        assert not outcome.timed_out
        assert not outcome.disconnected
        assert outcome.duration < 0.25  # the answer ended at the last message


# -- 8. WSGI keeps a list answer's length --


class TestWsgiLength:
    def test_wsgiref_adds_content_length_to_a_one_chunk_list(self) -> None:
        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello"]

        for wrapped in (app, Seawall(app, layers=[]), Seawall(app, layers=[Timing()])):
            out = io.BytesIO()
            env = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1"}
            SimpleHandler(io.BytesIO(), out, io.StringIO(), env).run(wrapped)
            assert b"Content-Length: 5" in out.getvalue()

    def test_the_iterable_stays_true_and_a_generator_has_no_length(self) -> None:
        def empty(environ: Any, start_response: Any) -> Any:
            start_response("204 No Content", [])
            return []

        def streamed(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            yield b"x"

        result = Seawall(empty, layers=[])(environ(), lambda *a: None)
        assert len(result) == 0  # type: ignore[arg-type]
        assert result
        result.close()  # type: ignore[attr-defined]
        result = Seawall(streamed, layers=[])(environ(), lambda *a: None)
        assert not hasattr(result, "__len__")
        list(result)
        result.close()  # type: ignore[attr-defined]


# -- 9. a read body is replayed in few messages --


def _read_through(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the app receives after a layer read a body sent as *messages*."""
    got: list[dict[str, Any]] = []
    inbox = list(reversed(messages))

    async def receive() -> Any:
        return inbox.pop() if inbox else {"type": "http.disconnect"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await ok_app(scope, receive, send)

    wall = Seawall(app, layers=[Reader()], interface="asgi")
    asyncio.run(wall(http_scope("POST"), receive, _drop))
    return got


class TestReplay:
    def test_many_small_messages_are_replayed_as_one(self) -> None:
        body = [{"type": "http.request", "body": b"a", "more_body": True}] * 20_000
        got = _read_through([*body, {"type": "http.request", "body": b"b"}])
        assert got == [{"type": "http.request", "body": b"a" * 20_000 + b"b", "more_body": False}]

    def test_empty_messages_are_dropped(self) -> None:
        empty = [{"type": "http.request", "body": b"", "more_body": True}] * 20_000
        got = _read_through([*empty, {"type": "http.request", "body": b"ok"}])
        assert got == [{"type": "http.request", "body": b"ok", "more_body": False}]

    def test_a_disconnect_read_with_the_body_follows_it(self) -> None:
        got = _read_through(
            [
                {"type": "http.request", "body": b"par", "more_body": True},
                {"type": "http.request", "body": b"t", "more_body": True},
                {"type": "http.disconnect"},
            ]
        )
        assert got == [
            {"type": "http.request", "body": b"part", "more_body": True},
            {"type": "http.disconnect"},
        ]
