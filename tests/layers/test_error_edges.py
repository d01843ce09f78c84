"""Edges of error capture and what reaches the logs, each found wrong once.

A card number beside other digits slipped past the scrubber;
``configure_logging()`` rendered tracebacks with frame locals (the raw
request's headers, the app's secrets); an exception whose ``__str__``
raises lost its 500 when alerts were on; ``/metrics`` refused a lower-case
``bearer``.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr
from typing import Any

import pytest
import structlog

from seawall import ErrorCapture, Metrics, Seawall
from seawall._core.scrub import SCRUBBED, Scrubber
from tests.apps import client_for, lifespan


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("4111 1111 1111 1111 12/25", " 12/25"),
        ("4111-1111-1111-1111 123", " 123"),
        ("qty 3 4111111111111111", "qty 3 "),
        ("cards 4111 1111 1111 1111 and 5500 0055 5555 5559", "cards  and "),
        ("amex 3782 822463 10005", "amex "),
    ],
)
def test_a_card_beside_other_digits_is_scrubbed(text: str, kept: str) -> None:
    out = Scrubber().text(text)
    assert out.replace(SCRUBBED, "") == kept
    assert "1111" not in out
    assert "5559" not in out


def test_numbers_that_are_no_card_stay() -> None:
    for text in (
        "order 1234 5678 9012 3456 7",
        "tel 0044 20 7946 0958",
        "1 2 3 4 5 6 7 8 9 0 1 2 3",
    ):
        assert Scrubber().text(text) == text


class Boom(Exception):
    pass


class BadStr(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    # A local the traceback must not show (built at run time: the source
    # lines a console traceback shows are not what is tested here).
    db_password = "LOCAL" + "SECRET"  # noqa: F841
    if scope["path"] == "/bad-str":
        raise BadStr()
    raise Boom("failed")


@pytest.mark.parametrize("json_logs", [True, False])
def test_configured_logs_show_no_frame_locals(json_logs: bool) -> None:
    import seawall
    import seawall.logging

    old = structlog.get_config()
    out = io.StringIO()
    try:
        with redirect_stderr(out):
            seawall.configure_logging(json=json_logs)
            status = _fail_with_secrets()
    finally:
        structlog.configure(**old)
        seawall.logging.configured = False
    _assert_logged_without_secrets(status, out.getvalue())


def _fail_with_secrets() -> int:
    """A request with secrets in its headers to an app failing with a secret local."""
    wall = Seawall(app, layers=[ErrorCapture()])
    with client_for(wall, raise_server_exceptions=False) as client:
        headers = {"authorization": "Bearer HDRSECRET", "cookie": "s=COOKIESECRET"}
        return int(client.get("/", headers=headers).status_code)


def _assert_logged_without_secrets(status: int, text: str) -> None:
    assert status == 500
    assert "seawall.error.captured" in text
    assert "Boom" in text  # the traceback is there
    for secret in ("LOCALSECRET", "HDRSECRET", "COOKIESECRET"):
        assert secret not in text


def test_structlogs_default_renderer_shows_no_frame_locals() -> None:
    """Without configure_logging(), structlog's default console renders exc_info with locals.

    ErrorCapture hands it the traceback as text: no locals (no raw headers,
    cookies or app secrets), and not hundreds of lines per error.
    """
    from contextlib import redirect_stdout

    old = structlog.get_config()
    out = io.StringIO()
    try:
        structlog.reset_defaults()
        # The default logger factory writes to the sys.stdout of its creation.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
        with redirect_stdout(out):
            status = _fail_with_secrets()
    finally:
        structlog.configure(**old)
    _assert_logged_without_secrets(status, out.getvalue())


@pytest.mark.parametrize("options", [{"debug": True}, {"sinks": [lambda event: None]}, {}])
def test_an_exception_whose_str_fails_still_gets_its_500(options: dict[str, Any]) -> None:
    wall = Seawall(app, layers=[ErrorCapture(**options)])
    with client_for(wall, raise_server_exceptions=False) as client:
        response = client.get("/bad-str")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.content)["status"] == 500


def test_metrics_takes_the_bearer_scheme_in_any_case(interface: str) -> None:
    from tests.apps import wrap

    with client_for(wrap(interface, [Metrics(token="t0k")])) as client:
        for header, status in (("Bearer t0k", 200), ("bearer t0k", 200), ("Bearer nope", 401)):
            assert client.get("/metrics", headers={"authorization": header}).status_code == status
        assert client.get("/metrics").status_code == 401


def test_a_wsgi_500_replacing_a_failed_body_carries_the_layers_headers() -> None:
    """The app started its response, then its iterable failed before any byte."""
    from seawall import Timing

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Any:
            raise Boom("before the first chunk")
            yield b""  # pragma: no cover

        return body()

    wall = Seawall(wsgi, layers=[Timing(), ErrorCapture()])
    with client_for(wall, raise_server_exceptions=False) as client:
        response = client.get("/", headers={"x-request-id": "rid-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "server-timing" in response.headers
    assert response.headers["x-request-id"] == "rid-1"


def test_the_dashboard_takes_bearer_in_any_case_and_a_cookie_with_other_queries(
    interface: str,
) -> None:
    from seawall.layers import Dashboard
    from tests.apps import wrap

    with client_for(wrap(interface, [Dashboard(token="t0k-long-enough-1")])) as client:
        assert (
            client.get(
                "/_seawall", headers={"authorization": "bearer t0k-long-enough-1"}
            ).status_code
            == 200
        )
        login = client.get("/_seawall?token=t0k-long-enough-1", follow_redirects=False)
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].split(";", 1)[0]
        client.cookies.clear()  # sent by hand below, and not at all in the last request
        # A query of the page's own (?refresh=1) does not undo the cookie.
        assert client.get("/_seawall?refresh=1", headers={"cookie": cookie}).status_code == 200
        assert client.get("/_seawall?refresh=1").status_code == 401


def test_the_dashboard_answers_unknown_sub_paths_401_without_credentials(interface: str) -> None:
    from seawall.layers import Dashboard
    from tests.apps import wrap

    token = "t0k-long-enough-1"
    with client_for(wrap(interface, [Dashboard(token=token)])) as client:
        assert client.get("/_seawall/other").status_code == 401
        auth = {"authorization": f"Bearer {token}"}
        assert client.get("/_seawall/other", headers=auth).status_code == 404
