"""The Flask extension against generated views, requests and stacks (hypothesis).

The Flask extension puts the WSGI driver around ``app.wsgi_app`` and hooks
into Flask's error handling; this test checks that the two keep the
drivers' promises together. Each example builds a Flask app with
``seawall.flask.Seawall`` and a generated stack, one view that follows a
generated script (status, headers, plain or generated body, whether it
reads the request body, what it raises: our ``RateLimited``, ``abort()``,
a plain exception), optionally the app's own handlers for ``Rejected`` and
500, in testing mode or not, sync or async, and checks:

- the view's status, headers and body reach the client unchanged;
- the view reads the request body byte-identical, or gets a 413 past a
  layer's limit;
- the request id goes out exactly once, the view's own if it set one;
- ``RateLimited`` is a 429 problem response unless the app handles it;
  ``abort()`` keeps its status and is not captured as an error; another
  exception is logged once by ErrorCapture and answered with a 500
  problem response, or the app's own 500 handler, or Flask's own page,
  or in testing mode raised on to the test;
- every layer hears ``on_complete`` exactly once, with the status the
  client saw;
- the request's logging context is gone afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, abort, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seawall
from seawall.exceptions import RateLimited, Rejected
from seawall.flask import Seawall
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
    """What a generated view raises."""


@dataclass
class Script:
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    generated: bool  # the body from a generator, streamed
    read_body: bool
    raises: str | None  # None, "boom", "reject", "abort403", "abort404"
    asynchronous: bool
    own_handlers: bool  # the app handles Rejected and 500 itself
    testing: bool  # app.testing: Flask re-raises view exceptions
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
    generated=st.booleans(),
    read_body=st.booleans(),
    raises=st.sampled_from([None, None, None, "boom", "reject", "abort403", "abort404"]),
    asynchronous=st.booleans(),
    own_handlers=st.booleans(),
    testing=st.booleans(),
)

requests = st.fixed_dictionaries(REQUEST_FIELDS)


def make_app(script: Script, layers: list[Any]) -> Flask:
    app = Flask(__name__)
    app.testing = script.testing
    if script.own_handlers:
        # Registered before the extension: the app's own win.
        app.register_error_handler(Rejected, lambda exc: ("mine", 429))
        app.register_error_handler(500, lambda exc: ("mine500", 500))
    Seawall(app, layers=layers)

    def respond() -> Any:
        script.called = True
        script.rid = seawall.request_id()
        if script.read_body:
            script.received = request.get_data()
        raises = script.raises
        if raises == "boom":
            raise Boom("generated")
        if raises == "reject":
            raise RateLimited("generated", retry_after=3)
        if raises == "abort403":
            abort(403)
        if raises == "abort404":
            abort(404)
        body: Any = iter(script.chunks) if script.generated else b"".join(script.chunks)
        return Response(body, status=script.status, headers=script.headers)

    if script.asynchronous:

        async def view() -> Any:
            return respond()

    else:

        def view() -> Any:
            return respond()

    app.add_url_rule("/scripted", view_func=view, methods=["GET", "POST"])
    return app


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, request_=requests, names=STACKS)
def test_flask_extension_keeps_its_promises(
    script: Script, request_: dict[str, Any], names: list[str]
) -> None:
    probe = Probe()
    layers = [LAYERS[name]() for name in names]
    app = make_app(script, [*layers, probe])
    client = app.test_client()
    headers = {} if request_["rid"] is None else {"X-Request-ID": request_["rid"]}
    sent = request_["body"] if request_["method"] == "POST" else b""
    raised: BaseException | None = None
    try:
        response = client.open(
            "/scripted",
            method=request_["method"],
            data=sent if request_["method"] == "POST" else None,
            content_type=request_["content_type"] if request_["method"] == "POST" else None,
            headers=headers,
        )
        body = response.get_data()
        response.close()
    except Exception as exc:
        raised = exc
    assert seawall.request_id() is None
    assert probe.requests == 1
    assert len(probe.outcomes) == 1
    outcome = probe.outcomes[0]
    assert_released(layers)

    errors = [layer for layer in layers if layer.name == "errors"]
    if raised is not None:
        # Only a plain exception in testing mode gets out: Flask propagates it
        # to the test, once ErrorCapture (if in the stack) logged it.
        assert isinstance(raised, Boom)
        assert script.testing
        assert all(layer.stats()["captured"] == 1 for layer in errors)
        return

    status = response.status_code
    rids = response.headers.getlist("X-Request-ID")
    answer = Answer(status, response.headers.get("Content-Type"), body, rids)
    own_id = script.raises is None and ("X-Request-ID", OWN_ID) in script.headers
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
        assert body == b"".join(script.chunks)
        for name, value in script.headers:
            if name != "X-Request-ID":
                assert response.headers[name] == value
        check_echo(answer, request_["rid"], own_id=own_id)
        assert outcome.exception is None
        return

    if script.raises.startswith("abort"):
        # Flask's own HTTP errors keep their meaning, and are not ours.
        assert status == int(script.raises[-3:])
        assert all(layer.stats()["captured"] == 0 for layer in errors)
    elif script.raises == "reject":
        assert status == 429
        if script.own_handlers:
            assert body == b"mine"
        else:
            assert response.headers["Content-Type"] == PROBLEM
            assert json.loads(body)["request_id"] == rids[0]
            assert response.headers["Retry-After"] == "3"
    else:
        assert status == 500
        assert all(layer.stats()["captured"] == 1 for layer in errors)
        assert not script.testing  # it propagated (above)
        if script.own_handlers:
            assert body == b"mine500"
        elif errors:
            assert response.headers["Content-Type"] == PROBLEM
            doc = json.loads(body)
            assert doc["request_id"] == rids[0]
            assert b"generated" not in body
        else:
            assert response.headers["Content-Type"] != PROBLEM
