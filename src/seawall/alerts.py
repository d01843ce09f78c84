"""Alert sinks for captured errors, and the background dispatcher that feeds them.

A sink is any callable taking an :class:`ErrorEvent`. Sinks run on one
daemon thread, off the request path: the request only puts the event on a
bounded queue (``put_nowait``); when the queue is full the event is dropped
and counted. A sink that raises is logged and never affects a request.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from seawall._log import logger

__all__ = ["AlertDispatcher", "ErrorEvent", "LogSink", "Sink", "WebhookSink"]


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """What a sink learns about a captured error (already scrubbed)."""

    error_id: str
    fingerprint: str
    exception_type: str
    message: str
    location: str
    request_id: str
    method: str
    path: str
    route: str
    count: int
    timestamp: float
    suppressed: int = 0
    context: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return asdict(self)


Sink = Callable[[ErrorEvent], Any]


class LogSink:
    """Log each alert as ``seawall.alert`` at *level* through structlog."""

    def __init__(self, level: str = "error") -> None:
        self.level = level

    def __call__(self, event: ErrorEvent) -> None:
        """Log *event*."""
        getattr(logger, self.level)(
            "seawall.alert",
            error_id=event.error_id,
            fingerprint=event.fingerprint,
            exception_type=event.exception_type,
            location=event.location,
            route=event.route,
            count=event.count,
            suppressed=event.suppressed,
        )

    def __repr__(self) -> str:
        return f"LogSink(level={self.level!r})"


class WebhookSink:
    """POST each alert as JSON to *url*.

    ``format="slack"`` sends a Slack-compatible ``{"text": ..., "attachments": ...}``
    payload (works with Slack, Mattermost and Rocket.Chat incoming webhooks);
    ``format="json"`` sends the event's fields.
    """

    def __init__(
        self,
        url: str,
        *,
        format: str = "slack",
        timeout: float = 3.0,
        headers: Mapping[str, str] | None = None,
        service: str = "seawall",
    ) -> None:
        if not url.startswith(("http://", "https://")):
            from seawall.exceptions import ConfigurationError

            msg = f"WebhookSink url: expected an http(s) URL, got {url!r}"
            raise ConfigurationError(msg)
        if format not in ("slack", "json"):
            from seawall.exceptions import ConfigurationError

            msg = f"WebhookSink format: expected 'slack' or 'json', got {format!r}"
            raise ConfigurationError(msg)
        self.url = url
        self.format = format
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.service = service

    def payload(self, event: ErrorEvent) -> dict[str, Any]:
        """The JSON document sent for *event*."""
        if self.format == "json":
            return event.as_dict()
        text = (
            f"[{self.service}] {event.exception_type} at {event.location} "
            f"({event.method} {event.route}): seen {event.count} times"
        )
        if event.suppressed:
            text += f", {event.suppressed} alerts suppressed since the last one"
        return {
            "text": text,
            "attachments": [
                {
                    "color": "danger",
                    "fields": [
                        {"title": "error id", "value": event.error_id, "short": True},
                        {"title": "request id", "value": event.request_id, "short": True},
                        {"title": "fingerprint", "value": event.fingerprint, "short": True},
                        {"title": "route", "value": event.route, "short": True},
                    ],
                }
            ],
        }

    def __call__(self, event: ErrorEvent) -> None:
        """Send *event*; raises on a non-2xx answer (the dispatcher logs it)."""
        data = json.dumps(self.payload(event)).encode()
        req = urllib.request.Request(
            self.url,
            data=data,
            headers={"Content-Type": "application/json", **self.headers},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            if resp.status >= 300:
                msg = f"webhook answered {resp.status}"
                raise OSError(msg)

    def __repr__(self) -> str:
        return f"WebhookSink({self.url!r}, format={self.format!r})"


class AlertDispatcher:
    """Run sinks on a daemon thread fed by a bounded queue."""

    def __init__(self, sinks: Sequence[Sink], *, queue_size: int = 1000) -> None:
        self.sinks = tuple(sinks)
        self._queue: queue.Queue[ErrorEvent | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def submit(self, event: ErrorEvent) -> bool:
        """Queue *event* without blocking; ``False`` (and counted) if the queue is full."""
        if not self.sinks:
            return False
        self._ensure_thread()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="seawall-alerts", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                for sink in self.sinks:
                    try:
                        sink(event)
                        self.sent += 1
                    except Exception as exc:
                        self.failed += 1
                        logger.warning(
                            "seawall.alert.failed",
                            sink=repr(sink),
                            error=type(exc).__name__,
                            detail=str(exc)[:200],
                        )
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event went to the sinks (for tests and shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stats(self) -> dict[str, int]:
        """Sent, dropped and failed deliveries."""
        return {"sent": self.sent, "dropped": self.dropped, "failed": self.failed}
