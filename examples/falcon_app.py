"""Falcon under seawall (any WSGI framework): ``gunicorn --chdir examples falcon_app:app``."""

from __future__ import annotations

from typing import Any

import falcon

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


class Index:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"hello": "world", "request_id": request_id()}


class Item:
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        resp.media = {"id": item_id}


class Boom:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("something broke")


def reraise(req: Any, resp: Any, ex: Exception, params: Any) -> None:
    # Falcon answers unhandled errors with its own 500; re-raise them so the
    # wall's ErrorCapture logs them once and answers problem+json.
    raise ex


api = falcon.App()
api.add_route("/", Index())
api.add_route("/items/{item_id:int}", Item())
api.add_route("/boom", Boom())
api.add_error_handler(Exception, reraise)

app = Seawall(
    api,
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
