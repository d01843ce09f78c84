"""Same settings, same answers: Flask, Django and FastAPI behave alike."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from seawall.config import LAYER_KEYS
from seawall.exceptions import RateLimited, ValidationFailed

SETTINGS: dict[str, Any] = {
    "timing": {"response_time_header": True},
    "error_capture": True,
    "test_deny": {"header": "x-deny"},
}

# (method, path, headers) -> what every framework must answer.
REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/items/1", {}),
    ("/items/1", {"x-deny": "1"}),
    ("/boom", {}),
    ("/rejected", {}),
    ("/items/2", {"x-request-id": "abc-123"}),
    ("/invalid/%3Cscript%3E", {}),
]

VOLATILE = {"request_id", "error_id"}
SAME_HEADERS = ("retry-after", "x-deny-policy", "x-deny-checked")


@pytest.fixture(autouse=True)
def _test_layer_key() -> Iterator[None]:
    LAYER_KEYS["test_deny"] = "tests.contrib.layers:Deny"
    yield
    del LAYER_KEYS["test_deny"]


Client = Callable[..., Any]


def flask_client(settings: dict[str, Any] = SETTINGS) -> Client:
    from flask import Flask

    from seawall.flask import Seawall

    app = Flask(__name__)
    app.config["SEAWALL"] = settings
    Seawall(app)
    app.route("/items/<int:id>", methods=["GET", "POST"])(lambda id: {"id": id})

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("secret hunter2")

    @app.get("/rejected")
    def rejected() -> Any:
        raise RateLimited("slow down", retry_after=7)

    @app.get("/invalid/<payload>")
    def invalid(payload: str) -> Any:
        raise ValidationFailed("The body does not match the schema.", status=422)

    @app.get("/own-id")
    def own_id() -> Any:
        return "ok", 200, {"X-Request-ID": "from-the-app"}

    client = app.test_client()

    def get(path: str, headers: dict[str, str], body: bytes | None = None) -> Any:
        if body is None:
            r = client.get(path, headers=headers, buffered=True)
        else:
            r = client.post(path, headers=headers, data=body, buffered=True)
        return r.status_code, dict(r.headers), r.data

    return get


def django_client(mode: str, settings: dict[str, Any] = SETTINGS) -> Client:
    from django.test import AsyncClient, Client, override_settings

    # One client (one middleware, one wall) for the whole sequence, as in a server.
    with override_settings(SEAWALL=settings):
        client: Any = (Client if mode == "sync" else AsyncClient)(raise_request_exception=False)
        client.handler.load_middleware(is_async=mode == "async")

    def get(path: str, headers: dict[str, str], body: bytes | None = None) -> Any:
        if body is None:
            call = client.get(path, headers=headers)
        else:
            # Django's client takes the content type on its own.
            headers = dict(headers)
            ctype = headers.pop("content-type", "application/octet-stream")
            call = client.post(path, body, content_type=ctype, headers=headers)
        r = call if mode == "sync" else asyncio.run(call)
        return r.status_code, dict(r.headers), r.content

    return get


def fastapi_client(settings: dict[str, Any] = SETTINGS) -> Client:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from seawall.fastapi import SeawallMiddleware

    app = FastAPI()
    app.add_middleware(SeawallMiddleware, config=settings)

    @app.api_route("/items/{id}", methods=["GET", "POST"])
    async def item(id: int) -> Any:
        return {"id": id}

    @app.get("/boom")
    async def boom() -> Any:
        raise RuntimeError("secret hunter2")

    @app.get("/rejected")
    async def rejected() -> Any:
        raise RateLimited("slow down", retry_after=7)

    @app.get("/invalid/{payload}")
    async def invalid(payload: str) -> Any:
        raise ValidationFailed("The body does not match the schema.", status=422)

    @app.get("/own-id")
    async def own_id() -> Any:
        from starlette.responses import Response

        return Response("ok", headers={"X-Request-ID": "from-the-app"})

    client = TestClient(app, raise_server_exceptions=False)

    def get(path: str, headers: dict[str, str], body: bytes | None = None) -> Any:
        if body is None:
            r = client.get(path, headers=headers)
        else:
            r = client.post(path, headers=headers, content=body)
        return r.status_code, dict(r.headers), r.content

    return get


def normalise(answer: Any) -> dict[str, Any]:
    status, headers, body = answer
    headers = {k.lower(): v for k, v in headers.items()}
    ctype = headers.get("content-type", "").split(";")[0]
    out: dict[str, Any] = {
        "status": status,
        "content_type": ctype,
        "headers": {name: headers.get(name) for name in SAME_HEADERS},
        "has_timing": "server-timing" in headers and "x-response-time" in headers,
        "has_request_id": bool(headers.get("x-request-id")),
    }
    if ctype == "application/problem+json":
        doc = json.loads(body)
        assert doc.get("request_id") == headers["x-request-id"]
        out["problem"] = {k: v for k, v in doc.items() if k not in VOLATILE}
    else:
        out["body"] = {k: v for k, v in json.loads(body).items() if k != "rid"}
    if headers.get("x-request-id") == "abc-123":
        out["echoed_id"] = True
    return out


EXPECTED = [
    {
        "status": 200,
        "content_type": "application/json",
        "headers": {"retry-after": None, "x-deny-policy": "test", "x-deny-checked": "1"},
        "has_timing": True,
        "has_request_id": True,
        "body": {"id": 1},
    },
    {
        "status": 429,
        "content_type": "application/problem+json",
        "headers": {"retry-after": "7", "x-deny-policy": "test", "x-deny-checked": "1"},
        "has_timing": True,
        "has_request_id": True,
        "problem": {
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Too Many Requests",
            "status": 429,
            "detail": "Slow down.",
            "instance": "/items/1",
        },
    },
    {
        "status": 500,
        "content_type": "application/problem+json",
        "headers": {"retry-after": None, "x-deny-policy": "test", "x-deny-checked": "1"},
        "has_timing": True,
        "has_request_id": True,
        "problem": {
            "type": "urn:seawall:problem:internal-error",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "The server failed to handle this request; "
            "quote the error id when reporting it.",
            "instance": "/boom",
        },
    },
    {
        "status": 429,
        "content_type": "application/problem+json",
        "headers": {"retry-after": "7", "x-deny-policy": "test", "x-deny-checked": "1"},
        "has_timing": True,
        "has_request_id": True,
        "problem": {
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Too Many Requests",
            "status": 429,
            "detail": "slow down",
            "instance": "/rejected",
            "retry_after": 7,
        },
    },
    {
        "status": 200,
        "content_type": "application/json",
        "headers": {"retry-after": None, "x-deny-policy": "test", "x-deny-checked": "1"},
        "has_timing": True,
        "has_request_id": True,
        "body": {"id": 2},
        "echoed_id": True,
    },
    {
        # A validation refusal never echoes the path: it may be the payload.
        "status": 422,
        "content_type": "application/problem+json",
        "headers": {"retry-after": None, "x-deny-policy": "test", "x-deny-checked": "1"},
        "has_timing": True,
        "has_request_id": True,
        "problem": {
            "type": "urn:seawall:problem:invalid-request",
            "title": "Bad Request",
            "status": 422,
            "detail": "The body does not match the schema.",
        },
    },
]


FRAMEWORKS = ["flask", "django-sync", "django-async", "fastapi"]


def client_for(framework: str, settings: dict[str, Any] = SETTINGS) -> Client:
    if framework == "flask":
        return flask_client(settings)
    if framework == "fastapi":
        return fastapi_client(settings)
    return django_client(framework.split("-")[1], settings)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_settings_same_answers(framework: str, logs: list[dict[str, Any]]) -> None:
    """Statuses, headers and problem bodies match across the three adapters."""
    get = client_for(framework)
    answers = [normalise(get(path, headers)) for path, headers in REQUESTS]
    assert answers == EXPECTED
    assert len([e for e in logs if e["event"] == "seawall.error.captured"]) == 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_apps_own_request_id_is_kept_alike(framework: str) -> None:
    """A response that carries its own X-Request-ID keeps it, alone, on every adapter."""
    status, headers, _ = client_for(framework)("/own-id", {"x-request-id": "abc-123"})
    assert status == 200
    ids = [v for k, v in headers.items() if k.lower() == "x-request-id"]
    assert ids == ["from-the-app"]


LIMITED: dict[str, Any] = {
    "timing": True,
    "error_capture": True,
    "rate_limit": {"limit": "2/minute"},
    "validation": {"max_body": 10},
}


def limited_answers(framework: str) -> list[dict[str, Any]]:
    """An 11-byte POST (413), then two GETs (200, then 429), normalised."""
    send = client_for(framework, LIMITED)
    answers = [
        send("/items/1", {}, b"x" * 11),
        send("/items/1", {}),
        send("/items/1", {}),
    ]
    out = []
    for status, raw_headers, body in answers:
        headers = {k.lower(): v for k, v in raw_headers.items()}
        entry: dict[str, Any] = {
            "status": status,
            "policy": headers.get("ratelimit-policy"),
            # t= (seconds to the window's reset) depends on when the test runs.
            "ratelimit": re.sub(r";t=\d+", ";t=T", headers.get("ratelimit", "")),
            "retry_after": "retry-after" in headers and int(headers["retry-after"]) > 0,
        }
        if headers.get("content-type") == "application/problem+json":
            doc = json.loads(body)
            assert doc.pop("request_id") == headers["x-request-id"]
            doc.pop("retry_after", None)
            entry["problem"] = doc
        out.append(entry)
    return out


def test_same_limits_same_answers() -> None:
    """RateLimit and Validation answer alike on every adapter (statuses, headers, problems)."""
    results = {framework: limited_answers(framework) for framework in FRAMEWORKS}
    flask = results["flask"]
    assert [a["status"] for a in flask] == [413, 200, 429]
    assert flask[0]["problem"]["status"] == 413
    assert flask[2]["problem"]["type"].endswith("quota-exceeded")
    assert flask[2]["retry_after"]
    assert flask[1]["policy"]
    assert flask[1]["ratelimit"]
    for framework, answers in results.items():
        assert answers == flask, framework


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_count_when_failure_alike(framework: str) -> None:
    """count_when from settings: only the failures use up the limit, on every adapter."""
    send = client_for(
        framework,
        {"error_capture": True, "rate_limit": {"limit": "2/minute", "count_when": "failure"}},
    )
    statuses = [send(path, {})[0] for path in ["/items/1"] * 3 + ["/boom"] * 3 + ["/items/1"]]
    assert statuses == [200, 200, 200, 500, 500, 429, 429]
