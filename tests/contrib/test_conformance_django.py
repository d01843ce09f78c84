"""The Django middleware against generated views, requests and stacks (hypothesis).

The Django middleware is a driver of its own (it runs the layers inside
Django's handler, not around a WSGI or ASGI app), so it gets the drivers'
generated-input test too. Each example sets ``SEAWALL = {"layers": [...]}``
to a generated stack, points one URL at a view that follows a generated
script (status, headers, plain or streaming body, whether it reads the
request body, what it raises: our ``RateLimited``, Django's own exceptions
or a plain one), sends a generated request through Django's sync or async
test client, and checks:

- the view's status, headers and body reach the client unchanged, a
  streaming response still streaming;
- the view reads the request body byte-identical, or gets a 413 past a
  layer's limit;
- the request id goes out exactly once, the view's own if it set one;
- ``RateLimited`` is a 429 problem response; Django's ``Http404``,
  ``PermissionDenied`` and ``SuspiciousOperation`` keep their meaning and
  are not captured as errors; another exception is a 500 problem response
  with ErrorCapture, Django's own 500 without;
- every layer hears ``on_complete`` exactly once (a streaming response: at
  its close), with the status the client saw;
- the request's logging context is gone afterwards.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seawall
from seawall.exceptions import RateLimited
from tests.contrib import django_views
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
from tests.drivers.test_conformance_asgi import LAYERS

#: What each raised exception becomes: Django's own keep their meaning.
DJANGO_OWN = {"http404": 404, "denied": 403, "suspicious": 400}


class Boom(RuntimeError):
    """What a generated view raises."""


@dataclass
class Script:
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    streaming: bool
    read_body: bool
    raises: str | None  # None, "boom", "reject", "http404", "denied", "suspicious"
    # What the view saw.
    called: bool = False
    received: bytes | None = None
    rid: str | None = None


scripts = st.builds(
    Script,
    status=STATUSES,
    headers=st.one_of(
        st.just([]),
        st.just([("X-App", "1"), ("Cache-Control", "no-store")]),
        st.just([("X-Request-ID", OWN_ID)]),
    ),
    chunks=CHUNKS,
    streaming=st.booleans(),
    read_body=st.booleans(),
    raises=st.sampled_from([None, None, None, "boom", "reject", "http404", "denied", "suspicious"]),
)

requests = st.fixed_dictionaries(
    {
        **REQUEST_FIELDS,
        "client": st.sampled_from(["sync", "async"]),
        "view": st.sampled_from(["/scripted", "/ascripted"]),
    }
)


def make_view(script: Script) -> Any:
    def view(request: Any) -> Any:
        script.called = True
        script.rid = seawall.request_id()
        if script.read_body:
            script.received = request.body
        raises = script.raises
        if raises == "boom":
            raise Boom("generated")
        if raises == "reject":
            raise RateLimited("generated", retry_after=3)
        if raises == "http404":
            raise Http404("generated")
        if raises == "denied":
            raise PermissionDenied("generated")
        if raises == "suspicious":
            raise SuspiciousOperation("generated")
        if script.streaming:
            response: Any = StreamingHttpResponse(iter(script.chunks), status=script.status)
        else:
            response = HttpResponse(b"".join(script.chunks), status=script.status)
        for name, value in script.headers:
            response[name] = value
        return response

    return view


def send(request: dict[str, Any]) -> tuple[Any, bytes]:
    """The response and its whole body, read (and so closed) as a client would."""
    kwargs: dict[str, Any] = {}
    if request["rid"] is not None:
        kwargs["headers"] = {"X-Request-ID": request["rid"]}
    if request["method"] == "POST":
        kwargs["data"] = request["body"]
        kwargs["content_type"] = request["content_type"]
    path = request["view"]
    if request["client"] == "sync":
        client = Client(raise_request_exception=False)
        response = getattr(client, request["method"].lower())(path, **kwargs)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return response, body

    async def run() -> tuple[Any, bytes]:
        client = AsyncClient(raise_request_exception=False)
        response = await getattr(client, request["method"].lower())(path, **kwargs)
        if not response.streaming:
            return response, response.content
        if response.is_async:
            return response, b"".join([chunk async for chunk in response.streaming_content])
        return response, b"".join(response.streaming_content)

    return asyncio.run(run())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, request=requests, names=STACKS)
def test_django_middleware_keeps_its_promises(
    script: Script, request: dict[str, Any], names: list[str]
) -> None:
    probe = Probe()
    layers = [LAYERS[name]() for name in names]
    django_views.SCRIPTED = make_view(script)
    try:
        with override_settings(SEAWALL={"layers": [*layers, probe]}):
            response, body = send(request)
    finally:
        django_views.SCRIPTED = None
    assert seawall.request_id() is None

    status = response.status_code
    rids = [v for k, v in response.items() if k.lower() == "x-request-id"]
    answer = Answer(status, response.get("Content-Type"), body, rids)
    own_id = script.raises is None and ("X-Request-ID", OWN_ID) in script.headers
    if check_common(answer, probe, layers, script, request, names, own_id=own_id, problem=True):
        return

    if script.raises is None:
        assert status == script.status
        assert response.streaming == script.streaming
        assert body == b"".join(script.chunks)
        for name, value in script.headers:
            if name.lower() != "x-request-id":
                assert response[name] == value
        check_echo(answer, request["rid"], own_id=own_id)
        assert probe.outcomes[0].exception is None
        return

    errors = [layer for layer in layers if layer.name == "errors"]
    if script.raises in DJANGO_OWN:
        # Django's own meaning, and not an error of ours.
        assert status == DJANGO_OWN[script.raises]
        assert all(layer.stats()["captured"] == 0 for layer in errors)
    elif script.raises == "reject":
        assert status == 429
        assert response["Content-Type"] == PROBLEM
        doc = json.loads(body)
        assert doc["request_id"] == rids[0]
        assert response["Retry-After"] == "3"
    else:
        assert status == 500
        if errors:
            assert response["Content-Type"] == PROBLEM
            doc = json.loads(body)
            assert doc["request_id"] == rids[0]
            assert "generated" not in body.decode()
            assert errors[0].stats()["captured"] == 1
        else:
            assert response["Content-Type"] != PROBLEM
