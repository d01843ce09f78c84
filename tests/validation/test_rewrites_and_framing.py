"""Sanitizing changes the named fields only; odd framing and header spellings do not slip past.

Each test here failed before its fix: ``*`` over arrays sanitized nothing,
a rewrite re-printed every number (``1e400`` as ``Infinity``, long decimals
rounded) and re-encoded every form pair, a lone surrogate made the rewrite
fail open with the body unsanitized, an ASGI body with neither
Content-Length nor Transfer-Encoding (HTTP/2) skipped every body check, a
``Content-Length: ²`` made the layer fail, ``threat_ignore_fields`` missed a
header spelled ``User-Agent``, and turning threat monitoring on refused
malformed JSON that ``json=False`` lets through.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
from typing import Any

import pytest

from seawall import Seawall, Validation
from tests.apps import asgi_app, client_for, lifespan, wrap

SCRIPT = "<script>alert(1)</script>"


def _echo(interface: str, layer: Validation, body: bytes, ctype: str, query: str = "") -> Any:
    with client_for(wrap(interface, [layer])) as client:
        return client.post(f"/echo{query}", content=body, headers={"content-type": ctype})


def test_wildcards_over_arrays_sanitize_each_item(interface: str) -> None:
    layer = Validation(sanitize={"POST /echo": ["tags.*", "items.*.name", "author.name"]})
    doc = {
        "tags": [SCRIPT, "ok"],
        "items": [{"name": SCRIPT, "qty": 1}],
        "author": {"name": SCRIPT},
    }
    response = _echo(interface, layer, json.dumps(doc).encode(), "application/json")
    assert response.status_code == 200
    echoed = json.loads(response.content)
    assert "<script>" not in json.dumps(echoed)
    assert echoed["tags"][1] == "ok"
    assert echoed["items"][0]["qty"] == 1


def test_a_json_rewrite_keeps_every_other_value_as_written(interface: str) -> None:
    layer = Validation(sanitize={"POST /echo": ["comment"]})
    body = (
        b'{"comment": "<b>hi</b><script>x</script>", "amount": 12345678901234567890.12345,'
        b' "ratio": 1.10, "huge": 1e400, "count": -0, "n": "\\ud800", "t": "caf\xc3\xa9"}'
    )
    response = _echo(interface, layer, body, "application/json")
    assert response.status_code == 200
    out = response.content
    assert b"<script>" not in out
    for kept in (b"12345678901234567890.12345", b"1.10", b"1e400", b"-0", b'"\\ud800"'):
        assert kept in out, (kept, out)
    # Valid JSON still, with the non-ASCII text intact.
    assert json.loads(out)["t"] == "café"


def test_a_form_rewrite_keeps_every_other_pair_as_sent(interface: str) -> None:
    layer = Validation(sanitize={"POST /echo": ["comment"]}, sanitize_query=["q"])
    body = b"name=Jos%E9&comment=%3Cscript%3Ex%3C%2Fscript%3Ehi&flag&x=a+b"
    response = _echo(
        interface,
        layer,
        body,
        "application/x-www-form-urlencoded",
        "?city=M%FCnchen&q=%3Cscript%3E&debug",
    )
    assert response.status_code == 200
    pieces = response.content.split(b"&")
    assert pieces[0] == b"name=Jos%E9"
    assert b"script" not in pieces[1]
    assert pieces[2:] == [b"flag", b"x=a+b"]


def _asgi_call(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """One HTTP/2-style request: the body framed by the protocol, not by a header."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "POST",
        "scheme": "https",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.9", 4711),
        "server": ("testserver", 443),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("threats", ["off", "block"])
def test_an_unframed_asgi_body_is_checked_like_a_framed_one(threats: str) -> None:
    schema = {"type": "object", "required": ["name"]}
    app = Seawall(
        asgi_app,
        layers=[
            Validation(
                schemas={"POST /echo": schema}, sanitize={"POST /echo": ["c"]}, threats=threats
            )
        ],
    )
    json_type = [(b"content-type", b"application/json")]
    status, _ = _asgi_call(app, json_type, b'{"c": "x"}')
    assert status == 422
    status, _ = _asgi_call(app, json_type, b"{not json")
    assert status == 400
    status, body = _asgi_call(app, json_type, json.dumps({"name": "a", "c": SCRIPT}).encode())
    if threats == "block":
        assert status == 403  # the script is a threat before it is a field to clean
    else:
        assert status == 200
        assert b"script" not in body
    # No body after all: passes, as Content-Length: 0 does.
    assert _asgi_call(app, json_type, b"")[0] == 200


def test_a_content_length_that_is_no_ascii_number_is_a_400(interface: str) -> None:
    layer = Validation(sanitize={"POST /echo": ["c"]})
    if interface == "asgi":
        headers = [(b"content-type", b"application/json"), (b"content-length", b"\xb2")]
        status, _ = _asgi_call(Seawall(asgi_app, layers=[layer]), headers, b'{"c": 1}')
    else:
        wall = wrap("wsgi", [layer])
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/echo",
            "SERVER_NAME": "x",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": "\xb2",
            "wsgi.input": io.BytesIO(b'{"c": 1}'),
            "wsgi.url_scheme": "http",
            "REMOTE_ADDR": "203.0.113.9",
        }
        seen: list[str] = []
        b"".join(wall(environ, lambda s, h, e=None: seen.append(s)))
        status = int(seen[0][:3])
    assert status == 400


