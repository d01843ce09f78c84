"""Sanitization: the seam, both backends, idempotence, rewritten bodies."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall import ConfigurationError, Validation
from seawall.sanitize import Sanitizer, sanitize
from tests.validation.helpers import echo_client

HTML = st.text(
    alphabet=st.sampled_from(list("<>/=\"' &;#abcdeilmnoprstx:()!-")), max_size=60
) | st.text(max_size=60)


class TestSeam:
    def test_nh3_strips_and_bleach_escapes(self) -> None:
        text = "<b>hi</b><script>alert(1)</script>"
        assert sanitize(text) == "<b>hi</b>"
        assert sanitize(text, backend="bleach") == "<b>hi</b>&lt;script&gt;alert(1)&lt;/script&gt;"

    def test_plain_text_is_returned_as_is(self) -> None:
        text = 'O\'Brien said "hello"'
        assert sanitize(text) is text

    def test_allowed_tags_attributes_protocols(self) -> None:
        cleaner = Sanitizer(tags=["a"], attributes={"a": ["href"]}, protocols=["https"])
        assert (
            cleaner('<a href="https://x.io">x</a><i>y</i>')
            == '<a href="https://x.io" rel="noopener noreferrer">x</a>y'
        )
        assert (
            cleaner('<a href="javascript:alert(1)">x</a>') == '<a rel="noopener noreferrer">x</a>'
        )
        bleached = Sanitizer("bleach", tags=["a"], attributes={"a": ["href"]}, protocols=["https"])
        assert bleached('<a href="ftp://x">x</a><i>y</i>') == "<a>x</a>&lt;i&gt;y&lt;/i&gt;"

    def test_unknown_backend(self) -> None:
        with pytest.raises(ConfigurationError, match="sanitizer"):
            Sanitizer("tidy")  # type: ignore[arg-type]

    @settings(max_examples=300, deadline=None)
    @given(text=HTML)
    def test_nh3_is_idempotent(self, text: str) -> None:
        once = sanitize(text)
        assert sanitize(once) == once

    @settings(max_examples=200, deadline=None)
    @given(text=HTML)
    def test_bleach_is_idempotent(self, text: str) -> None:
        once = sanitize(text, backend="bleach")
        assert sanitize(once, backend="bleach") == once


class TestBodies:
    def test_json_fields_are_cleaned_with_a_correct_content_length(self, interface: str) -> None:
        layer = Validation(sanitize={"POST /comments": ["body", "author.name", "tags"]})
        client = echo_client(interface, [layer])
        sent = {
            "body": "<p>hi</p><script>steal()</script>",
            "author": {"name": "<img src=x onerror=alert(1)>Ann", "url": "<b>kept</b>"},
            "tags": ["<i>a</i>", "<script>b</script>"],
            "other": "<script>untouched</script>",
        }
        response = client.post("/comments", json=sent)
        got = json.loads(response.content)
        assert got["body"] == "<p>hi</p>"
        assert got["author"] == {"name": '<img src="x">Ann', "url": "<b>kept</b>"}
        assert got["tags"] == ["<i>a</i>", ""]
        assert got["other"] == "<script>untouched</script>"
        assert response.headers["x-seen-length"] == str(len(response.content))
        assert layer.stats()["bodies_rewritten"] == 1

    def test_untouched_body_is_byte_identical(self, interface: str) -> None:
        client = echo_client(interface, [Validation(sanitize={"/": ["body"]})])
        raw = b'{ "body" : "plain text",\n  "n": 1.50 }'
        response = client.post("/", content=raw, headers={"content-type": "application/json"})
        assert response.content == raw

    def test_form_fields(self, interface: str) -> None:
        client = echo_client(interface, [Validation(sanitize={"/": ["comment"]})])
        response = client.post(
            "/", data={"comment": "<b>x</b><script>y</script>", "raw": "<script>"}
        )
        assert parse_qs(response.text) == {"comment": ["<b>x</b>"], "raw": ["<script>"]}
        assert response.headers["x-seen-length"] == str(len(response.content))

    def test_query_values(self, interface: str) -> None:
        client = echo_client(interface, [Validation(sanitize_query=["q"])])
        response = client.get("/", params={"q": "<script>x</script>hi", "p": "<b>"})
        assert parse_qs(response.headers["x-seen-query"]) == {"q": ["hi"], "p": ["<b>"]}

    def test_bleach_backend_in_the_layer(self, interface: str) -> None:
        client = echo_client(interface, [Validation(sanitize={"/": ["t"]}, sanitizer="bleach")])
        response = client.post("/", json={"t": "<script>x</script>"})
        assert json.loads(response.content) == {"t": "&lt;script&gt;x&lt;/script&gt;"}
