"""Schemas per route, errors that never echo input, and the handler decorator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pydantic
import pytest

import seawall
from seawall import ConfigurationError, Validation, ValidationFailed
from seawall._core.request import RequestView
from seawall._log import bind_request, unbind_request
from seawall._validation.schema import _jsonschema, compile_schema
from tests.validation.helpers import echo_client, problem

SECRET = "hunter2-very-secret-value"

USER_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 0},
    },
    "required": ["name"],
    "additionalProperties": False,
}


class User(pydantic.BaseModel):
    name: str
    age: int = 0


def custom(doc: Any) -> Any:
    if doc.get("name") == "root":
        return [{"loc": ["body", "name"], "msg": "reserved", "type": "reserved"}]
    return None


@pytest.mark.parametrize(
    "schema", [USER_SCHEMA, User, custom], ids=["json-schema", "pydantic", "callable"]
)
def test_schema_per_route(interface: str, schema: Any) -> None:
    client = echo_client(interface, [Validation(schemas={"POST /users": schema})])
    assert client.post("/users", json={"name": "Ann", "age": 3}).status_code == 200
    assert client.post("/other", json={"age": SECRET}).status_code == 200
    bad = {"name": "root", "age": SECRET} if schema is not custom else {"name": "root"}
    response = client.post("/users", json=bad)
    assert response.status_code == 422
    doc = problem(response)
    assert doc["errors"]
    assert all({"loc", "msg", "type"} <= set(e) for e in doc["errors"])
    assert SECRET not in response.text
    assert "root" not in response.text or schema is custom


def test_form_bodies_are_checked_too(interface: str) -> None:
    schema = {"type": "object", "required": ["email"]}
    client = echo_client(interface, [Validation(schemas={"/signup": schema})])
    assert client.post("/signup", data={"email": "a@b.c"}).status_code == 200
    assert client.post("/signup", data={"name": "x"}).status_code == 422


def test_jsonschema_fallback_reports_every_error_without_values() -> None:
    validate = _jsonschema(USER_SCHEMA)
    errors = validate({"age": -1, SECRET: 1})
    kinds = {e["type"] for e in errors}
    assert {"required", "minimum", "additionalProperties"} <= kinds
    assert SECRET not in json.dumps(errors)
    assert ["body", "name"] in [e["loc"] for e in errors]


def test_hostile_keys_are_not_echoed_in_locations() -> None:
    validate = compile_schema({"type": "object", "additionalProperties": {"type": "integer"}})
    errors = validate({"<script>alert(1)</script>": "x"})
    assert errors
    assert "script" not in json.dumps(errors)


def test_bad_schemas_fail_at_startup() -> None:
    with pytest.raises(ConfigurationError, match="schemas"):
        Validation(schemas={"/x": {"type": "no-such-type"}})
    with pytest.raises(ConfigurationError, match="schemas"):
        Validation(schemas={"/x": 42})


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        pytest.param(b'{"a": "' + SECRET.encode() + b'"', "application/json", id="malformed"),
        pytest.param(json.dumps({"a": [SECRET] * 3}).encode(), "application/json", id="limits"),
        pytest.param(SECRET.encode() * 10, "text/plain", id="type"),
    ],
)
def test_problem_bodies_never_contain_the_input(interface: str, body: bytes, ctype: str) -> None:
    layer = Validation(max_json_array=2, content_types=["application/json"])
    response = echo_client(interface, [layer]).post(
        "/", content=body, headers={"content-type": ctype}
    )
    assert response.status_code in (400, 415, 422)
    assert SECRET not in response.text


def _view(body: bytes | None) -> RequestView:
    view = RequestView(
        method="POST", path="/", headers=[(b"content-type", b"application/json")], request_id="r1"
    )
    view.body = body
    return view


class TestDecorator:
    def test_sync_handler_gets_the_checked_body(self) -> None:
        @seawall.validate(USER_SCHEMA, sanitize=["name"], into="data")
        def handler(data: Any) -> Any:
            return data

        tokens = bind_request(_view(b'{"name": "<b>Ann</b><script>x</script>"}'))
        try:
            assert handler() == {"name": "<b>Ann</b>"}
        finally:
            unbind_request(tokens)

    def test_async_handler_and_pydantic(self) -> None:
        @seawall.validate(User, into="user")
        async def handler(user: User) -> str:
            return user.name

        tokens = bind_request(_view(b'{"name": "Ann"}'))
        try:
            assert asyncio.run(handler()) == "Ann"
        finally:
            unbind_request(tokens)

    def test_invalid_body_raises_validation_failed(self) -> None:
        @seawall.validate(USER_SCHEMA)
        def handler() -> None:
            raise AssertionError("not reached")

        tokens = bind_request(_view(b'{"age": "' + SECRET.encode() + b'"}'))
        try:
            with pytest.raises(ValidationFailed) as info:
                handler()
        finally:
            unbind_request(tokens)
        assert info.value.status == 422
        assert SECRET not in json.dumps(info.value.errors)

    def test_body_from_a_framework_request_argument(self) -> None:
        class DjangoLikeRequest:
            body = b'{"name": "Bo"}'

        @seawall.validate(USER_SCHEMA, into="data")
        def view(request: Any, data: Any) -> Any:
            return data

        assert view(DjangoLikeRequest()) == {"name": "Bo"}

    def test_async_body_from_a_starlette_like_request(self) -> None:
        class StarletteLikeRequest:
            async def body(self) -> bytes:
                return b'{"name": 1}'

        @seawall.validate(USER_SCHEMA)
        async def endpoint(request: Any) -> None:
            raise AssertionError("not reached")

        with pytest.raises(ValidationFailed):
            asyncio.run(endpoint(StarletteLikeRequest()))

    def test_form_body_repeats_become_lists_as_in_the_layer(self) -> None:
        schema = {"type": "object", "properties": {"tag": {"type": "array"}}}

        @seawall.validate(schema, into="data")
        def handler(data: Any) -> Any:
            return data

        view = RequestView(
            method="POST",
            path="/",
            headers=[(b"content-type", b"application/x-www-form-urlencoded")],
            request_id="r2",
        )
        view.body = b"tag=a&tag=b"
        tokens = bind_request(view)
        try:
            assert handler() == {"tag": ["a", "b"]}
        finally:
            unbind_request(tokens)

    def test_no_body_anywhere_is_a_configuration_error(self) -> None:
        @seawall.validate(USER_SCHEMA)
        def handler() -> None:
            raise AssertionError("not reached")

        with pytest.raises(ConfigurationError, match="read_body"):
            handler()

    def test_through_the_layer_with_read_body(self, interface: str) -> None:
        # The layer reads the body (read_body), the handler validates it.
        from seawall import Seawall
        from tests.apps import client_for

        @seawall.validate(USER_SCHEMA, into="data")
        def handle(data: Any) -> bytes:
            return json.dumps(data).encode()

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            while (await receive()).get("more_body"):
                pass
            try:
                body, status = handle(), 200
            except ValidationFailed as exc:
                body, status = b"", exc.status
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": body})

        def wsgi(environ: Any, start_response: Any) -> Any:
            try:
                body, status = handle(), "200 OK"
            except ValidationFailed as exc:
                body, status = b"", f"{exc.status} X"
            start_response(status, [])
            return [body]

        app = asgi if interface == "asgi" else wsgi
        client = client_for(Seawall(app, layers=[Validation(read_body=True)]))
        assert client.post("/", json={"name": "Ann"}).json() == {"name": "Ann"}
        assert client.post("/", json={"name": 5}).status_code == 422


class TestMessagesNeverEchoValues:
    def test_pydantic_discriminator_tag_is_redacted(self, interface: str) -> None:
        from typing import Annotated, Literal

        class Cat(pydantic.BaseModel):
            kind: Literal["cat"]

        class Dog(pydantic.BaseModel):
            kind: Literal["dog"]

        class Owner(pydantic.BaseModel):
            pet: Annotated[Cat | Dog, pydantic.Field(discriminator="kind")]

        # pydantic's own message quotes the tag it was sent.
        with pytest.raises(pydantic.ValidationError, match=SECRET):
            Owner.model_validate({"pet": {"kind": SECRET}})
        client = echo_client(interface, [Validation(schemas={"/": Owner})])
        response = client.post("/", json={"pet": {"kind": SECRET}})
        assert response.status_code == 422
        errors = problem(response)["errors"]
        assert errors[0]["type"] == "union_tag_invalid"
        assert "<redacted>" in errors[0]["msg"]
        assert SECRET not in response.text
        assert SECRET[:12] not in response.text

    @pytest.mark.parametrize(
        "check",
        [
            pytest.param(lambda d: [f"{d['code']} is not a known code"], id="string"),
            pytest.param(
                lambda d: [{"loc": ["body", d["code"]], "msg": "bad", "type": "x", "input": d}],
                id="dict-with-input",
            ),
            pytest.param(
                lambda d: (_ for _ in ()).throw(ValueError(f"bad {d['code']!r}")), id="raises"
            ),
            pytest.param(lambda d: [f"bad code {d['code'][:15]}..."], id="cut-down echo"),
        ],
    )
    def test_callable_messages_lose_echoes(self, interface: str, check: Any) -> None:
        client = echo_client(interface, [Validation(schemas={"/": check})])
        response = client.post("/", json={"code": SECRET})
        assert response.status_code == 422
        errors = problem(response)["errors"]
        assert errors
        assert all(set(e) == {"loc", "msg", "type"} for e in errors)
        assert SECRET[:12] not in response.text

    def test_short_values_and_schema_words_are_kept(self) -> None:
        validate = compile_schema(lambda d: ["age must be at least 18"])
        assert validate({"age": 7, "name": "Ann"})[0]["msg"] == "age must be at least 18"
