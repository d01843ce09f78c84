"""Twin test apps: the same routes as a raw ASGI app and a raw WSGI app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from seawall import Seawall


class Boom(RuntimeError):
    pass


def _route(path: str) -> tuple[str, str]:
    parts = path.strip("/").split("/", 1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


async def lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI lifespan scope: startup and shutdown complete, nothing else."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Routes: / /boom /status/N /slow/SECONDS /stream /echo /headers /rid /late-boom."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    assert scope["type"] == "http"
    name, arg = _route(scope["path"])
    if name == "boom":
        raise Boom("boom with secret hunter2")
    if name == "slow":
        await asyncio.sleep(float(arg or 0.05))
    status = int(arg) if name == "status" else 200
    if name == "echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if name == "stream" or name == "late-boom":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for i in range(3):
            await send(
                {"type": "http.response.body", "body": f"chunk{i}\n".encode(), "more_body": True}
            )
            if name == "late-boom":
                raise Boom("after start")
        await send({"type": "http.response.body", "body": b""})
        return
    if name == "rid":
        from seawall import request_id

        payload = json.dumps({"rid": request_id(), "scope": scope.get("seawall.request_id")})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload.encode()})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """The same routes as :func:`asgi_app`."""
    name, arg = _route(environ.get("PATH_INFO", "/"))
    if name == "boom":
        raise Boom("boom with secret hunter2")
    if name == "slow":
        time.sleep(float(arg or 0.05))
    status = int(arg) if name == "status" else 200
    if name == "echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if name in ("stream", "late-boom"):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen() -> Any:
            for i in range(3):
                yield f"chunk{i}\n".encode()
                if name == "late-boom":
                    raise Boom("after start")

        return gen()
    if name == "rid":
        from seawall import request_id

        payload = json.dumps({"rid": request_id(), "scope": environ.get("seawall.request_id")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload.encode()]
    start_response(f"{status} X", [("Content-Type", "text/plain")])
    return [b"ok"]


def client_for(wall: Any, *, raise_server_exceptions: bool = True) -> httpx.Client:
    """A sync httpx client for a wrapped app: Starlette's TestClient or WSGITransport."""
    if wall.interface == "asgi":
        from starlette.testclient import TestClient

        return TestClient(wall, raise_server_exceptions=raise_server_exceptions)
    transport = httpx.WSGITransport(app=wall, raise_app_exceptions=raise_server_exceptions)
    return httpx.Client(transport=transport, base_url="http://testserver")


def wrap(interface: str, layers: list[Any], **kwargs: Any) -> Any:
    """The twin app for *interface*, wrapped by Seawall."""
    app = asgi_app if interface == "asgi" else wsgi_app
    return Seawall(app, layers=layers, **kwargs)
