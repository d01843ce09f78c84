"""count_when on each framework's own decorator or dependency (flask-limiter's deduct_when idiom).

The handler's limiter is not a layer of the stack: it tests on the way in,
and the driver calls it back with the status once the response went out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

Send = Callable[[str], int]  # path -> status


def flask_send() -> Send:
    from flask import Flask, request

    from seawall.flask import Seawall

    app = Flask(__name__)
    guard = Seawall(app)

    @app.get("/login")
    @guard.limit("2/minute", count_when="failure")
    def login() -> Any:
        return ("no", 401) if "fail" in request.args else "ok"

    client = app.test_client()
    # buffered: Flask's test client closes the response then, as a server does.
    return lambda path: client.get(path, buffered=True).status_code


def fastapi_send() -> Send:
    from fastapi import Depends, FastAPI, HTTPException
    from starlette.testclient import TestClient

    from seawall.fastapi import SeawallMiddleware, limit

    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=[])

    @app.get("/login", dependencies=[Depends(limit("2/minute", count_when="failure"))])
    async def login(fail: str | None = None) -> Any:
        if fail is not None:
            raise HTTPException(401)
        return {"ok": True}

    client = TestClient(app)
    return lambda path: client.get(path.replace("?fail", "?fail=1")).status_code


def django_send(mode: str) -> Send:
    from django.test import AsyncClient, Client

    user = uuid.uuid4().hex  # the views' limiters live for the whole session
    route = "/login" if mode == "sync" else "/alogin"
    client: Any = Client() if mode == "sync" else AsyncClient()

    def send(path: str) -> int:
        call = client.get(path.replace("/login", route), headers={"X-User": user})
        return (call if mode == "sync" else asyncio.run(call)).status_code

    return send


SENDERS: dict[str, Callable[[], Send]] = {
    "flask": flask_send,
    "fastapi": fastapi_send,
    "django-sync": lambda: django_send("sync"),
    "django-async": lambda: django_send("async"),
}


@pytest.mark.parametrize("framework", list(SENDERS))
def test_only_failures_use_up_the_decorators_limit(framework: str) -> None:
    send = SENDERS[framework]()
    ok = [send("/login") for _ in range(4)]
    failed = [send("/login?fail") for _ in range(3)]
    assert ok == [200] * 4
    assert failed == [401, 401, 429]
    assert send("/login") == 429
