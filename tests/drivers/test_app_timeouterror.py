"""An app's own ``TimeoutError`` is the app's error, not seawall's deadline.

An app that gives up on a slow call of its own (``asyncio.wait_for``)
raises ``TimeoutError``. It used to be taken for the Timeout layer's
deadline: with a Timeout layer it became a 504 counted as an exceeded
deadline; without one it escaped past ErrorCapture (no problem document)
and a breaker did not count it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from seawall import CircuitBreaker, ErrorCapture, Seawall, Timeout


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow-call":
        # The app's own timeout on a call that takes too long.
        await asyncio.wait_for(asyncio.sleep(1), 0.01)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("deadline", [None, 10.0])
def test_the_apps_timeouterror_is_a_500_and_a_failure(deadline: float | None) -> None:
    breaker = CircuitBreaker(fail_max=2)
    layers: list[Any] = [ErrorCapture(), breaker]
    timeout = Timeout(deadline) if deadline is not None else None
    if timeout is not None:
        layers.append(timeout)
    client = TestClient(Seawall(app, layers=layers), raise_server_exceptions=False)
    first = client.get("/slow-call")
    assert first.status_code == 500
    assert first.headers["content-type"] == "application/problem+json"
    assert json.loads(first.content)["status"] == 500
    client.get("/slow-call")
    # Two failures: the breaker opened.
    assert client.get("/").status_code == 503
    if timeout is not None:
        assert timeout.stats()["exceeded"] == 0


def test_the_deadline_itself_is_still_a_504() -> None:
    timeout = Timeout(0.05)
    client = TestClient(Seawall(app, layers=[ErrorCapture(), timeout]))
    response = client.get("/slow")
    assert response.status_code == 504
    assert timeout.stats()["exceeded"] == 1


def test_a_background_task_after_the_answer_runs_past_the_deadline() -> None:
    """The deadline bounds the answer: once its last byte went out, the app may go on."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    done: list[str] = []

    async def later() -> None:
        await asyncio.sleep(0.2)  # past the 0.1 s deadline
        done.append("bg")

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    timeout = Timeout(0.1)
    starlette = Starlette(routes=[Route("/", endpoint)])
    with TestClient(Seawall(starlette, layers=[ErrorCapture(), timeout])) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert done == ["bg"]
    assert timeout.stats()["exceeded"] == 0
