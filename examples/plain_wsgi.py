"""A bare WSGI app under seawall: ``gunicorn --chdir examples plain_wsgi:app``."""

from __future__ import annotations

import json
from typing import Any

from seawall import (
    CircuitBreaker,
    ConcurrencyLimit,
    ErrorCapture,
    Health,
    LoadShedding,
    Metrics,
    RateLimit,
    Seawall,
    Timeout,
    Timing,
    Validation,
    request_id,
)


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("something broke")
    body = json.dumps({"hello": "world", "request_id": request_id()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


app = Seawall(
    application,
    layers=[
        Timing(slow=0.5),
        ErrorCapture(),
        Health(resources=False),
        Metrics(),
        LoadShedding(cpu_threshold=None, memory_threshold=99.0),
        ConcurrencyLimit(64),
        RateLimit("100/minute"),
        Validation(max_body="1 MB"),
        CircuitBreaker(failure_rate_threshold=0.5),
        Timeout(10.0),
    ],
)
