"""``seawall demo``: a small WSGI app behind every layer, on in-memory defaults.

The app is served by the standard library's ``wsgiref`` on 127.0.0.1 (a
thread per request), so the demo needs nothing but seawall's own
dependencies: no Redis, no framework, no server package.
"""

from __future__ import annotations

import http.client
import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["build_demo_app", "run_demo"]


def demo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The protected app: a few routes that behave well, fail, or take their time."""
    path = environ.get("PATH_INFO", "/")
    if path == "/boom":
        raise RuntimeError("the demo handler failed on purpose")
    if path == "/slow":
        time.sleep(0.3)
    if path == "/login":
        ok = "password=open-sesame" in environ.get("QUERY_STRING", "")
        start_response("200 OK" if ok else "401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"welcome\n" if ok else b"wrong password\n"]
    if path == "/flaky":
        start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
        return [b"upstream failed\n"]
    if path.startswith("/api/") and environ.get("REQUEST_METHOD") == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response("201 Created", [("Content-Type", "application/json")])
        return [b'{"received": ' + str(len(body)).encode() + b"}"]
    start_response("200 OK", [("Content-Type", "application/json")])
    rid = environ.get("seawall.request_id", "")
    return [json.dumps({"hello": "world", "path": path, "request_id": rid}).encode()]


@dataclass
class Step:
    """One scripted request."""

    label: str
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    repeat: int = 1


def _optional(module: str, name: str) -> Any:
    """A layer class if its module is there (layers land one by one)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def build_demo_app(slow: float = 0.2) -> tuple[Any, list[Step]]:
    """The wrapped demo app and the traffic script that shows each layer at work."""
    from seawall._app import Seawall
    from seawall.layers.errors import ErrorCapture
    from seawall.layers.timing import Timing

    layers: list[object] = [Timing(slow=slow), ErrorCapture()]
    steps = [
        Step("normal requests", path="/", repeat=5),
        Step("a request with a client-chosen id", path="/", headers={"X-Request-ID": "demo-42"}),
        Step("an unhandled exception", path="/boom"),
        Step("a slow request", path="/slow"),
    ]
    for module, name, make in _EXTRAS:
        cls = _optional(module, name)
        if cls is None:
            continue
        try:
            layer, more = make(cls)
        except Exception:  # a layer still being built never breaks the demo
            continue
        layers.append(layer)
        steps.extend(more)
    return Seawall(demo_app, layers=layers, interface="wsgi"), steps


def _health(cls: Any) -> tuple[object, list[Step]]:
    # trend=False: the demo is over before a trend could be learnt.
    return cls(trend=False), [Step("a readiness probe", path="/health/ready")]


def _metrics(cls: Any) -> tuple[object, list[Step]]:
    return cls(), [Step("a Prometheus scrape", path="/metrics")]


def _shedding(cls: Any) -> tuple[object, list[Step]]:
    return cls(critical=["/health/*"]), []


def _concurrency(cls: Any) -> tuple[object, list[Step]]:
    return cls(64), []


def _rate_limit(cls: Any) -> tuple[object, list[Step]]:
    # A generous default and two tight rules, so only the bursts below are
    # limited: the burst's two refusals stay under the ban's three strikes.
    layer = cls(
        "1000/minute",
        rules={
            "GET /api/items": "5/minute",
            "POST /login": {"limit": "3/minute", "count_when": "failure", "key": "header:X-User"},
        },
        ban={"after": "3/minute", "duration": 600},
    )
    good = "/login?password=open-sesame"
    return layer, [
        Step("a burst past 5/minute", path="/api/items", repeat=7),
        Step("logins that succeed are not counted", "POST", good, {"X-User": "alice"}, repeat=4),
        Step(
            "3 failed logins count, then 429s",
            "POST",
            "/login?password=guess",
            {"X-User": "mallory"},
            repeat=6,
        ),
        Step("banned now: even the right password", "POST", good, {"X-User": "mallory"}),
    ]


def _validation(cls: Any) -> tuple[object, list[Step]]:
    layer = cls(max_body=1024, threats="block")
    return layer, [
        Step("an SQL injection in the query", path="/search?q=1%27%20OR%20%271%27%3D%271"),
        Step(
            "a body over 1 KB",
            method="POST",
            path="/api/upload",
            headers={"Content-Type": "application/json"},
            body=b'{"x": "' + b"a" * 2048 + b'"}',
        ),
        Step(
            "malformed JSON",
            method="POST",
            path="/api/items",
            headers={"Content-Type": "application/json"},
            body=b'{"x": ',
        ),
    ]


