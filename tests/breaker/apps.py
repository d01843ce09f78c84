"""Small twin apps for the breaker tests: they report a route template, as frameworks do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seawall import Seawall

TEMPLATES = {"items": "/items/{id}", "users": "/users/{id}"}


def _template(path: str) -> str | None:
    head = path.strip("/").split("/", 1)[0]
    return TEMPLATES.get(head)


def _status(path: str) -> int:
    # /items/500 answers 500, /items/7 answers 200.
    tail = path.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() and int(tail) >= 400 else 200


async def asgi_routed(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the status in the last path segment; sets ``scope["seawall.route"]``."""
    template = _template(scope["path"])
    if template is not None:
        scope["seawall.route"] = template
    status = _status(scope["path"])
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_routed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """The WSGI twin of :func:`asgi_routed` (``environ["seawall.route"]``)."""
    template = _template(environ["PATH_INFO"])
    if template is not None:
        environ["seawall.route"] = template
    start_response(f"{_status(environ['PATH_INFO'])} X", [])
    return [b"ok"]


def routed(interface: str, layers: list[Any]) -> Any:
    """The routed twin app for *interface*, wrapped."""
    return Seawall(asgi_routed if interface == "asgi" else wsgi_routed, layers=layers)
