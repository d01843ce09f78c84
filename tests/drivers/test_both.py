"""The same scenarios through both drivers (the `interface` fixture)."""

from __future__ import annotations

import json

import pytest

from seawall import ErrorCapture, Timing


class TestPassThrough:
    def test_response_passes_with_request_id_and_timing(self, make_client) -> None:
        client = make_client([Timing(), ErrorCapture()])
        r = client.get("/")
        assert r.status_code == 200
        assert r.text == "ok"
        assert r.headers["x-request-id"]
        st = r.headers["server-timing"]
        assert st.startswith("total;dur=")
        assert "seawall;dur=" in st

    def test_no_layers_is_a_passthrough(self, make_client) -> None:
        r = make_client([]).get("/status/418")
        assert r.status_code == 418
        assert r.text == "ok"

    def test_well_formed_request_id_is_kept_and_exposed(self, make_client) -> None:
        r = make_client([]).get("/rid", headers={"X-Request-ID": "req-7"})
        assert r.headers["x-request-id"] == "req-7"
        assert r.json() == {"rid": "req-7", "scope": "req-7"}

    def test_hostile_request_id_is_replaced(self, make_client) -> None:
        r = make_client([]).get("/rid", headers={"X-Request-ID": "<script>alert(1)</script>"})
        assert r.headers["x-request-id"] != "<script>alert(1)</script>"
        assert r.json()["rid"] == r.headers["x-request-id"]

    def test_body_reaches_app_byte_identical(self, make_client) -> None:
        body = bytes(range(256)) * 40
        r = make_client([Timing(), ErrorCapture()]).post(
            "/echo", content=body, headers={"content-type": "application/json"}
        )
        assert r.content == body

    def test_custom_request_id_header(self, make_client) -> None:
        r = make_client([], request_id_header="X-Correlation-ID").get(
            "/rid", headers={"X-Correlation-ID": "corr-1"}
        )
        assert r.headers["x-correlation-id"] == "corr-1"
        assert r.json()["rid"] == "corr-1"


class TestErrors:
    def test_exception_becomes_problem_500(self, make_client, logs) -> None:
        r = make_client([ErrorCapture()]).get("/boom")
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        doc = r.json()
        assert doc["status"] == 500
        assert doc["request_id"] == r.headers["x-request-id"]
        assert doc["error_id"]
        assert "hunter2" not in r.text
        assert "Boom" not in r.text
        assert "Traceback" not in r.text
        captured = [e for e in logs if e["event"] == "seawall.error.captured"]
        assert len(captured) == 1  # logged once
        assert captured[0]["error_id"] == doc["error_id"]
        assert captured[0]["request_id"] == doc["request_id"]

    def test_debug_shows_the_exception(self, make_client) -> None:
        r = make_client([ErrorCapture(debug=True)]).get("/boom")
        assert "Boom" in r.json()["detail"]
        assert r.json()["traceback"]

    def test_without_error_capture_the_exception_propagates(self, make_client) -> None:
        from tests.apps import Boom

        with pytest.raises(Boom):
            make_client([Timing()]).get("/boom")

    def test_secrets_never_reach_the_logs(self, make_client, logs) -> None:
        client = make_client([ErrorCapture()])
        client.post(
            "/boom?api_key=QUERYSECRET&page=2",
            json={
                "user": {
                    "profile": {
                        "password": "JSONSECRET",
                        "cards": [{"number": "4111 1111 1111 1111"}],
                    }
                },
                "note": "card 4012888888881881",
            },
            headers={
                "Authorization": "Bearer HEADERSECRET",
                "X-Auth-Token": "TOKENSECRET",
                "Cookie": "session=COOKIESECRET",
            },
        )
        rendered = json.dumps(logs, default=str)
        for secret in (
            "QUERYSECRET",
            "JSONSECRET",
            "HEADERSECRET",
            "TOKENSECRET",
            "COOKIESECRET",
            "4111 1111 1111 1111",
            "4012888888881881",
        ):
            assert secret not in rendered
        event = next(e for e in logs if e["event"] == "seawall.error.captured")
        assert event["query"] == {"api_key": "[scrubbed]", "page": "2"}
        assert event["body"]["user"]["profile"]["password"] == "[scrubbed]"


class TestIdentity:
    def test_spoofed_forwarding_headers_do_not_change_the_client(self, interface) -> None:
        from seawall.typing import RequestView
        from tests.apps import client_for, wrap

        seen: list[str] = []

        class Spy:
            name = "spy"

            def on_request(self, request: RequestView) -> None:
                seen.append(request.client)

        client = client_for(wrap(interface, [Spy()]))
        for i in range(5):
            client.get(
                "/",
                headers={
                    "X-Forwarded-For": f"6.6.6.{i}",
                    "Forwarded": f"for=7.7.7.{i}",
                    "X-Real-IP": f"8.8.8.{i}",
                },
            )
        assert len(set(seen)) == 1
        assert not seen[0].startswith(("6.", "7.", "8."))

    def test_trusted_proxy_header_is_used(self, interface) -> None:
        from tests.apps import client_for, wrap

        seen: list[str] = []

        class Spy:
            name = "spy"

            def on_request(self, request) -> None:
                seen.append(request.client)

        # The test clients connect from "testclient" (ASGI) / 127.0.0.1 (WSGI);
        # trust loopback and the unix/no-address case.
        client = client_for(wrap(interface, [Spy()], trusted_proxies=["127.0.0.0/8", "unix"]))
        client.get("/", headers={"X-Forwarded-For": "198.51.100.7"})
        assert seen == ["198.51.100.7"]


class TestLogContext:
    def test_app_log_lines_carry_the_request_id(self, interface) -> None:
        """structlog's merge_contextvars (in its default pipeline) picks the id up."""
        import structlog
        from structlog.testing import LogCapture

        from seawall import Seawall
        from tests.apps import client_for

        capture = LogCapture()
        structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
        try:
            log = structlog.get_logger("app")

            async def asgi(scope, receive, send):
                log.info("handling")
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})

            def wsgi(environ, start_response):
                log.info("handling")
                start_response("204 No Content", [])
                return []

            app = asgi if interface == "asgi" else wsgi
            client = client_for(Seawall(app, layers=[]))
            client.get("/", headers={"X-Request-ID": "log-1"})
            log.info("outside")
        finally:
            structlog.reset_defaults()
        inside, outside = capture.entries
        assert inside["request_id"] == "log-1"
        assert "request_id" not in outside  # unbound after the request

    def test_configure_logging_renders_json(self, capsys) -> None:
        import structlog

        import seawall

        seawall.configure_logging(json=True)
        try:
            structlog.get_logger("seawall").warning("seawall.test", x=1)
        finally:
            structlog.reset_defaults()
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["event"] == "seawall.test"
        assert line["level"] == "warning"