def _breaker(cls: Any) -> tuple[object, list[Step]]:
    layer = cls(fail_max=3, wait_in_open=30)
    return layer, [Step("a failing upstream trips the breaker", path="/flaky", repeat=5)]


def _timeout(cls: Any) -> tuple[object, list[Step]]:
    return cls(10.0), []


_EXTRAS: list[tuple[str, str, Callable[[Any], tuple[object, list[Step]]]]] = [
    ("seawall.layers.health", "Health", _health),
    ("seawall.layers.metrics", "Metrics", _metrics),
    ("seawall.layers.shedding", "LoadShedding", _shedding),
    ("seawall.layers.concurrency", "ConcurrencyLimit", _concurrency),
    ("seawall.layers.ratelimit", "RateLimit", _rate_limit),
    ("seawall.layers.validation", "Validation", _validation),
    ("seawall.layers.breaker", "CircuitBreaker", _breaker),
    ("seawall.layers.timeout", "Timeout", _timeout),
]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _send(host: str, port: int, step: Step) -> tuple[int, dict[str, str], bytes, float]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    started = time.perf_counter()
    try:
        conn.request(step.method, step.path, body=step.body, headers=step.headers)
        resp = conn.getresponse()
        body = resp.read()
        return (
            resp.status,
            {k.lower(): v for k, v in resp.getheaders()},
            body,
            time.perf_counter() - started,
        )
    finally:
        conn.close()


def _what(status: int, headers: dict[str, str], body: bytes) -> str:
    if headers.get("content-type", "").startswith("application/problem+json"):
        try:
            doc = json.loads(body)
        except ValueError:
            return "problem response"
        kind = str(doc.get("type", "")).rsplit(":", 1)[-1].rsplit("#", 1)[-1]
        extra = f" error_id={doc['error_id']}" if "error_id" in doc else ""
        if "retry-after" in headers:
            extra += f" (retry after {headers['retry-after']} s)"
        return f"{kind}: {doc.get('title', '')}{extra}"
    ctype = headers.get("content-type", "")
    if ctype.startswith("application/health+json"):
        return "answered by Health (the app never saw it)"
    if ctype.startswith("text/plain; version=0.0.4"):
        return "answered by Metrics (Prometheus text)"
    return "passed through to the app"


def run_demo(*, serve: bool = False, host: str = "127.0.0.1", port: int = 0) -> int:
    """Run the demo; return the exit status."""
    import logging

    import structlog

    # The demo owns its process, so it may configure logging: quiet, one line per event.
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=lambda *a: None),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
    wall, steps = build_demo_app()
    server = make_server(
        host, port, wall, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    actual_port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="seawall-demo", daemon=True)
    thread.start()
    print(f"seawall demo: a WSGI app on http://{host}:{actual_port}/ behind:")
    for position, name, text in wall.describe():
        print(f"  {position + 1}. {name:<12} {text}")
    try:
        if serve:
            print(
                f"\nTry: curl -i http://{host}:{actual_port}/   (/boom, /slow, /flaky, POST /api/)"
            )
            print("Ctrl-C to stop.")
            while True:
                time.sleep(3600)
        print()
        print(f"{'#':>3}  {'step':<40} {'status':>6} {'ms':>8}  what seawall did")
        print("-" * 100)
        n = 0
        for step in steps:
            for _ in range(step.repeat):
                n += 1
                status, headers, body, took = _send(host, actual_port, step)
                print(
                    f"{n:>3}  {step.label[:40]:<40} {status:>6} {took * 1000:>8.1f}  "
                    f"{_what(status, headers, body)}"
                )
        print()
        _print_stats(wall.stats())
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.shutdown()
        server.server_close()


def _print_stats(stats: dict[str, Any]) -> None:
    print("What each layer saw:")
    timing = stats.get("timing")
    if timing:
        print(f"  timing: {timing['requests']} requests, {timing['slow_requests']} slow")
        for route, r in sorted(timing["routes"].items()):
            print(
                f"    {route:<16} n={r['count']:<3} p50={r['p50_ms']:.2f} ms "
                f"p99={r['p99_ms']:.2f} ms errors={r['errors']}"
            )
    errors = stats.get("errors")
    if errors:
        print(f"  errors: {errors['captured']} captured")
        for group in errors["groups"]:
            where = f"{group['type']} at {group['location']}"
            print(f"    {group['fingerprint']}  {where} x{group['count']}")
    for name, figures in stats.items():
        if name in ("timing", "errors"):
            continue
        print(f"  {name}: {json.dumps(figures, default=str)[:300]}")
