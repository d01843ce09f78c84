"""Hostile bodies and headers: refused cheaply, never a 500, never let through unread.

Each test here failed on the code before its fix (a 200 that reached the
app, a 500, or a cost that grew with the square of the input); the bounds
asserted are structural (parts parsed, memory) or generous wall-clock ones.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import seawall
from seawall import Validation, ValidationFailed
from seawall._core.request import RequestView
from seawall._log import bind_request, unbind_request
from seawall.sanitize import Sanitizer
from tests.validation.helpers import echo_client, problem

SQLI = "1' OR '1'='1' --"


def handler_doc(body: bytes, ctype: str, schema: Any = None, **kwargs: Any) -> Any:
    """What ``@seawall.validate`` hands a handler for *body* (or what it raises)."""

    @seawall.validate(schema, into="doc", **kwargs)
    def handler(doc: Any) -> Any:
        return doc

    view = RequestView(
        method="POST", path="/", headers=[(b"content-type", ctype.encode())], request_id="r"
    )
    view.body = body
    tokens = bind_request(view)
    try:
        return handler()
    finally:
        unbind_request(tokens)


class TestJsonFailsClosed:
    """A body the parser cannot take is a 400, not a layer failure the stack skips."""

    LONG_NUMBER = b'{"n": ' + b"1" * 4301 + b', "q": "' + SQLI.encode() + b'"}'

    def test_a_number_past_int_max_str_digits_is_refused_not_let_through(
        self, interface: str
    ) -> None:
        client = echo_client(interface, [Validation(threats="block")])
        response = client.post(
            "/", content=self.LONG_NUMBER, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert problem(response)["errors"][0]["type"] == "json_invalid"

    def test_the_decorator_refuses_it_with_400(self) -> None:
        with pytest.raises(ValidationFailed) as info:
            handler_doc(self.LONG_NUMBER, "application/json")
        assert info.value.status == 400

    def test_a_lone_surrogate_does_not_skip_sanitization(self, interface: str) -> None:
        # nh3 cannot take a lone surrogate: the error skipped the layer, and
        # the script reached the app uncleaned.
        layer = Validation(sanitize={"POST /": ["body"]})
        body = b'{"body": "\\ud800<script>alert(1)</script>x"}'
        response = echo_client(interface, [layer]).post(
            "/", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200
        assert b"script" not in response.content
        assert json.loads(response.content) == {"body": "\ufffdx"}

    def test_json_false_does_not_skip_sanitizing_what_json_loads_cannot_parse(
        self, interface: str
    ) -> None:
        # Nested past what json.loads takes, the body was "the app's to
        # judge": a parser with no depth limit would hand the app the script.
        layer = Validation(json=False, sanitize={"POST /": ["a"]})
        body = b'{"a": ' + b"[" * 3000 + b'"<script>x</script>"' + b"]" * 3000 + b"}"
        response = echo_client(interface, [layer]).post(
            "/", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400

    def test_sanitizing_arrays_nested_deeper_than_the_recursion_limit(self) -> None:
        from seawall._validation.fields import apply_to_fields

        doc: Any = "<script>x</script>y"
        for _ in range(5000):
            doc = [doc]
        out, changed = apply_to_fields({"a": doc}, (("a",),), Sanitizer())
        assert changed
        inner = out["a"]
        while isinstance(inner, list):
            inner = inner[0]
        assert inner == "y"
