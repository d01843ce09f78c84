"""Differential: the ASGI and the WSGI driver answer alike.

The twin apps of :mod:`tests.apps` have the same routes; wrapped in the same
generated stack (layers that do refuse: tight rate limits, body and JSON
limits, sanitizing, threat blocking, a breaker that opens, a timeout) and
sent the same generated requests, the two drivers must give the same
status, the same headers the layers own (values, or presence where they hold
a time or an id), the same problem documents and the same bodies, including
the sanitized bodies the app echoes back.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall import (
    CircuitBreaker,
    ConcurrencyLimit,
    ErrorCapture,
    RateLimit,
    Timeout,
    Timing,
    Validation,
)
from tests.apps import Boom, client_for, wrap

LAYERS: dict[str, Any] = {
    "timing": lambda: Timing(response_time_header=True),
    "errors": ErrorCapture,
    "ratelimit": lambda: RateLimit(
        "5/minute", key="header:X-User", legacy_headers=True, rules={"/status/*": "2/minute"}
    ),
    "validation": lambda: Validation(
        max_body=120,
        max_json_depth=3,
        max_query_params=3,
        content_types=["application/json", "application/x-www-form-urlencoded", "text/plain"],
        sanitize={"POST /echo": ["comment", "nested.text"]},
        threats="block",
    ),
    "read_body": lambda: Validation(read_body=True),
    "breaker": lambda: CircuitBreaker(per="route", fail_max=2),
    "concurrency": lambda: ConcurrencyLimit(10, per_key=2),
    "timeout": lambda: Timeout(30.0),
}

# Headers the layers own: compared by value.
VALUES = (
    "content-type",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)
# Compared by presence: they hold a duration or a generated id.
PRESENT = ("server-timing", "x-response-time", "x-request-id")
# Problem fields that hold an id, or a timing (a time-based Retry-After rounds alike).
VOLATILE = {"request_id", "error_id"}

texts = st.sampled_from(
    ["hello", "<b>bold</b>", "<script>alert(1)</script>x", "' OR 1=1 --", "ünï", ""]
)
json_values = st.recursive(
    st.one_of(texts, st.integers(-5, 5), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["comment", "text", "nested", "a"]), inner, max_size=3),
    ),
    max_leaves=8,
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method, path = draw(
        st.sampled_from(
            [
                ("GET", "/"),
                ("GET", "/status/200"),
                ("GET", "/status/500"),
                ("GET", "/status/404"),
                ("GET", "/boom"),
                ("GET", "/stream"),
                ("POST", "/echo"),
                ("PUT", "/echo"),
            ]
        )
    )
    query = draw(st.sampled_from(["", "?a=1", "?a=1&b=2&c=3&d=4", "?q=%3Cscript%3E"]))
    headers = {"x-user": draw(st.sampled_from(["alice", "bob"]))}
    rid = draw(st.sampled_from([None, "abc-123", "bad id!"]))
    if rid is not None:
        headers["x-request-id"] = rid
    body = b""
    if method != "GET":
        kind = draw(st.sampled_from(["json", "form", "text", "xml"]))
        if kind == "json":
            body = json.dumps(draw(json_values)).encode()
            headers["content-type"] = "application/json"
        elif kind == "form":
            body = b"comment=" + draw(texts).encode().replace(b" ", b"+")
            headers["content-type"] = "application/x-www-form-urlencoded"
        elif kind == "text":
            body = draw(texts).encode() * draw(st.integers(1, 30))
            headers["content-type"] = "text/plain"
        else:
            body = b"<a/>"
            headers["content-type"] = "application/xml"
    return {"method": method, "url": path + query, "headers": headers, "content": body}


def _answer(client: httpx.Client, request: dict[str, Any]) -> httpx.Response | None:
    try:
        return client.request(
            request["method"],
            request["url"],
            headers=request["headers"],
            content=request["content"],
        )
    except Boom:
        # httpx's WSGI transport re-raises what the app raised; Starlette's
        # test client answers 500.
        return None


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    if response.headers.get("content-type") != "application/problem+json":
        return None
    document = json.loads(response.content)
    return {k: v for k, v in document.items() if k not in VOLATILE}


def _same(asgi: httpx.Response | None, wsgi: httpx.Response | None, where: Any) -> None:
    assert asgi is not None, where
    if wsgi is None:
        # The exception reached the server on both sides.
        assert asgi.status_code == 500, where
        assert _problem(asgi) is None, where
        return
    assert wsgi.status_code == asgi.status_code, where
    problem = _problem(asgi)
    assert _problem(wsgi) == problem, where
    if problem is None and asgi.status_code == 500:
        # An exception nothing answered: each test client makes its own 500.
        return
    for name in VALUES:
        assert wsgi.headers.get(name) == asgi.headers.get(name), (where, name)
    for name in PRESENT:
        assert (name in wsgi.headers) == (name in asgi.headers), (where, name)
    # A well-formed incoming id is echoed by both or by neither.
    echoed = [r.headers.get("x-request-id") == "abc-123" for r in (asgi, wsgi)]
    assert echoed[0] == echoed[1], where
    if problem is None:
        assert wsgi.content == asgi.content, where


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(st.sampled_from(sorted(LAYERS)), unique=True, max_size=len(LAYERS)),
    sent=st.lists(requests(), min_size=1, max_size=10),
)
def test_the_two_drivers_answer_alike(names: list[str], sent: list[dict[str, Any]]) -> None:
    """Same stack, same requests: the same statuses, headers, problems and bodies."""
    answers = {}
    for interface in ("asgi", "wsgi"):
        wall = wrap(interface, [LAYERS[name]() for name in names])
        with client_for(wall, raise_server_exceptions=False) as client:
            answers[interface] = [_answer(client, request) for request in sent]
    for index, (a, w) in enumerate(zip(answers["asgi"], answers["wsgi"], strict=True)):
        _same(a, w, (index, names, sent[index]))
