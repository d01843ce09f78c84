"""Every request limit at its boundary (exactly at, one over), on both drivers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from seawall import ConfigurationError, Validation
from seawall._core.request import RequestView
from tests.validation.helpers import Probe, echo_client, problem

JSON = {"content-type": "application/json"}


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


class TestBodySize:
    @pytest.mark.parametrize("json_body", [False, True], ids=["streamed", "read"])
    def test_exactly_at_the_limit_passes_one_over_is_413(
        self, interface: str, json_body: bool
    ) -> None:
        client = echo_client(interface, [Validation(max_body=100)])
        ctype = {"content-type": "application/json" if json_body else "application/octet-stream"}
        at = b'"' + b"a" * 98 + b'"'
        assert client.post("/", content=at, headers=ctype).content == at
        over = b'"' + b"a" * 99 + b'"'
        response = client.post("/", content=over, headers=ctype)
        assert response.status_code == 413
        doc = problem(response)
        assert doc["max_body"] == 100
        # No payload echo. A run longer than a request id (20 hex digits,
        # which may hold "aaaa" by chance: it failed once so).
        assert "a" * 32 not in response.text

    def test_chunked_body_is_counted_not_trusted(self, interface: str) -> None:
        client = echo_client(interface, [Validation(max_body=100)])

        def chunks(total: int) -> Any:
            for _ in range(total // 10):
                yield b"x" * 10

        ok = client.post("/", content=chunks(100))
        assert ok.status_code == 200
        assert len(ok.content) == 100
        assert client.post("/", content=chunks(110)).status_code == 413

    @pytest.mark.parametrize("reverse", [False, True], ids=["tight first", "tight last"])
    def test_two_validation_layers_keep_the_tighter_body_limit(
        self, interface: str, reverse: bool
    ) -> None:
        """A second layer's larger max_body does not loosen the first's, in either order."""
        layers = [Validation(max_body=100), Validation(max_body="1 MB")]
        client = echo_client(interface, layers[::-1] if reverse else layers)

        def chunks(total: int) -> Any:
            for _ in range(total // 10):
                yield b"x" * 10

        assert client.post("/", content=chunks(100)).status_code == 200
        assert client.post("/", content=chunks(110)).status_code == 413

    def test_sizes_take_units(self) -> None:
        assert Validation(max_body="1 MB").policy_for("POST", "/").max_body == 1_000_000
        assert Validation(max_body="1 MiB").policy_for("POST", "/").max_body == 1 << 20
        assert Validation(max_body=None).policy_for("POST", "/").max_body is None
        with pytest.raises(ConfigurationError, match="max_body"):
            Validation(max_body="lots")


class TestURL:
    def test_url_length_boundary(self, interface: str) -> None:
        probe = Probe()
        base = echo_client(interface, [probe])
        base.get("/abc?x=1")
        size = len(probe.target)
        client = echo_client(interface, [Validation(max_url=size)])
        assert client.get("/abc?x=1").status_code == 200
        response = client.get("/abc?x=12")
        assert response.status_code == 414
        assert problem(response)["max_url"] == size

    def test_query_parameter_count_boundary(self, interface: str) -> None:
        client = echo_client(interface, [Validation(max_query_params=3)])
        assert client.get("/?a=1&b=2&c=3").status_code == 200
        response = client.get("/?a=1&b=2&c=3&d=4")
        assert response.status_code == 400
        assert problem(response)["type"].endswith("too-many-parameters")


class TestHeaders:
    def test_header_count_boundary(self, interface: str) -> None:
        probe = Probe()
        echo_client(interface, [probe]).get("/", headers={"x-a": "1", "x-b": "2"})
        client = echo_client(interface, [Validation(max_headers=probe.header_count)])
        assert client.get("/", headers={"x-a": "1", "x-b": "2"}).status_code == 200
        response = client.get("/", headers={"x-a": "1", "x-b": "2", "x-c": "3"})
        assert response.status_code == 431
        assert problem(response)["max_headers"] == probe.header_count

    def test_header_size_boundary(self, interface: str) -> None:
        probe = Probe()
        echo_client(interface, [probe]).get("/", headers={"x-pad": "a" * 100})
        client = echo_client(interface, [Validation(max_header_bytes=probe.header_bytes)])
        assert client.get("/", headers={"x-pad": "a" * 100}).status_code == 200
        response = client.get("/", headers={"x-pad": "a" * 101})
        assert response.status_code == 431
        # No payload echo. A run longer than a request id (20 hex digits,
        # which may hold "aaaa" by chance: it failed once so).
        assert "a" * 32 not in response.text


class TestMethodsAndTypes:
    def test_method_allowlist_answers_405_with_allow(self, interface: str) -> None:
        client = echo_client(interface, [Validation(methods=["GET", "post"])])
        assert client.get("/").status_code == 200
        assert client.post("/", content=b"x").status_code == 200
        response = client.put("/", content=b"x")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, POST"  # HEAD goes with GET

    def test_content_type_allowlist(self, interface: str) -> None:
        client = echo_client(interface, [Validation(content_types=["application/json", "text/*"])])
        assert (
            client.post(
                "/", content=b"{}", headers={"content-type": "application/json; charset=utf-8"}
            ).status_code
            == 200
        )
        assert (
            client.post("/", content=b"hi", headers={"content-type": "text/csv"}).status_code == 200
        )
        response = client.post("/", content=b"<x/>", headers={"content-type": "application/xml"})
        assert response.status_code == 415
        assert problem(response)["accepted"] == ["application/json", "text/*"]
        # A body without a content type is not accepted either; no body needs none.
        assert client.post("/", content=b"x", headers={"content-type": ""}).status_code == 415
        assert client.get("/").status_code == 200


class TestJSON:
    def test_malformed_json_is_400_with_line_and_column(self, interface: str) -> None:
        client = echo_client(interface, [Validation()])
        response = client.post("/", content=b'{\n  "a": tru }', headers=JSON)
        assert response.status_code == 400
        error = problem(response)["errors"][0]
        assert (error["line"], error["column"]) == (2, 8)
        assert error["type"] == "json_invalid"

    @pytest.mark.parametrize(
        ("setting", "limit", "at", "over"),
        [
            pytest.param("max_json_depth", 5, nested(5), nested(6), id="depth"),
            pytest.param(
                "max_json_keys",
                3,
                json.dumps({"a": 1, "b": 2, "c": 3}).encode(),
                json.dumps({"a": 1, "b": 2, "c": 3, "d": 4}).encode(),
                id="keys",
            ),
            pytest.param("max_json_array", 4, b"[1,2,3,4]", b"[1,2,3,4,5]", id="array"),
            pytest.param(
                "max_json_string", 8, b'{"k": "12345678"}', b'{"k": "123456789"}', id="string"
            ),
        ],
    )
    def test_structure_limits(
        self, interface: str, setting: str, limit: int, at: bytes, over: bytes
    ) -> None:
        client = echo_client(interface, [Validation(**{setting: limit})])
        assert client.post("/", content=at, headers=JSON).content == at
        response = client.post("/", content=over, headers=JSON)
        assert response.status_code == 422
        doc = problem(response)
        assert doc["errors"][0]["type"].startswith("json_")
        assert "123456789" not in response.text

    def test_depth_bomb_is_refused_not_crashed(self, interface: str) -> None:
        client = echo_client(interface, [Validation(max_body=None)])
        response = client.post("/", content=nested(100_000), headers=JSON)
        assert response.status_code in (400, 422)


class TestRoutes:
    def test_per_route_settings_override_global_ones(self, interface: str) -> None:
        wall = Validation(
            max_body=10,
            routes={"POST /upload/*": {"max_body": 1000}, "/upload/small": {"max_body": 5}},
        )
        client = echo_client(interface, [wall])
        assert client.post("/upload/big", content=b"x" * 500).status_code == 200
        assert client.post("/other", content=b"x" * 11).status_code == 413
        # The more specific rule wins over the broad one.
        assert client.post("/upload/small", content=b"x" * 6).status_code == 413

    def test_route_templates_match_segments(self) -> None:
        wall = Validation(routes={"GET /items/{id}": {"max_url": 1}})
        assert wall.policy_for("GET", "/items/5").max_url == 1
        assert wall.policy_for("GET", "/items/5/more").max_url == 8192
        assert wall.policy_for("POST", "/items/5").max_url == 8192

    def test_bad_route_settings_fail_at_startup(self) -> None:
        with pytest.raises(ConfigurationError, match="max_bdy"):
            Validation(routes={"/x": {"max_bdy": 1}})
        with pytest.raises(ConfigurationError, match=r"routes\['/x'\]\.max_body"):
            Validation(routes={"/x": {"max_body": "huge"}})
        with pytest.raises(ConfigurationError, match="path must start"):
            Validation(routes={"POST users": {}})

    def test_built_from_settings(self) -> None:
        from seawall.config import settings_to_kwargs

        kwargs = settings_to_kwargs(
            {"validation": {"max_body": "2 MB", "methods": ["GET"], "threats": "monitor"}}
        )
        (layer,) = kwargs["layers"]
        assert isinstance(layer, Validation)
        assert layer.policy_for("GET", "/").max_body == 2_000_000


class TestContentLength:
    def test_malformed_content_length_is_400(self) -> None:
        view = RequestView(
            method="POST", path="/", headers=[(b"content-length", b"12x")], request_id="r"
        )
        answer = Validation().on_request(view)
        assert answer.status == 400

    def test_declared_length_over_the_limit_is_refused_before_reading(self) -> None:
        view = RequestView(
            method="POST",
            path="/",
            headers=[(b"content-length", b"101"), (b"content-type", b"application/json")],
            request_id="r",
        )
        answer = Validation(max_body=100).on_request(view)
        assert answer.status == 413

    def test_body_that_needs_no_check_streams_with_the_driver_counting(self) -> None:
        view = RequestView(
            method="POST",
            path="/",
            headers=[(b"content-length", b"10"), (b"content-type", b"image/png")],
        )
        assert Validation(max_body=100).on_request(view) is None
        assert view.max_body == 100


FORM = {"content-type": "application/x-www-form-urlencoded"}


class TestFormFields:
    def test_form_field_count_boundary(self, interface: str) -> None:
        client = echo_client(interface, [Validation(max_query_params=3)])
        # A trailing "&" is no field: counted like the query.
        at = b"a=1&b=2&c=3&"
        assert client.post("/", content=at, headers=FORM).content == at
        response = client.post("/", content=b"a=1&b=2&c=3&d", headers=FORM)
        assert response.status_code == 400
        assert problem(response)["max_query_params"] == 3


SECRET = "hunter2-very-secret-value"


@pytest.mark.parametrize(
    ("settings", "method", "url", "headers", "body", "status"),
    [
        pytest.param(
            {"methods": ["GET"]}, "POST", f"/{SECRET}", {}, SECRET.encode(), 405, id="405"
        ),
        pytest.param({"max_url": 20}, "GET", f"/?q={SECRET}", {}, None, 414, id="414"),
        pytest.param(
            {"max_header_bytes": 100}, "GET", "/", {"x-a": SECRET * 5}, None, 431, id="431"
        ),
        pytest.param(
            {"max_headers": 3},
            "GET",
            "/",
            {f"x-{SECRET}-{i}": SECRET for i in range(5)},
            None,
            431,
            id="431-count",
        ),
        pytest.param(
            {"max_query_params": 1},
            "GET",
            f"/?a={SECRET}&b={SECRET}",
            {},
            None,
            400,
            id="400-query",
        ),
        pytest.param(
            {"content_types": ["application/json"]},
            "POST",
            "/",
            {"content-type": f"application/x-{SECRET}"},
            SECRET.encode(),
            415,
            id="415",
        ),
        pytest.param(
            {"max_body": 10}, "POST", "/", JSON, json.dumps([SECRET]).encode(), 413, id="413"
        ),
        pytest.param(
            {}, "POST", "/", JSON, b'{"' + SECRET.encode() + b'": tru}', 400, id="400-json"
        ),
        pytest.param(
            {"max_json_string": 5},
            "POST",
            "/",
            JSON,
            json.dumps({SECRET: SECRET}).encode(),
            422,
            id="422-string",
        ),
        pytest.param(
            {"max_json_keys": 1},
            "POST",
            "/",
            JSON,
            json.dumps({SECRET: 1, "b" + SECRET: 2}).encode(),
            422,
            id="422-keys",
        ),
        pytest.param(
            {"threats": "block"},
            "GET",
            f"/?{SECRET}=%27%20or%201%3D1--{SECRET}",
            {},
            None,
            403,
            id="403-query",
        ),
        pytest.param(
            {"threats": "block"},
            "POST",
            "/",
            JSON,
            json.dumps({SECRET: f"<script>{SECRET}</script>"}).encode(),
            403,
            id="403-body",
        ),
    ],
)
def test_no_rejection_echoes_the_input(
    interface: str,
    settings: dict[str, Any],
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
) -> None:
    client = echo_client(interface, [Validation(**settings)])
    response = client.request(method, url, headers=headers, content=body)
    assert response.status_code == status
    problem(response)
    assert SECRET not in response.text
    assert "hunter2" not in response.text
    assert "hunter2" not in "".join(f"{k}{v}" for k, v in response.headers.items())
