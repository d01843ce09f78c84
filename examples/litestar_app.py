"""Litestar under seawall (any ASGI framework): ``uvicorn --app-dir examples litestar_app:app``."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, Response, get

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


@get("/")
async def index() -> dict[str, str | None]:
    return {"hello": "world", "request_id": request_id()}


@get("/items/{item_id:int}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@get("/boom")
async def boom() -> None:
    raise RuntimeError("something broke")


def reraise(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Litestar answers unhandled errors with its own 500 (a 500 handler gets
    # every non-HTTP exception); re-raise them so the wall's ErrorCapture
    # logs them once and answers problem+json. HTTP errors (404...) stay Litestar's.
    raise exc


litestar = Litestar([index, item, boom], exception_handlers={500: reraise}, logging_config=None)
app = Seawall(
    litestar,
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
