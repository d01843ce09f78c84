"""ASGI driver: streaming, background tasks, lifespan, websockets, errors after start."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from seawall import ErrorCapture, Respond, Seawall, Timing
from seawall.asgi import ASGIMiddleware
from tests.drivers.refs import views_left


def scope(path: str = "/", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 9),
        "server": ("127.0.0.1", 80),
        **extra,
    }


async def empty_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class TestStreaming:
    async def _stream_through(self, layers: list[Any]) -> list[str]:
        """The app waits for the first chunk to reach the client before it goes on."""
        first_chunk_seen = asyncio.Event()
        events: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            # If the middleware buffered, nothing reached the client yet: deadlock -> timeout.
            await asyncio.wait_for(first_chunk_seen.wait(), 2)
            events.append("app finished")
            await send({"type": "http.response.body", "body": b"b", "more_body": False})

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message["body"] == b"a":
                events.append("client got chunk a")
                first_chunk_seen.set()

        await Seawall(app, layers=layers)(scope(), empty_receive, send)
        return events

    def test_chunks_arrive_before_the_handler_finishes(self) -> None:
        events = asyncio.run(self._stream_through([Timing(), ErrorCapture()]))
        assert events == ["client got chunk a", "app finished"]

    def test_starlette_streaming_response(self) -> None:
        async def numbers():
            for i in range(3):
                yield f"{i}\n"

        async def endpoint(request):
            return StreamingResponse(numbers(), media_type="text/plain")

        app = Seawall(Starlette(routes=[Route("/", endpoint)]), layers=[Timing()])
        with TestClient(app) as client:
            r = client.get("/")
        assert r.text == "0\n1\n2\n"
        assert "server-timing" in r.headers


class TestBackgroundAndErrors:
    def test_background_task_runs(self) -> None:
        ran: list[str] = []

        async def endpoint(request):
            return PlainTextResponse("ok", background=BackgroundTask(ran.append, "done"))

        app = Seawall(Starlette(routes=[Route("/", endpoint)]), layers=[Timing(), ErrorCapture()])
        assert TestClient(app).get("/").status_code == 200
        assert ran == ["done"]

    def test_no_second_response_start_after_an_error(self) -> None:
        starts: list[int] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("late failure")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                starts.append(message["status"])

        wall = Seawall(app, layers=[ErrorCapture()])
        with pytest.raises(RuntimeError):
            asyncio.run(wall(scope(), empty_receive, send))
        assert starts == [200]
        assert wall.stats()["errors"]["captured"] == 1

    def test_starlette_500_is_replaced_by_our_problem(self) -> None:
        async def endpoint(request):
            raise KeyError("x")

        app = Seawall(Starlette(routes=[Route("/", endpoint)]), layers=[ErrorCapture()])
        r = TestClient(app).get("/")
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"

    def test_app_own_500_passes_when_no_exception(self) -> None:
        async def endpoint(request):
            return PlainTextResponse("mine", status_code=500)

        app = Seawall(Starlette(routes=[Route("/", endpoint)]), layers=[ErrorCapture()])
        r = TestClient(app).get("/")
        assert r.status_code == 500
        assert r.text == "mine"

    def test_route_template_reaches_the_stats(self) -> None:
        async def endpoint(request):
            return PlainTextResponse("ok")

        app = Seawall(Starlette(routes=[Route("/items/{id}", endpoint)]), layers=[Timing()])
        client = TestClient(app)
        for i in range(3):
            client.get(f"/items/{i}")
        client.get("/nowhere/1")
        routes = app.stats()["timing"]["routes"]
        assert routes["/items/{id}"]["count"] == 3
        assert "<unmatched>" in routes
        assert "/items/1" not in routes


class TestLifespanAndWebsockets:
    def test_lifespan_passes_through(self) -> None:
        started: list[str] = []

        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def lifespan(app):
            started.append("up")
            yield
            started.append("down")

        app = Seawall(Starlette(lifespan=lifespan), layers=[Timing()])
        with TestClient(app):
            assert started == ["up"]
        assert started == ["up", "down"]

    def test_websocket_passes_through(self) -> None:
        async def ws(websocket):
            await websocket.accept()
            await websocket.send_text("hi")
            await websocket.close()

        app = Seawall(Starlette(routes=[WebSocketRoute("/ws", ws)]), layers=[Timing()])
        with TestClient(app).websocket_connect("/ws") as conn:
            assert conn.receive_text() == "hi"

    def test_websocket_layer_can_refuse_the_handshake(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        class NoSockets:
            name = "nosockets"
            websocket = True

            def on_request(self, request):
                return Respond.problem(403, "forbidden", "Forbidden")

        async def ws(websocket):  # pragma: no cover - never reached
            await websocket.accept()

        app = Seawall(Starlette(routes=[WebSocketRoute("/ws", ws)]), layers=[NoSockets()])
        with pytest.raises(WebSocketDisconnect), TestClient(app).websocket_connect("/ws") as c:
            c.receive_text()

    def test_drain_waits_for_in_flight_requests(self) -> None:
        class Drainer:
            name = "drainer"

            def on_shutdown(self) -> float:
                return 2.0

        release = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    msg = await receive()
                    if msg["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
                    await send({"type": "lifespan.startup.complete"})
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async def main() -> tuple[bool, float]:
            wall = Seawall(app, layers=[Drainer()])
            assert isinstance(wall, ASGIMiddleware)

            async def sink(message: Any) -> None:
                pass

            request = asyncio.create_task(wall(scope(), empty_receive, sink))
            await asyncio.sleep(0.05)
            assert wall.in_flight == 1
            msgs = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

            async def lifespan_receive() -> Any:
                return next(msgs)

            loop = asyncio.get_running_loop()
            loop.call_later(0.2, release.set)
            t0 = loop.time()
            await wall({"type": "lifespan"}, lifespan_receive, sink)
            await request
            return wall.draining, loop.time() - t0

        draining, took = asyncio.run(main())
        assert draining
        assert 0.15 < took < 1.5

    def test_shutdown_gives_background_writes_a_bounded_grace(
        self, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
    ) -> None:
        """A write that never ends holds shutdown for the grace, then is left, with a warning."""
        from seawall._core import background
        from tests.apps import asgi_app

        monkeypatch.setattr(background, "SHUTDOWN_GRACE", 0.2)
        wall = Seawall(asgi_app, layers=[Timing()])
        done: list[str] = []

        async def finishes() -> None:
            await asyncio.sleep(0.05)
            done.append("write")

        async def main() -> tuple[float, bool]:
            loop = asyncio.get_running_loop()
            background.spawn(loop, finishes())
            stuck = background.spawn(loop, asyncio.Event().wait())
            messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

            async def receive() -> Any:
                return next(messages)

            async def send(message: Any) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    done.append("stopped")

            t0 = loop.time()
            await wall({"type": "lifespan"}, receive, send)
            took = loop.time() - t0
            left = not stuck.done()
            stuck.cancel()
            return took, left

        took, left = asyncio.run(main())
        assert done == ["write", "stopped"]
        assert 0.15 < took < 1.5
        assert left
        warned = [e for e in logs if e["event"] == "seawall.shutdown.background_writes_left"]
        assert len(warned) == 1
        assert warned[0]["pending"] == 1


class TestDeadlinesAndBodyCap:
    def test_deadline_answers_504(self) -> None:
        class Deadline:
            name = "deadline"

            def on_request(self, request):
                request.deadline = 0.05

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await asyncio.sleep(5)

        client = TestClient(Seawall(app, layers=[Deadline()]))
        r = client.get("/")
        assert r.status_code == 504
        assert r.json()["timeout"] == 0.05

    def test_body_cap_stops_a_streamed_body(self) -> None:
        read: list[int] = []

        class Cap:
            name = "cap"

            def on_request(self, request):
                request.max_body = 1000

        async def app(scope: Any, receive: Any, send: Any) -> None:
            total = 0
            while True:
                msg = await receive()
                total += len(msg.get("body", b""))
                read.append(total)
                if not msg.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        pulled = 0

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            pulled += 1
            return {"type": "http.request", "body": b"x" * 100, "more_body": pulled < 100}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(Seawall(app, layers=[Cap()])(scope(method="POST"), receive, send))
        assert sent[0]["status"] == 413
        assert read
        assert max(read) <= 1000
        assert pulled == 11  # stopped one chunk past the cap, not at the end of the body


class TestContextOnTheLastSend:
    """A server arms its keep-alive timer while it sends the last message; the
    timer keeps a copy of the context, often well past the request. That copy
    must not hold the request once it has ended."""

    def _run(self, app: Any, layers: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        import contextvars

        import seawall

        copies: list[Any] = []
        during: list[Any] = []

        async def send(message: dict[str, Any]) -> None:
            ctx = contextvars.copy_context()  # what loop.call_later would keep
            copies.append(ctx)
            during.append(ctx.run(lambda: (seawall.current_request(), seawall.request_id())))

        asyncio.run(Seawall(app, layers=layers)(scope(), empty_receive, send))
        after = [
            ctx.run(lambda: (seawall.current_request(), seawall.request_id())) for ctx in copies
        ]
        return copies, during, after

    @pytest.mark.parametrize("layers", [[], [Timing(), ErrorCapture()]])
    def test_copies_see_the_request_during_it_and_not_after(self, layers: list[Any]) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await send({"type": "http.response.body", "body": b"b"})

        _copies, during, after = self._run(app, layers)
        assert len(during) == 3
        assert all(view is not None and rid for view, rid in during)
        assert after == [(None, None)] * 3

    def test_copies_keep_no_reference_to_the_view(self) -> None:
        import gc

        from seawall._core.request import RequestView

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"b"})

        copies, _, _ = self._run(app, [Timing()])
        gc.collect()
        held = [
            obj
            for ctx in copies
            for value in ctx.values()
            for obj in ([value] if not isinstance(value, list) else value)
            if isinstance(obj, RequestView)
        ]
        assert held == []

    def test_our_own_responses_too(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("boom")

        _copies, during, after = self._run(app, [ErrorCapture()])
        assert during[0][0] is not None
        assert all(pair == (None, None) for pair in after)

    def test_background_tasks_still_see_the_request_id(self) -> None:
        import seawall

        seen: list[str | None] = []

        async def endpoint(request: Any) -> PlainTextResponse:
            task = BackgroundTask(lambda: seen.append(seawall.request_id()))
            return PlainTextResponse("ok", background=task)

        app = Seawall(Starlette(routes=[Route("/", endpoint)]), layers=[Timing()])
        response = TestClient(app).get("/")
        assert seen == [response.headers["x-request-id"]]


class TestSendAndCleanup:
    def test_held_500_messages_are_awaitable_and_go_out_after_the_app(self) -> None:
        sent: list[dict[str, Any]] = []
        answers: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            answers.append(
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
            )
            answers.append(
                await send({"type": "http.response.body", "body": b"a", "more_body": True})
            )
            # A held message's send still gives a coroutine, as an async def would.
            answers.append(
                await asyncio.get_running_loop().create_task(
                    send({"type": "http.response.body", "body": b"b"})
                )
            )
            # Held, not sent, while the app still runs.
            assert sent == []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(Seawall(app, layers=[ErrorCapture()])(scope(), empty_receive, send))
        assert answers == [None, None, None]
        assert [m["type"] for m in sent] == [
            "http.response.start",
            "http.response.body",
            "http.response.body",
        ]
        assert sent[0]["status"] == 500
        assert b"".join(m.get("body", b"") for m in sent) == b"ab"

    def test_the_app_send_passes_for_a_coroutine_function(self) -> None:
        # A plain method returning the server's coroutine, marked: asgiref's
        # async_to_sync warns (errors here) on a callable not marked async.
        from asgiref.sync import iscoroutinefunction as asgiref_check

        seen: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(send)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"b"})

        async def send(message: dict[str, Any]) -> None:
            pass

        asyncio.run(Seawall(app, layers=[Timing()])(scope(), empty_receive, send))
        assert asyncio.iscoroutinefunction(seen[0])
        assert asgiref_check(seen[0])

    def test_views_are_freed_by_refcount(self) -> None:
        # No reference cycle through the scope: a finished request's view goes
        # with its last reference, not at a later collection.
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"b"})

        async def send(message: dict[str, Any]) -> None:
            pass

        wall = Seawall(app, layers=[Timing(), ErrorCapture()])

        # Kept alive here: a scope must not keep its view alive.
        scopes = [scope() for _ in range(5)]

        async def requests() -> None:
            for one in scopes:
                await wall(one, empty_receive, send)

        asyncio.run(wall(scope(), empty_receive, send))  # warm-up, outside the count
        assert views_left(lambda: asyncio.run(requests()), scopes) == []
