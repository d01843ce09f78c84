"""WSGI driver: PEP 3333 details, close(), file_wrapper, exc_info, body cap."""

from __future__ import annotations

import io
import sys
from typing import Any
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest

from seawall import ErrorCapture, ReadBody, Seawall, Timing
from tests.drivers.refs import views_left


def environ(path: str = "/", **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"PATH_INFO": path, "REMOTE_ADDR": "127.0.0.1"}
    setup_testing_defaults(env)
    env.update(extra)
    return env


class Tracked:
    """An app iterable that records close() and how far it was iterated."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks, self.fail_at, self.closed, self.given = chunks, fail_at, 0, 0

    def __iter__(self) -> Any:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("mid-body failure")
            self.given += 1
            yield chunk

    def close(self) -> None:
        self.closed += 1


def run(
    wall: Any, env: dict[str, Any], *, consume: int | None = None
) -> tuple[list[Any], list[bytes]]:
    calls: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append((status, headers, exc_info))
        return lambda data: None

    result = wall(env, start_response)
    body: list[bytes] = []
    try:
        for i, chunk in enumerate(result):
            body.append(chunk)
            if consume is not None and i + 1 >= consume:
                break
    finally:
        result.close()
    return calls, body


class TestClose:
    @pytest.mark.parametrize("layers", [[], [Timing(), ErrorCapture()]], ids=["bare", "layers"])
    def test_close_called_on_success(self, layers: list[Any]) -> None:
        it = Tracked([b"a", b"b"])

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [("Content-Type", "text/plain")])
            return it

        _, body = run(Seawall(app, layers=layers), environ())
        assert body == [b"a", b"b"]
        assert it.closed == 1

    def test_close_called_on_error_mid_body(self) -> None:
        it = Tracked([b"a", b"b", b"c"], fail_at=1)

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [("Content-Type", "text/plain")])
            return it

        with pytest.raises(RuntimeError):
            run(Seawall(app, layers=[ErrorCapture()]), environ())
        assert it.closed == 1

    def test_close_called_when_client_disconnects_mid_body(self) -> None:
        it = Tracked([b"a", b"b", b"c"])
        completed: list[Any] = []

        class Spy:
            name = "spy"

            def on_complete(self, request: Any, outcome: Any) -> None:
                completed.append(outcome)

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [("Content-Type", "text/plain")])
            return it

        _, body = run(Seawall(app, layers=[Spy()]), environ(), consume=1)
        assert body == [b"a"]
        assert it.closed == 1
        assert completed[0].disconnected
        assert completed[0].status == 200

    def test_streaming_is_not_buffered(self) -> None:
        produced: list[int] = []

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [])

            def gen() -> Any:
                for i in range(3):
                    produced.append(i)
                    yield str(i).encode()

            return gen()

        result = Seawall(app, layers=[Timing(), ErrorCapture()])(environ(), lambda *a: None)
        first = next(iter(result))
        assert first == b"0"
        assert produced == [0]
        result.close()


class TestPep3333:
    def test_error_before_start_response_gets_a_problem_without_exc_info(self) -> None:
        def app(env: Any, sr: Any) -> Any:
            raise ValueError("x")

        calls, body = run(Seawall(app, layers=[ErrorCapture()]), environ())
        assert calls[0][0].startswith("500")
        assert calls[0][2] is None
        assert b"problem" not in body[0] or b'"status":500' in body[0]

    def test_error_after_start_response_passes_exc_info(self) -> None:
        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [("Content-Type", "text/plain")])
            raise ValueError("x")

        calls, _ = run(Seawall(app, layers=[ErrorCapture()]), environ())
        assert calls[-1][0].startswith("500")
        assert calls[-1][2] is not None

    def test_lazy_generator_error_before_first_chunk_is_replaced(self) -> None:
        def app(env: Any, sr: Any) -> Any:
            def gen() -> Any:
                sr("200 OK", [("Content-Type", "text/plain")])
                raise ValueError("lazy")
                yield b""  # pragma: no cover

            return gen()

        calls, body = run(Seawall(app, layers=[ErrorCapture()]), environ())
        assert calls[-1][0].startswith("500")
        assert b'"status":500' in body[0]

    def test_file_wrapper_is_returned_as_is(self) -> None:
        closed: list[bool] = []

        class F(io.BytesIO):
            def close(self) -> None:
                closed.append(True)
                super().close()

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [("Content-Type", "application/octet-stream")])
            return env["wsgi.file_wrapper"](F(b"file-bytes"), 4)

        env = environ()
        env["wsgi.file_wrapper"] = FileWrapper
        wall = Seawall(app, layers=[Timing()])
        result = wall(env, lambda *a: None)
        assert isinstance(result, FileWrapper)  # the server's sendfile path stays available
        assert b"".join(result) == b"file-bytes"
        result.close()
        assert closed
        assert wall.stats()["timing"]["requests"] == 1

    def test_exc_info_from_the_app_is_passed_through(self) -> None:
        def app(env: Any, sr: Any) -> Any:
            try:
                raise KeyError("k")
            except KeyError:
                sr("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"handled by app"]

        calls, body = run(Seawall(app, layers=[Timing()]), environ())
        assert calls[0][2] is not None
        assert calls[0][2][0] is KeyError
        assert body == [b"handled by app"]

    def test_body_cap_stops_reading(self) -> None:
        class Cap:
            name = "cap"

            def on_request(self, request: Any) -> None:
                request.max_body = 100

        def app(env: Any, sr: Any) -> Any:
            data = env["wsgi.input"].read()
            sr("200 OK", [])
            return [str(len(data)).encode()]

        big = io.BytesIO(b"y" * 10_000)
        env = environ(**{"wsgi.input": big, "CONTENT_LENGTH": "", "REQUEST_METHOD": "POST"})
        calls, _body = run(Seawall(app, layers=[Cap()]), env)
        assert calls[0][0].startswith("413")
        assert big.tell() <= 101  # one byte past the cap decides; the rest is never read

    def test_the_wrapped_inputs_say_they_cannot_seek(self) -> None:
        """Django 6 asks wsgi.input whether it can seek before it measures a body
        that way: the counting input (max_body) and the replayed input (a layer
        read the body) answer readable, not seekable, and the app gets every byte."""

        class Cap:
            name = "cap"

            def on_request(self, request: Any) -> None:
                request.max_body = 100

        class Read:
            name = "read"

            def on_request(self, request: Any) -> Any:
                yield ReadBody(100)

        def app(env: Any, sr: Any) -> Any:
            stream = env["wsgi.input"]
            assert stream.readable()
            assert not stream.seekable()
            data = stream.read()
            sr("200 OK", [])
            return [data]

        for layer in (Cap(), Read()):
            env = environ(**{"wsgi.input": io.BytesIO(b"z" * 50), "CONTENT_LENGTH": "50",
                             "REQUEST_METHOD": "POST"})  # fmt: skip
            calls, body = run(Seawall(app, layers=[layer]), env)
            assert calls[0][0].startswith("200"), layer.name
            assert b"".join(body) == b"z" * 50


class TestStartResponse:
    def test_every_status_line_passes_and_outcomes_see_its_code(self) -> None:
        from seawall.wsgi import _STATUS_CODES

        seen: list[int | None] = []

        class Record:
            name = "record"

            def on_complete(self, request: Any, outcome: Any) -> None:
                seen.append(outcome.status)

        lines = [f"{code} Custom {code}" for code in range(200, 600)]

        def app(env: Any, sr: Any) -> Any:
            sr(env["line"], [("Content-Type", "text/plain")])
            return [b"x"]

        wall = Seawall(app, layers=[Record()])
        for line in lines:
            calls, _ = run(wall, environ(line=line))
            assert calls[0][0] == line
        # More distinct status lines than the cache keeps: each still reads right.
        assert seen == list(range(200, 600))
        assert len(_STATUS_CODES) <= 256

    @pytest.mark.parametrize("name", ["x-REQUEST-id", "X-Request-ID"])
    def test_app_own_request_id_header_is_not_doubled(self, name: str) -> None:
        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [("Content-Type", "text/plain"), (name, "mine")])
            return [b"x"]

        calls, _ = run(Seawall(app, layers=[]), environ())
        ids = [(k, v) for k, v in calls[0][1] if k.lower() == "x-request-id"]
        assert ids == [(name, "mine")]

    def test_a_header_of_the_same_length_is_not_taken_for_it(self) -> None:
        def app(env: Any, sr: Any) -> Any:
            # As long as "X-Request-ID", another name: ours is still echoed.
            sr("200 OK", [("Content-Type", "text/plain"), ("X-Request-IX", "other")])
            return [b"x"]

        calls, _ = run(Seawall(app, layers=[]), environ(HTTP_X_REQUEST_ID="req-9"))
        assert ("X-Request-ID", "req-9") in calls[0][1]
        assert ("X-Request-IX", "other") in calls[0][1]


def test_views_are_freed_by_refcount() -> None:
    # No reference cycle through the environ: a finished request's view goes
    # with its last reference, not at a later collection (under load such
    # views would reach the collector's older generations).
    def app(env: Any, sr: Any) -> Any:
        sr("200 OK", [("Content-Type", "text/plain")])
        return [b"x"]

    wall = Seawall(app, layers=[Timing(), ErrorCapture()])
    # Kept alive here: an environ must not keep its view alive.
    environs = [environ() for _ in range(5)]
    run(wall, environ())  # warm-up, outside the count

    def requests() -> None:
        for env in environs:
            run(wall, env)

    assert views_left(requests, environs) == []
