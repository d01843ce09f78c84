"""RateLimit on websocket handshakes (ASGI)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from seawall import RateLimit, Seawall
from seawall.testing import ManualClock


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
    else:
        assert isinstance(exc, WebSocketDisconnect)
        assert exc.code == 1008