def test_threat_ignore_fields_match_header_names_in_any_case(interface: str) -> None:
    layer = Validation(threats="block", threat_ignore_fields=["User-Agent"])
    with client_for(wrap(interface, [layer])) as client:
        response = client.get("/", headers={"user-agent": "x' OR '1'='1' --"})
    assert response.status_code == 200


def test_monitoring_threats_does_not_refuse_what_json_false_lets_through(interface: str) -> None:
    layer = Validation(json=False, threats="monitor")
    response = _echo(interface, layer, b"{not json", "application/json")
    assert response.status_code == 200
    assert response.content == b"{not json"


def test_max_url_measures_the_target_as_sent(interface: str) -> None:
    """A percent-encoded path is as long as it was sent, not as it decodes."""
    layer = Validation(max_url=200)
    long, short = "/" + "%C3%A9" * 40, "/" + "%C3%A9" * 30  # 241 and 181 sent, 41 and 31 decoded
    if interface == "wsgi":
        # werkzeug's test client gives REQUEST_URI and RAW_URI, as WSGI servers do
        # (httpx's WSGI transport gives neither).
        from werkzeug.test import Client

        client = Client(wrap("wsgi", [layer]))
        assert client.get(long).status_code == 414
        assert client.get(short).status_code == 200
        return
    with client_for(wrap(interface, [layer])) as asgi_client:
        assert asgi_client.get(long).status_code == 414
        assert asgi_client.get(short).status_code == 200


async def _echo_coding_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    coding = dict(scope["headers"]).get(b"content-encoding", b"-")
    headers = [(b"x-coding", coding)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _echo_coding_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("X-Coding", environ.get("HTTP_CONTENT_ENCODING", "-"))])
    return [body]


def test_gzip_bodies_are_checked_decoded(interface: str) -> None:
    import gzip

    app = _echo_coding_asgi if interface == "asgi" else _echo_coding_wsgi
    layer = Validation(
        max_body=1000,
        schemas={"POST /*": {"type": "object", "required": ["name"]}},
        sanitize={"POST /*": ["bio"]},
    )
    with client_for(Seawall(app, layers=[layer])) as client:

        def post(body: bytes, coding: str = "gzip") -> Any:
            headers = {"content-type": "application/json", "content-encoding": coding}
            return client.post("/", content=body, headers=headers)

        good = gzip.compress(b'{"name": "a", "bio": "plain"}')
        response = post(good)
        assert response.status_code == 200
        assert response.content == good  # unchanged: the app gets what was sent
        assert response.headers["x-coding"] == "gzip"
        assert post(gzip.compress(b'{"bio": "x"}')).status_code == 422
        cleaned = post(gzip.compress(json.dumps({"name": "a", "bio": SCRIPT}).encode()))
        assert cleaned.status_code == 200
        assert b"script" not in cleaned.content
        assert json.loads(cleaned.content)["name"] == "a"  # plain JSON now
        assert cleaned.headers["x-coding"] == "-"  # and no longer said to be gzip
        # Small on the wire, past max_body once decoded: no bomb gets through.
        bomb = gzip.compress(b'{"name": "' + b"a" * 100_000 + b'"}')
        assert len(bomb) < 1000
        assert post(bomb).status_code == 413
        assert post(b"not gzip at all").status_code == 400
        assert post(good, "br").status_code == 415


def test_a_methods_list_lets_head_and_cors_preflights_through(interface: str) -> None:
    layer = Validation(methods=["GET", "POST"])
    with client_for(wrap(interface, [layer])) as client:
        assert client.head("/").status_code == 200  # GET listed: HEAD is its body-less twin
        preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
        assert client.options("/", headers=preflight).status_code == 200
        refused = client.options("/")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD, POST"
        assert client.delete("/").status_code == 405


def test_a_structured_suffix_pattern_takes_its_media_types(interface: str) -> None:
    layer = Validation(content_types=["application/*+json"])
    body = b'{"data": {"type": "items"}}'
    assert _echo(interface, layer, body, "application/vnd.api+json").status_code == 200
    assert _echo(interface, layer, body, "application/xml").status_code == 415


def test_an_empty_chunked_json_body_passes_as_an_empty_framed_one(interface: str) -> None:
    layer = Validation(sanitize={"POST /echo": ["c"]})

    def empty() -> Any:
        yield b""

    with client_for(wrap(interface, [layer])) as client:
        response = client.post(
            "/echo", content=empty(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert response.content == b""


def test_validate_reads_the_frameworks_content_type_without_a_wall() -> None:
    """With no seawall wall around the app, a form is still a form (it was parsed as JSON)."""
    from flask import Flask

    import seawall

    app = Flask(__name__)

    @app.post("/signup")
    @seawall.validate({"type": "object", "required": ["email"]}, into="doc")
    def signup(doc: dict[str, Any]) -> dict[str, Any]:
        return {"got": doc}

    # A context of its own: a test client elsewhere that left a response
    # unclosed (servers always close) leaves its request current in this thread.
    response = contextvars.Context().run(
        app.test_client().post, "/signup", data={"email": "a@b.c"}, buffered=True
    )
    assert response.status_code == 200
    assert response.get_json() == {"got": {"email": "a@b.c"}}
