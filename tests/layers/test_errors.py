from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from seawall import ConfigurationError, ErrorCapture
from seawall._core.request import RequestView
from seawall._core.scrub import Scrubber
from seawall.alerts import AlertDispatcher, ErrorEvent, LogSink, WebhookSink
from seawall.layers.errors import fingerprint
from seawall.testing import ManualClock


def view() -> RequestView:
    v = RequestView.from_asgi({"type": "http", "method": "GET", "path": "/p", "headers": []})
    v.request_id = "rid-1"
    return v


def raise_here(n: int = 0) -> BaseException:
    try:
        if n:
            raise KeyError(n)
        raise ValueError("v")
    except Exception as exc:
        return exc


class TestFingerprint:
    def test_same_place_same_group(self) -> None:
        assert fingerprint(raise_here())[0] == fingerprint(raise_here())[0]

    def test_type_and_user_frame_distinguish(self) -> None:
        key, title = fingerprint(raise_here())
        assert title == "builtins.ValueError at test_errors:raise_here"
        assert fingerprint(raise_here(1))[0] != key


class TestGroupsAndAlerts:
    def test_groups_count_and_throttle_alerts(self) -> None:
        got: list[ErrorEvent] = []
        clock = ManualClock(1000.0)
        layer = ErrorCapture(sinks=[got.append], alert_every=60, clock=clock)
        for _ in range(3):
            layer.on_exception(view(), raise_here())
        clock.advance(61)
        layer.on_exception(view(), raise_here())
        assert layer.dispatcher.flush()
        assert [e.count for e in got] == [1, 4]
        assert got[1].suppressed == 2  # the two held back are reported with the next alert
        group = layer.stats()["groups"][0]
        assert group["count"] == 4
        assert group["first_seen"] == 1000.0
        assert group["last_seen"] == 1061.0

    def test_failing_sink_never_breaks_the_request(self, logs) -> None:
        def broken(event: ErrorEvent) -> None:
            raise OSError("sink down")

        layer = ErrorCapture(sinks=[broken])
        respond = layer.on_exception(view(), raise_here())
        assert respond is not None
        assert respond.status == 500
        assert layer.dispatcher.flush()
        assert layer.dispatcher.stats()["failed"] == 1
        assert any(e["event"] == "seawall.alert.failed" for e in logs)

    def test_full_queue_drops_and_counts(self) -> None:
        gate = threading.Event()
        d = AlertDispatcher([lambda e: gate.wait(5)], queue_size=1)
        events = [ErrorEvent("e", "f", "T", "m", "l", "r", "GET", "/", "/", 1, 0.0)] * 5
        results = [d.submit(e) for e in events]
        gate.set()
        assert d.flush()
        assert results.count(False) >= 3
        assert d.stats()["dropped"] == results.count(False)

    def test_submit_does_not_block_on_a_slow_sink(self) -> None:
        d = AlertDispatcher([lambda e: time.sleep(1)], queue_size=10)
        event = ErrorEvent("e", "f", "T", "m", "l", "r", "GET", "/", "/", 1, 0.0)
        t0 = time.perf_counter()
        for _ in range(5):
            d.submit(event)
        assert time.perf_counter() - t0 < 0.1

    def test_log_sink(self, logs) -> None:
        LogSink()(ErrorEvent("e", "f", "T", "m", "l", "r", "GET", "/", "/", 1, 0.0))
        assert logs[0]["event"] == "seawall.alert"
        assert logs[0]["fingerprint"] == "f"

    def test_non_callable_sink_refused(self) -> None:
        with pytest.raises(ConfigurationError):
            ErrorCapture(sinks=["https://example.invalid"])  # type: ignore[list-item]


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class TestWebhook:
    def test_slack_payload_is_posted(self) -> None:
        server = HTTPServer(("127.0.0.1", 0), _Hook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            layer = ErrorCapture(sinks=[WebhookSink(url)])
            layer.on_exception(view(), raise_here())
            assert layer.dispatcher.flush()
            payload = _Hook.received[-1]
            assert "ValueError" in payload["text"]
            assert payload["attachments"][0]["fields"]
            assert layer.dispatcher.stats()["sent"] == 1
        finally:
            server.shutdown()

    def test_bad_url_refused(self) -> None:
        with pytest.raises(ConfigurationError):
            WebhookSink("file:///etc/passwd")


class TestScrubber:
    def test_nested_json_keys_and_cards(self) -> None:
        s = Scrubber()
        data = {
            "a": [{"b": {"client_secret": "x", "ok": "fine"}}],
            "cc": "5555555555554444",
            "n": 42,
            "Password": "y",
        }
        out = s.data(data)
        assert out["a"][0]["b"] == {"client_secret": "[scrubbed]", "ok": "fine"}
        assert out["cc"] == "[scrubbed]"
        assert out["Password"] == "[scrubbed]"
        assert out["n"] == 42
        assert data["a"][0]["b"]["client_secret"] == "x"  # input untouched

    def test_non_luhn_numbers_are_kept(self) -> None:
        assert Scrubber().text("order 1234567890123 shipped") == "order 1234567890123 shipped"

    def test_headers(self) -> None:
        out = Scrubber().headers(
            {"authorization": ["Bearer x"], "x-service-token": ["t"], "accept": ["*/*"]}
        )
        assert out == {
            "authorization": "[scrubbed]",
            "x-service-token": "[scrubbed]",
            "accept": "*/*",
        }


@pytest.fixture
def sentry_events():
    """Initialise sentry-sdk with a capturing transport; close the client afterwards."""
    sentry_sdk = pytest.importorskip("sentry_sdk")
    from sentry_sdk.transport import Transport

    sent: list[Any] = []

    class Capture(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            sent.append(envelope)

    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",
        transport=Capture,
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    yield sent
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to an inactive client for the rest of the run


class TestSentry:
    def test_exceptions_are_forwarded_when_sentry_is_initialised(self, sentry_events) -> None:
        import sentry_sdk

        ErrorCapture().on_exception(view(), raise_here())
        sentry_sdk.flush()
        assert len(sentry_events) == 1
        event = sentry_events[0].get_event()
        assert event["exception"]["values"][0]["type"] == "ValueError"

    def test_no_forwarding_when_turned_off(self, sentry_events) -> None:
        import sentry_sdk

        ErrorCapture(sentry=False).on_exception(view(), raise_here())
        sentry_sdk.flush()
        assert sentry_events == []
