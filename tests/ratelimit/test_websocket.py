"""RateLimit on websocket handshakes (ASGI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from seawall import RateLimit, Seawall
from seawall.testing import ManualClock
from tests.ratelimit.conftest import serve


async def ws_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "hi"})
    await send({"type": "websocket.close", "code": 1000})


def test_handshakes_are_rate_limited() -> None:
    """Connections past the limit are refused at the handshake."""
    client = TestClient(Seawall(ws_app, layers=[RateLimit("2/minute", clock=ManualClock())]))
    for _ in range(2):
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hi"
    # Either a denial response (a real 429) or a close with code 1008.
    with pytest.raises(Exception) as refused, client.websocket_connect("/ws") as ws:  # noqa: PT011
        ws.receive_text()
    exc = refused.value
    status = getattr(exc, "status_code", None)
    if status is not None:  # the denial-response extension: a real 429
        assert status == 429
        assert json.loads(exc.content)["request_id"]
    else:
        assert isinstance(exc, WebSocketDisconnect)
        assert exc.code == 1008


# -- messages on an admitted websocket ------------------------------------------------

MESSAGES: list[Any] = []


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes each message; records how it ended, then tries to send once more."""
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            MESSAGES.append(("disconnect", message.get("code")))
            # A careless app: this must be dropped, not raise or reach the client.
            await send({"type": "websocket.send", "text": "after close"})
            return
        text = message.get("text") or (message.get("bytes") or b"").decode()
        MESSAGES.append(("got", text))
        await send({"type": "websocket.send", "text": "echo " + text})


def message_client(layer: RateLimit) -> TestClient:
    MESSAGES.clear()
    return TestClient(Seawall(echo_app, layers=[layer]))


def test_the_message_past_the_limit_closes_with_1008() -> None:
    layer = RateLimit("100/minute", websocket_messages="3/minute", clock=ManualClock())
    with message_client(layer).websocket_connect("/ws") as ws:
        for i in range(3):
            ws.send_text(str(i))
            assert ws.receive_text() == f"echo {i}"
        ws.send_bytes(b"one too many")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1008, "rate limit exceeded")
    assert MESSAGES == [("got", "0"), ("got", "1"), ("got", "2"), ("disconnect", 1008)]
    stats = layer.stats()["rules"]["websocket-messages"]
    assert (stats["allowed"], stats["limited"]) == (3, 1)
    assert layer.stats()["rules"]["default"]["allowed"] == 1  # the handshake


def test_a_key_has_one_budget_across_its_connections() -> None:
    layer = RateLimit("100/minute", websocket_messages="3/minute", clock=ManualClock())
    client = message_client(layer)
    with client.websocket_connect("/ws") as first:
        first.send_text("a")
        first.receive_text()
        first.send_text("b")
        first.receive_text()
    with client.websocket_connect("/ws") as second:
        second.send_text("c")
        assert second.receive_text() == "echo c"
        second.send_text("d")
        with pytest.raises(WebSocketDisconnect):
            second.receive_text()


def test_exempt_and_shadow_let_messages_through() -> None:
    for layer in (
        RateLimit("100/minute", websocket_messages="1/minute", exempt=["/ws"]),
        RateLimit("100/minute", websocket_messages="1/minute", shadow=True),
    ):
        with message_client(layer).websocket_connect("/ws") as ws:
            for i in range(3):
                ws.send_text(str(i))
                assert ws.receive_text() == f"echo {i}"


def test_messages_are_not_limited_unless_asked() -> None:
    layer = RateLimit("100/minute")
    assert not hasattr(layer, "on_websocket_message")
    assert Seawall(echo_app, layers=[layer]).stack.message_hooks == ()
    with message_client(layer).websocket_connect("/ws") as ws:
        for i in range(5):
            ws.send_text(str(i))
            assert ws.receive_text() == f"echo {i}"


def test_the_check_adds_no_header_lines() -> None:
    """A long connection must not pile up RateLimit header lines on its view."""
    from seawall import RequestView
    from seawall._run import run_flow

    layer = RateLimit("100/minute", websocket_messages="1000/minute")
    view = RequestView(method="GET", path="/ws", peer="10.1.1.1", headers=[])
    for _ in range(50):
        assert run_flow(layer.on_websocket_message(view)) is None
    assert view.response_headers == []


@pytest.mark.parametrize("value", [5, "lots"])
def test_a_bad_message_limit_fails_at_startup(value: Any) -> None:
    from seawall import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"^websocket_messages: "):
        RateLimit("1/minute", websocket_messages=value)


def test_a_handler_limit_takes_no_message_limit() -> None:
    from seawall import ConfigurationError, limit

    with pytest.raises(ConfigurationError, match="websocket_messages apply to the RateLimit"):
        limit("5/minute", websocket_messages="1/second")


def test_redis_message_budget_is_shared(redis_url: str, key_prefix: str) -> None:
    """Two apps (workers) on one Redis: one budget for the key's messages."""

    def client() -> TestClient:
        layer = RateLimit(
            "100/minute",
            websocket_messages="3/minute",
            storage=redis_url,
            key_prefix=key_prefix,
            key=lambda r: "user-3",
            storage_timeout=1.0,
        )
        return TestClient(Seawall(echo_app, layers=[layer]))

    MESSAGES.clear()
    with client().websocket_connect("/ws") as a, client().websocket_connect("/ws") as b:
        for ws, text in ((a, "1"), (b, "2"), (a, "3")):
            ws.send_text(text)
            assert ws.receive_text() == "echo " + text
        b.send_text("4")
        with pytest.raises(WebSocketDisconnect) as closed:
            b.receive_text()
    assert closed.value.code == 1008


@pytest.mark.server
def test_under_uvicorn(tmp_path: Path) -> None:
    """A real server and a real websocket client: the 4th message closes with 1008."""
    import asyncio
    import time

    import websockets

    app = (
        "from seawall import RateLimit, Seawall\n"
        "from tests.ratelimit.test_websocket import echo_app\n"
        "app = Seawall(echo_app, layers=[RateLimit('100/minute', websocket_messages='3/minute')])\n"
    )

    async def talk(address: str) -> tuple[list[str], int | None]:
        replies = []
        async with websockets.connect(f"ws://{address}/ws") as ws:
            for i in range(3):
                await ws.send(str(i))
                replies.append(await ws.recv())
            await ws.send("one too many")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        return replies, closed.value.rcvd.code if closed.value.rcvd else None

    argv = ["uvicorn", "app:app", "--port", "{port}", "--log-level", "warning"]
    argv += ["--ws", "websockets"]
    with serve(tmp_path, app, argv) as address:
        replies, code = asyncio.run(talk(address))
        time.sleep(0.3)  # the app's last (dropped) send happens after the close
    stderr = (tmp_path / "server.log").read_bytes()
    assert replies == ["echo 0", "echo 1", "echo 2"]
    assert code == 1008
    # The app's send after the close was dropped, not an error in the server's log.
    assert b"Traceback" not in stderr, stderr
    assert b"Unexpected ASGI message" not in stderr, stderr
