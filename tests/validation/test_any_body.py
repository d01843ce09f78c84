"""Generated bodies: Validation never turns a request into a 500, and what it passes is whole.

Bodies of every shape a client may send under a JSON or form content type
(valid JSON of any nesting with big numbers, unicode and markup; JSON that
is broken, has duplicate keys, a byte-order mark, lone surrogates, ``NaN``;
bytes that are not UTF-8; form bodies with odd escapes), through a
Validation layer that checks limits, sanitizes fields and blocks threats,
on both drivers. Every answer is the app's 200 or a 4xx problem document, and the layer
never fails (a failing layer is passed over, which would hide it);
a body that passes with nothing to sanitize reaches the app byte-identical,
and a sanitized body is still JSON, or still a form.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall import ErrorCapture, Validation
from tests.apps import client_for, wrap

MARKUP = st.sampled_from(["<b>x</b>", "<script>alert(1)</script>", "a < b & c", "' OR 1=1 --"])
TEXT = st.one_of(st.text(max_size=20), MARKUP)
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.one_of(st.sampled_from(["comment", "name", "bio"]), TEXT), inner, max_size=5
        ),
    ),
    max_leaves=30,
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["json", "json", "broken", "raw", "form"]))
    if kind == "json":
        value = draw(JSON_VALUES)
        return "application/json", json.dumps(value, ensure_ascii=draw(st.booleans())).encode()
    if kind == "broken":
        return "application/json", draw(
            st.sampled_from(
                [
                    b'{"comment": "a", "comment": "<b>b</b>"}',
                    b'\xef\xbb\xbf{"comment": "x"}',
                    b'{"comment": "\\ud800"}',
                    b'{"comment": NaN}',
                    b'{"comment": "x"',
                    b"[" * 200 + b"]" * 200,
                    b'{"comment": 1e999}',
                    b"",
                ]
            )
        )
    if kind == "raw":
        ctype = draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded"]))
        return ctype, draw(st.binary(max_size=200))
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(["comment", "name", "%zz", "a+b"]), TEXT), max_size=4)
    )
    body = "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    return "application/x-www-form-urlencoded", body


def _layers(errors: bool) -> list[Any]:
    layers: list[Any] = [
        Validation(
            max_body=4096,
            max_json_depth=8,
            sanitize={"POST /echo": ["comment", "nested.bio", "*.comment"]},
            threats="block",
        )
    ]
    if errors:
        layers.insert(0, ErrorCapture())
    return layers


@settings(max_examples=150)
@given(body=bodies(), interface=st.sampled_from(["asgi", "wsgi"]), errors=st.booleans())
def test_any_body_gets_the_app_or_a_4xx_problem(
    body: tuple[str, bytes], interface: str, errors: bool
) -> None:
    """Never a 500; a 4xx is problem+json; a passed body is whole (or sanitized JSON)."""
    ctype, content = body
    with (
        structlog.testing.capture_logs() as logs,
        client_for(wrap(interface, _layers(errors))) as client,
    ):
        response = client.post("/echo", content=content, headers={"content-type": ctype})
    # A layer that raised is passed over (fail open): that must not be how it got through.
    assert not [e for e in logs if e["event"] == "seawall.layer.failed"], logs
    assert response.status_code == 200 or 400 <= response.status_code < 500, (
        response.status_code,
        response.content[:300],
    )
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/problem+json"
        assert json.loads(response.content)["status"] == response.status_code
        return
    if response.content != content:
        # Only a sanitize rule may change a body: JSON stays JSON, a form a form.
        if ctype == "application/json":
            json.loads(response.content)
        else:
            assert ctype == "application/x-www-form-urlencoded"
            # Pairs that were not cleaned keep their bytes, raw non-ASCII included.
            assert parse_qsl(response.content.decode("latin-1"), keep_blank_values=True)
