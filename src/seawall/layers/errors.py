"""ErrorCapture: unhandled exceptions become a safe 500, logged once with context.

The driver catches what the app raises and asks this layer for the answer;
the layer logs the exception once (``seawall.error.captured``) with the
request's context scrubbed of secrets, groups it by fingerprint, queues an
alert when the fingerprint's throttle allows, and returns a 500
``application/problem+json`` carrying the request id and an error id, never
the exception text (unless ``debug=True``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from seawall import logging as _logging
from seawall._core.decisions import ReadBody, Respond
from seawall._core.histogram import SlidingCounter
from seawall._core.layer import ORDER
from seawall._core.request import RequestView
from seawall._core.scrub import DEFAULT_HEADERS, DEFAULT_KEY_PATTERN, Scrubber
from seawall._log import logger
from seawall.alerts import AlertDispatcher, ErrorEvent, Sink
from seawall.exceptions import ConfigurationError

__all__ = ["ErrorCapture", "fingerprint"]

_LIBRARY_DIRS = tuple(
    {
        os.path.normcase(p)
        for p in (
            sysconfig.get_paths().get("stdlib"),
            sysconfig.get_paths().get("platstdlib"),
            sysconfig.get_paths().get("purelib"),
            sysconfig.get_paths().get("platlib"),
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        if p
    }
)
_BODY_TYPES = ("application/json", "application/x-www-form-urlencoded")


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = os.path.normcase(os.path.abspath(frame.filename))
        if "site-packages" in path or path.startswith(_LIBRARY_DIRS):
            continue
        return frame
    return frames[-1] if frames else None


def fingerprint(exc: BaseException) -> tuple[str, str]:
    """Group key of an exception: ``(hash, "Type at module:function")``.

    The type's qualified name plus the innermost frame in user code (not the
    standard library, site-packages or seawall), without line numbers, so the
    group survives unrelated edits to the file.
    """
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    frame = _user_frame(exc)
    if frame is None:
        location = "<unknown>"
    else:
        stem = os.path.splitext(os.path.basename(frame.filename))[0]
        location = f"{stem}:{frame.name}"
    text = f"{kind} at {location}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12], text


class _Group:
    __slots__ = (
        "count",
        "first_seen",
        "last_alert",
        "last_seen",
        "location",
        "recent",
        "suppressed",
        "type",
    )

    def __init__(self, kind: str, location: str, now: float, clock: Callable[[], float]) -> None:
        self.type = kind
        self.location = location
        self.count = 0
        self.first_seen = now
        self.last_seen = now
        self.last_alert: float | None = None
        self.suppressed = 0
        self.recent = SlidingCounter(60.0, 60, clock)


def _text_of(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's own ``__str__`` fails.

    A broken ``__str__`` must not cost the client its 500 problem response.
    """
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


