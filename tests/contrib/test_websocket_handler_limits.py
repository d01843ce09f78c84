"""Handler-level limits on websocket routes: the handshake is what they limit.

FastAPI's ``Depends(limit(...))`` and ``seawall.limit`` on a Starlette
websocket endpoint refuse the handshake past the limit (429 through the
denial-response extension, else a 1008 close); ``count_when`` counts by
the handshake's answer (101 accepted, 403 refused by the app).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

import seawall
from seawall import RateLimited, Seawall, Timing
from seawall.fastapi import SeawallMiddleware, limit
from seawall.testing import ManualClock


def handshakes(client: TestClient, paths: list[str]) -> list[int]:
    """Open a websocket per path: 101 if accepted, else the status it was refused with."""
    out = []
    for path in paths:
        try:
            with client.websocket_connect(path) as conn:
                assert conn.receive_text() == "hi"
            out.append(101)
        except WebSocketDenialResponse as denied:
            out.append(denied.status_code)
        except WebSocketDisconnect as closed:
            out.append(403 if closed.code == 1008 else 1000 + closed.code)
    return out


def test_fastapi_dependency_limits_the_handshake() -> None:
    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=[Timing()])

    @app.websocket("/ws", dependencies=[Depends(limit("2/minute", clock=ManualClock()))])
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    client = TestClient(app)
    assert handshakes(client, ["/ws"] * 3) == [101, 101, 429]
    with pytest.raises(WebSocketDenialResponse) as denied:
        client.websocket_connect("/ws").__enter__()
    response = denied.value
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert json.loads(response.content)["status"] == 429


def test_fastapi_count_when_counts_the_handshakes_the_app_refused() -> None:
    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=[Timing()])
    guard = limit("2/minute", count_when="failure", clock=ManualClock())

    @app.websocket("/ws", dependencies=[Depends(guard)])
    async def ws(websocket: WebSocket, token: str = "") -> None:
        if token != "good":
            await websocket.close(code=1008)
            return
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    client = TestClient(app)
    good, bad = "/ws?token=good", "/ws?token=bad"
    # Accepted handshakes are not failures; two refused ones use the limit up.
    assert handshakes(client, [good] * 3 + [bad] * 2 + [good, bad]) == [
        101,
        101,
        101,
        403,
        403,
        429,
        429,
    ]


def starlette_limited_once() -> Starlette:
    """A Starlette app whose websocket endpoint ``seawall.limit`` allows once a minute."""

    @seawall.limit("1/minute", clock=ManualClock())
    async def ws(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    return Starlette(routes=[WebSocketRoute("/ws", ws)])


def test_seawall_limit_on_a_starlette_websocket_endpoint() -> None:
    app = Seawall(starlette_limited_once(), layers=[Timing()])
    assert handshakes(TestClient(app), ["/ws"] * 2) == [101, 429]


def test_without_the_denial_extension_the_refusal_is_a_1008_close() -> None:
    inner = starlette_limited_once()

    async def no_extension(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await wall(scope, receive, send)

    wall = Seawall(inner, layers=[Timing()])
    assert handshakes(TestClient(no_extension), ["/ws"] * 2) == [101, 403]


def test_a_rejection_after_accept_closes_with_1008() -> None:
    async def ws(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        raise RateLimited(retry_after=5)

    app = Seawall(Starlette(routes=[WebSocketRoute("/ws", ws)]), layers=[Timing()])
    with TestClient(app).websocket_connect("/ws") as conn:
        assert conn.receive_text() == "hi"
        with pytest.raises(WebSocketDisconnect) as closed:
            conn.receive_text()
    assert closed.value.code == 1008
    # The same reason as a message past websocket_messages gets.
    assert closed.value.reason == "rate limit exceeded"


def test_handlers_see_the_request_and_its_id() -> None:
    seen: list[Any] = []

    async def ws(websocket: Any) -> None:
        view = seawall.current_request()
        seen.append((view.path, view.request_id, websocket.scope["seawall.request_id"]))
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    app = Seawall(Starlette(routes=[WebSocketRoute("/ws", ws)]), layers=[Timing()])
    assert handshakes(TestClient(app), ["/ws"]) == [101]
    path, rid, in_scope = seen[0]
    assert path == "/ws"
    assert rid
    assert rid == in_scope


# For the uvicorn test: imported by the server from this module.
def fastapi_ws_app() -> FastAPI:
    """A FastAPI app whose websocket route takes one handshake a minute."""
    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=[Timing()])

    @app.websocket("/ws", dependencies=[Depends(limit("1/minute"))])
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    return app


@pytest.mark.server
def test_under_uvicorn(tmp_path: Path) -> None:
    """A real server and client: the second handshake gets the 429 problem response."""
    import asyncio

    import websockets

    from tests.ratelimit.conftest import serve

    source = (
        "from tests.contrib.test_websocket_handler_limits import fastapi_ws_app\n"
        "app = fastapi_ws_app()\n"
    )

    async def connect(address: str) -> tuple[str, int, str, bytes]:
        async with websockets.connect(f"ws://{address}/ws") as ws:
            first = str(await ws.recv())
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"ws://{address}/ws"):
                pass  # pragma: no cover - refused
        response = refused.value.response
        return first, response.status_code, response.headers["Content-Type"], response.body

    argv = ["uvicorn", "app:app", "--port", "{port}", "--log-level", "warning"]
    argv += ["--ws", "websockets"]
    with serve(tmp_path, source, argv) as address:
        first, status, content_type, body = asyncio.run(connect(address))
    assert first == "hi"
    assert status == 429
    assert content_type == "application/problem+json"
    assert json.loads(body)["status"] == 429
    assert b"Traceback" not in (tmp_path / "server.log").read_bytes()


def test_fastapi_breaker_dependency_on_a_websocket_route() -> None:
    """Sessions that fail open the breaker; the next handshake gets the 503."""
    from seawall._breaker.registry import breakers
    from seawall.fastapi import breaker

    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=[Timing()])
    name = "ws-feed-test"

    @app.websocket("/ws", dependencies=[Depends(breaker(name, fail_max=2, wait_in_open=60))])
    async def ws(websocket: WebSocket, fail: str = "") -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        if fail:
            raise RuntimeError("upstream gone")
        await websocket.close()

    client = TestClient(app)
    try:
        assert handshakes(client, ["/ws"]) == [101]

        def failing_session() -> None:
            with client.websocket_connect("/ws?fail=1") as conn:
                assert conn.receive_text() == "hi"
                conn.receive_text()

        for _ in range(2):
            with pytest.raises(RuntimeError, match="upstream gone"):
                failing_session()
        with pytest.raises(WebSocketDenialResponse) as denied:
            client.websocket_connect("/ws").__enter__()
        assert denied.value.status_code == 503
        assert int(denied.value.headers["retry-after"]) > 0
    finally:
        breakers.remove(name)
