"""The adapters' twin walls copy every field of their wall, and leave the wall as it was."""

from __future__ import annotations

import gc
import platform
from typing import Any

import pytest

from seawall import ErrorCapture, Timing
from seawall.asgi import ASGIMiddleware
from seawall.contrib import exempt_twin, limits_twin
from seawall.contrib.django import DjangoWall
from seawall.layers import RateLimit
from seawall.wsgi import WSGIMiddleware


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    pass


def walls() -> list[Any]:
    def layers() -> list[object]:
        return [Timing(), ErrorCapture(), RateLimit("10/minute")]

    wsgi = WSGIMiddleware(wsgi_app, layers=layers())
    asgi = ASGIMiddleware(asgi_app, layers=layers())
    for wall in (wsgi, asgi):
        # As the Flask and FastAPI adapters do.
        wall.app_renders_errors = lambda where, exc: False
    return [wsgi, asgi, DjangoWall(wsgi_app, "wsgi", layers=layers())]


@pytest.mark.parametrize("wall", walls(), ids=lambda wall: type(wall).__name__)
def test_a_twin_has_every_field_of_its_wall_but_the_stack(wall: Any) -> None:
    for twin in (exempt_twin(wall), limits_twin(wall)):
        assert twin is not None
        assert type(twin) is type(wall)
        assert twin.stack is not wall.stack
        fields = {name: value for name, value in vars(wall).items() if name != "stack"}
        assert fields.keys() <= set(wall._twin_fields)
        assert {name: getattr(twin, name) for name in fields} == fields


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="CPython's object layout")
def test_making_twins_gives_the_wall_no_dict_of_its_own() -> None:
    # Reading wall.__dict__ would give it a real dict for good, and CPython
    # 3.11 then specialises no attribute load on it, on every request. An
    # object's referents show that dict when it has one.
    wall = WSGIMiddleware(wsgi_app, layers=[Timing(), RateLimit("10/minute")])
    assert limits_twin(wall) is not None
    assert not any(
        type(ref) is dict and ref.get("stack") is wall.stack for ref in gc.get_referents(wall)
    )