class ErrorCapture:
    """Turn unhandled exceptions into a 500 problem response, logged once.

    Args:
        debug: put the exception type, message and traceback in the response
            (never in production).
        sinks: alert sinks (callables taking an :class:`~seawall.alerts.ErrorEvent`),
            e.g. :class:`~seawall.alerts.WebhookSink`, :class:`~seawall.alerts.LogSink`.
        alert_every: at most one alert per fingerprint per this many seconds;
            the ones held back are counted in the next alert's ``suppressed``.
        capture_body: log the scrubbed JSON or form body of failed requests.
            The body is read (and replayed to the app) only for those content
            types and only when ``Content-Length`` is at most *max_body*.
        max_body: the largest body read for logging, in bytes.
        scrub_headers: header names always hidden in logs.
        scrub_keys: regex of query/form/JSON keys whose values are hidden.
        ignore: exception types left alone (re-raised to the server untouched).
        sentry: forward to Sentry: ``None`` does when sentry-sdk is installed
            and initialised, ``True`` always tries, ``False`` never.
        max_fingerprints: at most this many error groups are tracked.
        queue_size: alert queue bound; overflow is dropped and counted.
        clock: wall clock for first/last seen (injected in tests).
    """

    name: ClassVar[str] = "errors"
    order: ClassVar[int] = ORDER["errors"]
    #: Methods whose requests carry no body to capture: the stack does not
    #: call on_request for them at all.
    skip_methods: ClassVar[frozenset[str]] = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(
        self,
        *,
        debug: bool = False,
        sinks: Sequence[Sink] = (),
        alert_every: float = 300.0,
        capture_body: bool = True,
        max_body: int = 65536,
        scrub_headers: Iterable[str] = DEFAULT_HEADERS,
        scrub_keys: str = DEFAULT_KEY_PATTERN,
        ignore: Sequence[type[BaseException]] = (),
        sentry: bool | None = None,
        max_fingerprints: int = 1000,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if alert_every < 0:
            msg = f"alert_every: expected seconds >= 0, got {alert_every!r}"
            raise ConfigurationError(msg)
        if max_body < 0:
            msg = f"max_body: expected bytes >= 0, got {max_body!r}"
            raise ConfigurationError(msg)
        for sink in sinks:
            if not callable(sink):
                msg = f"sinks: {sink!r} is not callable (a sink takes an ErrorEvent)"
                raise ConfigurationError(msg)
        self.debug = debug
        self.alert_every = alert_every
        self.capture_body = capture_body and max_body > 0
        self.max_body = max_body
        self.scrubber = Scrubber(scrub_headers, scrub_keys)
        self.ignore = tuple(ignore)
        self.sentry = sentry
        self.max_fingerprints = max_fingerprints
        self.dispatcher = AlertDispatcher(sinks, queue_size=queue_size)
        self._clock = clock
        self._groups: OrderedDict[str, _Group] = OrderedDict()
        self._lock = threading.Lock()
        self.captured = 0
        if not self.capture_body:
            # No body to read, ever: the stack skips the hook entirely.
            self.on_request = None  # type: ignore[method-assign,assignment]

    def __repr__(self) -> str:
        return (
            f"ErrorCapture(debug={self.debug}, sinks={list(self.dispatcher.sinks)!r}, "
            f"alert_every={self.alert_every})"
        )

    def on_request(self, request: RequestView) -> Any:
        """Read small JSON/form bodies (replayed intact) so a failure can log them."""
        if not self.capture_body or request.method in self.skip_methods:
            return None
        length = request.header("content-length")
        if length is None or not length.isdigit() or int(length) > self.max_body:
            return None
        ctype = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype not in _BODY_TYPES and not ctype.endswith("+json"):
            return None
        return self._read(request)

    def _read(self, request: RequestView) -> Any:
        yield ReadBody(self.max_body)
        return None

    def on_exception(self, request: RequestView, exc: BaseException) -> Respond | None:
        """Log *exc* once with scrubbed context and return the 500 problem response."""
        if self.ignore and isinstance(exc, self.ignore):
            return None
        error_id = uuid.uuid4().hex[:16]
        key, title = fingerprint(exc)
        kind, _, location = title.partition(" at ")
        now = self._clock()
        with self._lock:
            self.captured += 1
            group = self._groups.get(key)
            if group is None:
                group = _Group(kind, location, now, self._clock)
                self._groups[key] = group
                while len(self._groups) > self.max_fingerprints:
                    self._groups.popitem(last=False)
            else:
                self._groups.move_to_end(key)
            group.count += 1
            group.last_seen = now
            group.recent.add()
            alert = group.last_alert is None or now - group.last_alert >= self.alert_every
            suppressed = group.suppressed
            if alert:
                group.last_alert = now
                group.suppressed = 0
            else:
                group.suppressed += 1
            count = group.count
        route = request.route_or_path()
        context = self._context(request)
        trace: dict[str, Any]
        if _logging.configured:
            # seawall.configure_logging() renders tracebacks without locals.
            trace = {"exc_info": exc}
        else:
            # Another pipeline may render exc_info with each frame's locals
            # (structlog's default console renderer does, with rich): the raw
            # request's headers and cookies, the app's secrets, hundreds of
            # lines per error. The traceback as text has no locals.
            trace = {"exception": "".join(traceback.format_exception(exc))}
        logger.error(
            "seawall.error.captured",
            request_id=request.request_id,
            error_id=error_id,
            fingerprint=key,
            exception_type=kind,
            location=location,
            count=count,
            **trace,
            **context,
        )
        if alert and self.dispatcher.sinks:
            self.dispatcher.submit(
                ErrorEvent(
                    error_id=error_id,
                    fingerprint=key,
                    exception_type=kind,
                    # A card starting before 500 ends before 600: scrubbed whole.
                    message=self.scrubber.text(_text_of(exc)[:600])[:500],
                    location=location,
                    request_id=request.request_id,
                    method=request.method,
                    path=request.path,
                    route=route,
                    count=count,
                    timestamp=now,
                    suppressed=suppressed,
                    context=context,
                )
            )
        self._forward_to_sentry(exc)
        extensions: dict[str, Any] = {"request_id": request.request_id, "error_id": error_id}
        detail = "The server failed to handle this request; quote the error id when reporting it."
        if self.debug:
            detail = f"{type(exc).__name__}: {_text_of(exc)}"
            extensions["traceback"] = traceback.format_exception(exc)
        return Respond.problem(
            500,
            "internal-error",
            "Internal Server Error",
            detail,
            instance=request.path,
            **extensions,
        )

    def _context(self, request: RequestView) -> dict[str, Any]:
        s = self.scrubber
        return {
            "method": request.method,
            "path": request.path,
            "route": request.route_or_path(),
            "client": request.client,
            "query": s.query(request.query_string),
            "headers": s.headers(request.headers),
            "body": s.body(request.body, request.header("content-type")),
        }

    def _forward_to_sentry(self, exc: BaseException) -> None:
        if self.sentry is False:
            return
        sentry_sdk: Any = sys.modules.get("sentry_sdk")
        if sentry_sdk is None:
            if not self.sentry:
                return
            try:
                import sentry_sdk
            except ImportError:
                return
        try:
            client = sentry_sdk.get_client()
            if self.sentry or client.is_active():
                sentry_sdk.capture_exception(exc)
        except Exception as err:  # a failing integration never fails the response
            logger.warning("seawall.error.sentry_failed", error=type(err).__name__)

    def groups(self) -> list[dict[str, Any]]:
        """Error groups, most recent first: fingerprint, type, location, counts, times."""
        with self._lock:
            items = list(self._groups.items())
        out = []
        for key, g in reversed(items):
            out.append(
                {
                    "fingerprint": key,
                    "type": g.type,
                    "location": g.location,
                    "count": g.count,
                    "first_seen": g.first_seen,
                    "last_seen": g.last_seen,
                    "last_minute": g.recent.total(),
                    "rate_per_minute": g.recent.total() * 60.0 / g.recent.window,
                }
            )
        return out

    def stats(self) -> dict[str, Any]:
        """Captured count, error groups and alert delivery figures."""
        return {
            "captured": self.captured,
            "groups": self.groups(),
            "alerts": self.dispatcher.stats(),
        }

    def reset(self) -> None:
        """Forget every error group (for tests)."""
        with self._lock:
            self._groups.clear()
            self.captured = 0
