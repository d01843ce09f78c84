"""A bare ASGI app under seawall: ``uvicorn --app-dir examples plain_asgi:app``."""

from __future__ import annotations

import json
from typing import Any

from seawall import (
    CircuitBreaker,
    ConcurrencyLimit,
    ErrorCapture,
    Health,
    LoadShedding,
    Metrics,
    RateLimit,
    Seawall,
    Timeout,
    Timing,
    Validation,
    request_id,
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/boom":
        raise RuntimeError("something broke")
    body = json.dumps({"hello": "world", "request_id": request_id()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = Seawall(
    application,
    layers=[
        Timing(slow=0.5),
        ErrorCapture(),
        Health(resources=False),
        Metrics(),
        LoadShedding(cpu_threshold=None, memory_threshold=99.0),
        ConcurrencyLimit(64),
        RateLimit("100/minute"),
        Validation(max_body="1 MB"),
        CircuitBreaker(failure_rate_threshold=0.5),
        Timeout(10.0),
    ],
)
