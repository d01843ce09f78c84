"""FastAPI's middleware against generated endpoints, requests and stacks (hypothesis).

Each example builds a FastAPI app with ``add_middleware(SeawallMiddleware,
layers=...)`` and a generated stack, one endpoint that follows a generated
script (status, headers, a dict, a ``Response`` or a ``StreamingResponse``,
whether it reads the body, a background task, what it raises: our
``RateLimited``, an ``HTTPException``, a plain exception), optionally the
app's own exception handlers, and checks through Starlette's test client:

- the endpoint's status, headers and body reach the client unchanged;
- the endpoint reads the request body byte-identical, or gets a 413 past a
  layer's limit;
- background tasks still run;
- the request id goes out exactly once, the endpoint's own if it set one;
- ``RateLimited`` is a 429 problem response unless the app handles it;
  ``HTTPException`` keeps its status and is not captured as an error; the
  app's own handlers answer what they handle; another exception is a 500
  problem response with ErrorCapture;
- every layer hears ``on_complete`` exactly once, with the status the
  client saw, after the background task ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import seawall
from seawall.exceptions import RateLimited
from seawall.fastapi import SeawallMiddleware
from tests.contrib.conformance import (
    CHUNKS,
    OWN_ID,
    PROBLEM,
    REQUEST_FIELDS,
    STACKS,
    STATUSES,
    Answer,
    Probe,
    check_common,
    check_echo,
)
from tests.drivers.test_conformance_asgi import LAYERS, assert_released


class Boom(RuntimeError):
    """What a generated endpoint raises."""


class Handled(RuntimeError):
    """An exception the app's own handler answers (418)."""


@dataclass
class Script:
    status: int
    headers: dict[str, str]
    chunks: list[bytes]
    kind: str  # "dict", "response", "streaming"
    read_body: bool
    background: bool
    raises: str | None  # None, "boom", "reject", "http403", "http404", "handled"
    own_handlers: bool  # the app handles RateLimited and Handled itself
    # What the endpoint saw.
    called: bool = False
    received: bytes | None = None
    rid: str | None = None
    task_ran: bool = False


scripts = st.builds(
    Script,
    status=STATUSES,
    headers=st.one_of(
        st.just({}),
        st.just({"X-App": "1", "Cache-Control": "no-store"}),
        st.just({"X-Request-ID": OWN_ID}),
    ),
    chunks=CHUNKS,
    kind=st.sampled_from(["dict", "response", "streaming"]),
    read_body=st.booleans(),
    background=st.booleans(),
    raises=st.sampled_from([None, None, None, "boom", "reject", "http403", "http404", "handled"]),
    own_handlers=st.booleans(),
)

requests = st.fixed_dictionaries(REQUEST_FIELDS)


def make_app(script: Script, layers: list[Any], probe: Probe) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SeawallMiddleware, layers=layers)
    if script.own_handlers:

        @app.exception_handler(RateLimited)
        async def mine(request: Request, exc: RateLimited) -> Response:
            return Response(b"mine", status_code=429)

    @app.exception_handler(Handled)
    async def handled(request: Request, exc: Handled) -> Response:
        return Response(b"handled", status_code=418)

    def task() -> None:
        # The layers hear the end only after background tasks ran.
        assert probe.outcomes == []
        script.task_ran = True

    @app.api_route("/scripted", methods=["GET", "POST"])
    async def scripted(request: Request, tasks: BackgroundTasks) -> Any:
        script.called = True
        script.rid = seawall.request_id()
        if script.read_body:
            script.received = await request.body()
        if script.background:
            tasks.add_task(task)
        raises = script.raises
        if raises == "boom":
            raise Boom("generated")
        if raises == "reject":
            raise RateLimited("generated", retry_after=3)
        if raises in ("http403", "http404"):
            raise HTTPException(status_code=int(raises[-3:]))
        if raises == "handled":
            raise Handled("generated")
        if script.kind == "streaming":
            return StreamingResponse(
                iter(script.chunks), status_code=script.status, headers=script.headers
            )
        if script.kind == "response":
            return Response(
                b"".join(script.chunks), status_code=script.status, headers=script.headers
            )
        return JSONResponse(
            {"n": len(script.chunks)}, status_code=script.status, headers=script.headers
        )

    return app


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, request_=requests, names=STACKS)
def test_fastapi_middleware_keeps_its_promises(
    script: Script, request_: dict[str, Any], names: list[str]
) -> None:
    probe = Probe()
    layers = [LAYERS[name]() for name in names]
    app = make_app(script, [*layers, probe], probe)
    headers = {} if request_["rid"] is None else {"X-Request-ID": request_["rid"]}
    post = request_["method"] == "POST"
    sent = request_["body"] if post else b""
    if post:
        headers["Content-Type"] = request_["content_type"]
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.request(
            request_["method"], "/scripted", content=sent if post else None, headers=headers
        )
    body = response.content
    assert probe.requests == 1
    assert len(probe.outcomes) == 1
    outcome = probe.outcomes[0]
    assert_released(layers)
    status = response.status_code
    rids = response.headers.get_list("x-request-id")
    errors = [layer for layer in layers if layer.name == "errors"]

    if status == 500 and not errors and script.raises == "boom":
        # Starlette's own 500: the exception went through the wall unanswered.
        assert isinstance(outcome.exception, Boom)
        return
    answer = Answer(status, response.headers.get("content-type"), body, rids)
    own_id = script.raises is None and "X-Request-ID" in script.headers
    if check_common(
        answer,
        probe,
        layers,
        script,
        request_,
        names,
        own_id=own_id,
        problem=not script.own_handlers,
    ):
        return

    if script.raises is None:
        assert status == script.status
        if script.kind == "dict":
            assert json.loads(body) == {"n": len(script.chunks)}
        else:
            assert body == b"".join(script.chunks)
        for name, value in script.headers.items():
            if name != "X-Request-ID":
                assert response.headers[name] == value
        check_echo(answer, request_["rid"], own_id=own_id)
        assert script.task_ran == script.background
        assert outcome.exception is None
        return

    if script.raises.startswith("http"):
        # HTTPException keeps its meaning, and is not ours.
        assert status == int(script.raises[-3:])
        assert all(layer.stats()["captured"] == 0 for layer in errors)
    elif script.raises == "handled":
        assert status == 418
        assert body == b"handled"
        assert all(layer.stats()["captured"] == 0 for layer in errors)
    elif script.raises == "reject":
        assert status == 429
        if script.own_handlers:
            assert body == b"mine"
        else:
            assert response.headers["content-type"] == PROBLEM
            assert json.loads(body)["request_id"] == rids[0]
            assert response.headers["retry-after"] == "3"
    else:
        assert status == 500
        assert response.headers["content-type"] == PROBLEM
        doc = json.loads(body)
        assert doc["request_id"] == rids[0]
        assert b"generated" not in body
        assert all(layer.stats()["captured"] == 1 for layer in errors)
