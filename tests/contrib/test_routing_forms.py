"""Rules match every path form the framework routes to the rule's view.

A client must not step around ``"POST /login"`` by sending a form of the
path (or of the method) the framework still routes to the login view:
werkzeug routes ``//login`` there, Starlette routes ``/login%0a`` (its route
regexes end in ``$``, which matches before a final newline), Flask, Django
and Starlette's ``Route`` run a GET view for HEAD, and werkzeug and Django
upper-case a ``post`` sent by servers that pass it through.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from seawall import RateLimit, Validation
from seawall._breaker.patterns import compile_pattern
from seawall._ratelimit.rules import Matcher
from seawall._validation.routes import RouteRule


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/login", "login"),
        ("POST", "//login", "login"),
        ("POST", "///login", "login"),
        ("POST", "/login\n", "login"),
        ("HEAD", "/search", "search"),
        ("POST", "/login/", None),
        ("POST", "/loginx", None),
        ("POST", "/login\n\n", None),
        ("POST", "/search", None),
    ],
)
def test_rule_matching(method: str, path: str, expected: str | None) -> None:
    matcher = Matcher([("POST /login", "login"), ("GET /search", "search")])
    assert matcher.match(method, path) == expected
    rule = RouteRule("POST /login" if expected != "search" else "GET /search")
    assert rule.matches(method, path) is (expected is not None)


def test_breaker_and_timeout_patterns() -> None:
    pattern = compile_pattern("/items/<int:id>")
    assert [bool(pattern.fullmatch(p)) for p in ("/items/5", "//items/5", "/items/5\n")] == [
        True,
        True,
        True,
    ]
    assert pattern.fullmatch("/items/x") is None


def _starlette(layers: list[Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from seawall import Seawall

    async def login(request: Any) -> PlainTextResponse:
        return PlainTextResponse("in")

    app = Starlette(routes=[Route("/login", login, methods=["POST"])])
    client = TestClient(Seawall(app, layers=layers))
    return lambda method, path: client.request(method, path, json={}).status_code


def _flask(layers: list[Any]) -> Any:
    from flask import Flask

    from seawall.flask import Seawall

    app = Flask(__name__)
    Seawall(app, layers=layers)
    app.post("/login")(lambda: "in")

    def send(method: str, path: str) -> int:
        # A raw environ: werkzeug's test client would upper-case the method.
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "10.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        status: list[str] = []
        body = app(environ, lambda s, h, e=None: status.append(s))
        b"".join(body)
        getattr(body, "close", lambda: None)()
        return int(status[0].split()[0])

    return send


@pytest.mark.parametrize(
    ("framework", "method", "path"),
    [
        ("starlette", "POST", "/login%0a"),
        ("flask", "POST", "//login"),
        ("flask", "post", "/login"),
    ],
)
def test_a_routed_form_of_the_path_is_limited(framework: str, method: str, path: str) -> None:
    """The framework runs the login view for it: the login rule counts it."""
    build = _starlette if framework == "starlette" else _flask
    send = build([RateLimit("1000/minute", rules={"POST /login": "2/minute"})])
    assert [send(method, path) for _ in range(3)] == [200, 200, 429]


def test_head_is_limited_by_a_get_rule() -> None:
    from flask import Flask

    from seawall.flask import Seawall

    app = Flask(__name__)
    Seawall(app, layers=[RateLimit("1000/minute", rules={"GET /search": "2/minute"})])
    app.get("/search")(lambda: "results")
    client = app.test_client()
    assert [client.head("/search", buffered=True).status_code for _ in range(3)] == [200, 200, 429]


def test_validation_routes_see_the_routed_forms() -> None:
    """A per-route schema is enforced on /login%0a, which Starlette routes to /login."""
    schema = {"type": "object", "required": ["user"]}
    send = _starlette([Validation(schemas={"POST /login": schema})])
    assert send("POST", "/login%0a") == 422


@pytest.mark.parametrize("charset", ["utf-7", "utf-16", "cp500"])
def test_a_charset_that_respells_ascii_is_refused_where_threats_are_scanned(charset: str) -> None:
    """Django on WSGI decodes the query with the charset the client names (UTF-7: +ACc-)."""
    from django.test import Client, override_settings

    payload = "1' UNION SELECT password FROM users --"
    query = payload.encode(charset).decode("latin-1")
    settings = {"validation": {"threats": "block"}}
    with override_settings(SEAWALL=settings, ROOT_URLCONF="tests.contrib.django_views"):
        client = Client()
        hidden = client.get(
            "/items/1", {"q": query}, headers={"content-type": f"text/plain; charset={charset}"}
        )
        plain = client.get("/items/1", {"q": "hello"}, headers={"content-type": "text/plain"})
    assert hidden.status_code == 415
    assert plain.status_code == 200


def test_behind_a_prefix_rules_and_endpoints_match_the_path_inside_the_app() -> None:
    """SCRIPT_NAME (gunicorn behind a proxy) and root_path: probes and rules still match.

    The layers matched SCRIPT_NAME + PATH_INFO (and the ASGI path with its
    root path), so /app/health/ready was the app's 404 and a login rule
    never applied.
    """
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient
    from werkzeug.test import Client

    from seawall import Health, Seawall

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    def layers() -> list[Any]:
        return [Health(), RateLimit("1000/minute", rules={"GET /login": "2/minute"})]

    wsgi = Client(Seawall(wsgi_app, layers=layers()))
    base = "http://localhost/app/"  # SCRIPT_NAME /app, as gunicorn sets it behind a proxy
    ready = wsgi.get("/health/ready", base_url=base, buffered=True)
    assert ready.status_code == 200
    assert ready.data != b"app"  # Health answered, not the app
    statuses = [wsgi.get("/login", base_url=base, buffered=True).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]

    async def login(request: Any) -> PlainTextResponse:
        return PlainTextResponse("in")

    inner = Starlette(routes=[Route("/login", login)])
    asgi = TestClient(Seawall(inner, layers=layers()), root_path="/api")
    probe = asgi.get("/api/health/ready")
    assert (probe.status_code, probe.text != "in") == (200, True)
    assert [asgi.get("/api/login").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_seawalls_own_answers_to_head_have_no_body(interface: str) -> None:
    """RFC 9110: a HEAD answer carries a GET's headers and no body (gunicorn warned)."""
    from werkzeug.test import Client

    from seawall import ErrorCapture, Health, Seawall

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    layers = [ErrorCapture(), Health()]
    if interface == "wsgi":
        client: Any = Client(Seawall(wsgi_app, layers=layers))

        def send(method: str, path: str) -> tuple[int, bytes, str]:
            r = client.open(path, method=method, buffered=True)
            return r.status_code, r.data, r.headers["Content-Length"]
    else:
        # The driver's own messages: an HTTP client drops a HEAD answer's body itself.
        wall = Seawall(asgi_app, layers=layers)

        def send(method: str, path: str) -> tuple[int, bytes, str]:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def collect(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": method,
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [],
                "client": ("10.0.0.1", 1),
            }
            asyncio.run(wall(scope, receive, collect))
            head = dict(sent[0]["headers"])
            body = b"".join(m.get("body", b"") for m in sent[1:])
            return sent[0]["status"], body, head[b"content-length"].decode()

    for path, status in (("/health/ready", 200), ("/boom", 500)):
        got, body, length = send("GET", path)
        assert (got, int(length)) == (status, len(body))
        head_status, head_body, head_length = send("HEAD", path)
        assert (head_status, head_body) == (status, b"")
        assert int(head_length) > 0
