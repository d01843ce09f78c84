"""Validation cost per request, and the worst case of threat detection.

Run: .venv/bin/python bench/bench_validation.py [--quick]

In-process ASGI and WSGI calls (no server, no client) of an app that reads a
1 KB JSON body, wrapped by Seawall with no layers (the baseline) and with
Validation configured step by step. Prints the median µs per request over
interleaved rounds and what each configuration adds to the baseline. Then
the worst time to scan 100 KB adversarial inputs, per sensitivity level.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import statistics
import sys
import time
from typing import Any

from seawall import Seawall, Validation
from seawall.threats import Detector
from seawall.threats._adversarial import PIECES

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 7
N = 300 if QUICK else 1500

BODY = json.dumps(
    {
        "id": 12345,
        "name": "Ann O'Brien",
        "email": "ann.obrien@example.com",
        "title": "A <b>bold</b> move & a quiet one",
        "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 6,
        "tags": ["news", "python", "web", "security"],
        "address": {"street": "1 Main St.", "city": "Dublin", "zip": "D01 F5P2"},
        "scores": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "active": True,
        "ratio": 0.75,
        "comments": [
            {"author": "bob", "text": "Great post, thanks!"},
            {"author": "eve", "text": "I'd like to know more about this (really)."},
        ],
    }
).encode()
BODY = BODY + b" " * max(0, 1024 - len(BODY))


def _variant(i: int) -> bytes:
    # Real traffic does not repeat its long strings: vary them per request so
    # the detector's cache of short values helps only where it would (keys).
    doc = json.loads(BODY)
    doc["body"] = f"{i} {doc['body']}"
    doc["title"] = f"{doc['title']} #{i}"
    doc["comments"][1]["text"] = f"{doc['comments'][1]['text']} ({i})"
    raw = json.dumps(doc).encode()
    return raw + b" " * max(0, 1024 - len(raw))


BODIES = [_variant(i) for i in range(4096)]

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string", "maxLength": 100},
        "email": {"type": "string"},
        "title": {"type": "string"},
        "body": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"type": "object"},
        "scores": {"type": "array", "items": {"type": "integer"}},
        "active": {"type": "boolean"},
    },
    "required": ["id", "name", "email"],
}
FIELDS = ["title", "body", "comments.*.text"]
ROUTE = "POST /posts"


def configs() -> dict[str, list[Any] | None]:
    return {
        "app alone": None,
        "seawall, no layers": [],
        "limits only (body streamed)": [Validation(json=False, methods=["GET", "POST"])],
        "+ JSON parse and structure limits": [Validation()],
        "+ JSON Schema (fastjsonschema)": [Validation(schemas={ROUTE: SCHEMA})],
        "+ sanitize 3 fields (nh3)": [
            Validation(schemas={ROUTE: SCHEMA}, sanitize={ROUTE: FIELDS}, sanitizer="nh3")
        ],
        "+ sanitize 3 fields (bleach)": [
            Validation(schemas={ROUTE: SCHEMA}, sanitize={ROUTE: FIELDS}, sanitizer="bleach")
        ],
        "+ threat detection (level 1)": [
            Validation(schemas={ROUTE: SCHEMA}, sanitize={ROUTE: FIELDS}, threats="block")
        ],
        "threats only (level 1)": [Validation(threats="block")],
    }


HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: Any, start_response: Any) -> Any:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [])
    return [b"ok"]


def time_asgi(app: Any, n: int) -> float:
    async def send(message: Any) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"unexpected status {message['status']}")

    async def run() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            body = BODIES[i % len(BODIES)]
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/posts",
                "query_string": b"page=1",
                "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
                "client": ("127.0.0.1", 5000),
            }
            sent = False

            async def receive(body: bytes = body) -> Any:
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, receive, send)
        return (time.perf_counter() - t0) / n * 1e6

    return asyncio.run(run())


def time_wsgi(app: Any, n: int) -> float:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        if not status.startswith("200"):
            raise RuntimeError(f"unexpected status {status}")
        return lambda data: None

    t0 = time.perf_counter()
    for i in range(n):
        body = BODIES[i % len(BODIES)]
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/posts",
            "QUERY_STRING": "page=1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
            "HTTP_ACCEPT": "application/json",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
        }
        result = app(environ, start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - t0) / n * 1e6


def bench_requests() -> None:
    for interface, raw, timer in (("ASGI", asgi_app, time_asgi), ("WSGI", wsgi_app, time_wsgi)):
        apps = {
            name: raw
            if layers is None
            else Seawall(raw, layers=layers, interface=interface.lower())
            for name, layers in configs().items()
        }
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for app in apps.values():
            timer(app, 50)  # warm up (compiles schemas' code paths, caches policies)
        for _ in range(ROUNDS):
            for name, app in apps.items():  # interleaved: load drifts hit every config alike
                gc.collect()
                samples[name].append(timer(app, N))
        med = {name: statistics.median(values) for name, values in samples.items()}
        low = {name: min(values) for name, values in samples.items()}
        base, base_low = med["seawall, no layers"], low["seawall, no layers"]
        print(f"\n{interface}: 1 KB JSON body (4096 variants), µs per request")
        print(f"(median and min of {ROUNDS} interleaved rounds x {N} requests)")
        head = f"{'configuration':40s} {'median':>8s} {'added':>8s} {'min':>8s} {'added':>8s}"
        print(head)
        for name, value in med.items():
            fixed = name in ("app alone", "seawall, no layers")
            added = "" if fixed else f"{value - base:+.1f}"
            added_low = "" if fixed else f"{low[name] - base_low:+.1f}"
            print(f"{name:40s} {value:8.1f} {added:>8s} {low[name]:8.1f} {added_low:>8s}")


ADVERSARIAL = PIECES


def bench_worst_case() -> None:
    size = 100_000
    print(f"\nWorst case: one {size // 1000} KB value made of a repeated adversarial piece")
    print("(each value is scanned up to MAX_SCAN = 64 KiB; a request up to threat_scan_budget)")
    for level in (1, 4):
        detector = Detector(level=level)
        worst = (0.0, "")
        total = 0.0
        for piece in ADVERSARIAL:
            text = (piece * (size // len(piece) + 1))[:size]
            t0 = time.perf_counter()
            detector.scan(text)
            took = time.perf_counter() - t0
            total += took
            if took > worst[0]:
                worst = (took, piece)
        print(
            f"level {level}: worst {worst[0] * 1000:7.1f} ms (piece {worst[1]!r}), "
            f"mean {total / len(ADVERSARIAL) * 1000:6.1f} ms"
        )
    layer = Validation(threats="block", max_body=None)
    wall = Seawall(asgi_app, layers=[layer], interface="asgi")
    doc = json.dumps({f"k{i}": "' or " * 2000 for i in range(20)}).encode()

    async def run() -> float:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(doc)).encode()),
            ],
        }

        async def receive() -> Any:
            return {"type": "http.request", "body": doc, "more_body": False}

        async def send(message: Any) -> None:
            pass

        t0 = time.perf_counter()
        await wall(scope, receive, send)
        return time.perf_counter() - t0

    took = asyncio.run(run())
    print(
        f"one request, {len(doc) // 1000} KB JSON of adversarial strings, default budget "
        f"(64 KiB): {took * 1000:.1f} ms"
    )


SANITIZE_INPUTS = {
    "plain text (no markup, 350 chars)": "Lorem ipsum dolor sit amet, consectetur. " * 8,
    "light markup (<b>, &, 60 chars)": "A <b>bold</b> move & a <i>quiet</i> one, said O'Brien.",
    "hostile (script, onerror, js: link)": (
        '<p onclick="x()">hi</p><script>alert(1)</script>'
        '<img src=x onerror=alert(1)><a href="javascript:alert(1)">l</a>'
    ),
    "1 KB of mixed HTML": (
        "<div><p>Para <em>graph</em> &amp; <a href='https://x.io'>link</a></p></div>" * 14
    )[:1024],
}


def bench_sanitizers() -> None:
    from seawall.sanitize import Sanitizer

    backends = {"nh3": Sanitizer("nh3"), "bleach": Sanitizer("bleach")}
    print("\nsanitize(text), µs per call (median of rounds; includes the idempotence re-check)")
    print(f"{'input':40s} {'nh3':>9s} {'bleach':>9s} {'ratio':>7s}")
    budget = 0.05 if QUICK else 0.2  # seconds per round: bleach is slow on 1 KB
    for label, text in SANITIZE_INPUTS.items():
        med = {}
        for name, clean in backends.items():
            runs = []
            for _ in range(ROUNDS):
                count = 0
                t0 = time.perf_counter()
                while count < 2000 and time.perf_counter() - t0 < budget:
                    clean(text)
                    count += 1
                runs.append((time.perf_counter() - t0) / count * 1e6)
            med[name] = statistics.median(runs)
        print(
            f"{label:40s} {med['nh3']:9.1f} {med['bleach']:9.1f} {med['bleach'] / med['nh3']:6.1f}x"
        )
    hostile = SANITIZE_INPUTS["hostile (script, onerror, js: link)"]
    for name, clean in backends.items():
        print(f"{name:7s} -> {clean(hostile)!r}")


if __name__ == "__main__":
    import os

    print(f"load average at start: {os.getloadavg()}")
    bench_requests()
    bench_sanitizers()
    bench_worst_case()
    print(f"load average at end: {os.getloadavg()}")
