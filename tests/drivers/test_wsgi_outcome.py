"""WSGI driver: the Outcome each path reports, and the response head it sends."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest

from seawall import ErrorCapture, Seawall, Timing
from seawall._core.decisions import Respond
from seawall._log import request_id

from .test_wsgi import environ, run


class Recorder:
    """Records every Outcome (innermost layer: sees every request)."""

    name = "recorder"
    order = 10_000

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def on_complete(self, request: Any, outcome: Any) -> None:
        self.outcomes.append(outcome)


def ok(env: Any, sr: Any) -> Any:
    sr("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


class TestOutcome:
    def test_success(self) -> None:
        rec = Recorder()
        _calls, body = run(Seawall(ok, layers=[Timing(), rec]), environ("/x"))
        (o,) = rec.outcomes
        assert (o.status, o.exception, o.responded_by, o.route) == (200, None, None, "/x")
        assert o.ttfb is not None
        assert o.duration >= o.ttfb >= 0
        assert not o.disconnected
        assert not o.timed_out
        assert not o.templated
        assert body == [b"ok"]

    def test_error_before_start_response_without_error_capture(self) -> None:
        rec = Recorder()

        def app(env: Any, sr: Any) -> Any:
            raise ValueError("x")

        with pytest.raises(ValueError, match=r"^x$"):
            Seawall(app, layers=[rec])(environ(), lambda *a: None)
        (o,) = rec.outcomes
        assert o.status is None
        assert o.ttfb is None
        assert isinstance(o.exception, ValueError)
        assert not o.disconnected

    def test_lazy_generator_error_without_start_response_is_replaced(self) -> None:
        rec = Recorder()

        def app(env: Any, sr: Any) -> Any:
            def gen() -> Any:
                raise ValueError("lazy")
                yield b""  # pragma: no cover

            return gen()

        calls, _body = run(Seawall(app, layers=[ErrorCapture(), rec]), environ())
        (o,) = rec.outcomes
        assert calls[-1][0].startswith("500")
        assert calls[-1][2] is None
        assert o.status == 500
        assert o.ttfb is None
        assert isinstance(o.exception, ValueError)
        assert not o.disconnected

    def test_client_disconnect(self) -> None:
        rec = Recorder()

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [])
            return [b"a", b"b"]

        run(Seawall(app, layers=[rec]), environ(), consume=1)
        (o,) = rec.outcomes
        assert o.disconnected
        assert o.status == 200
        assert o.exception is None

    def test_layer_answers(self) -> None:
        rec = Recorder()

        class Gate:
            name = "gate"

            def on_request(self, request: Any) -> Respond:
                return Respond(429, b"no", (("Retry-After", "1"),), "text/plain")

        calls, body = run(Seawall(ok, layers=[Gate(), rec], order="as given"), environ())
        ((status, headers, exc_info),) = calls
        assert status.startswith("429")
        assert exc_info is None
        assert body == [b"no"]
        assert ("Retry-After", "1") in headers
        assert [k.lower() for k, _ in headers].count("x-request-id") == 1
        # The recorder sits inside the gate: it never saw the request.
        assert rec.outcomes == []

    def test_close_twice_completes_once(self) -> None:
        rec = Recorder()
        closed: list[int] = []

        class Body(list[bytes]):
            def close(self) -> None:
                closed.append(1)

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", [])
            return Body([b"x"])

        result = Seawall(app, layers=[rec])(environ(), lambda *a: None)
        assert list(result) == [b"x"]
        result.close()  # type: ignore[attr-defined]
        result.close()  # type: ignore[attr-defined]
        assert len(closed) == 2
        assert len(rec.outcomes) == 1

    def test_close_from_another_context(self) -> None:
        # The request runs in a context of its own: the test's context must not
        # keep the binding that close() in a foreign context cannot reset.
        own = contextvars.copy_context()
        result = own.run(Seawall(ok, layers=[]), environ(), lambda *a: None)
        assert list(result) == [b"ok"]
        contextvars.Context().run(result.close)  # type: ignore[attr-defined]
        assert own.run(request_id) is None  # the holder was emptied all the same
        assert request_id() is None


class TestHead:
    def test_app_request_id_is_not_doubled_and_app_list_untouched(self) -> None:
        headers = [("Content-Type", "text/plain"), ("X-Request-ID", "mine")]

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", headers)
            return [b""]

        for layers in ([], [Timing()]):
            calls, _ = run(Seawall(app, layers=layers), environ())
            sent = calls[0][1]
            assert sent is not headers
            assert [k.lower() for k, _ in sent].count("x-request-id") == 1
            assert headers == [("Content-Type", "text/plain"), ("X-Request-ID", "mine")]

    def test_request_id_is_echoed_after_every_edit(self) -> None:
        class Extra:
            name = "extra"

            def on_request(self, request: Any) -> None:
                request.response_headers.append(("X-Extra", "1"))

        headers = [("Content-Type", "text/plain")]

        def app(env: Any, sr: Any) -> Any:
            sr("200 OK", headers)
            return [b""]

        env = environ(HTTP_X_REQUEST_ID="abc-123")
        calls, _ = run(Seawall(app, layers=[Extra(), Timing()]), env)
        names = [k.lower() for k, _ in calls[0][1]]
        assert names == ["content-type", "x-extra", "server-timing", "x-request-id"]
        assert calls[0][1][-1][1] == "abc-123"
        assert headers == [("Content-Type", "text/plain")]
