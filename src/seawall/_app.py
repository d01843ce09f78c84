"""``Seawall``: wrap an ASGI or WSGI app in a stack of layers."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from seawall._core.client import ClientResolver
from seawall._core.request import RequestIds
from seawall._core.stack import Stack
from seawall.exceptions import ConfigurationError

if TYPE_CHECKING:
    from seawall.config import ConfigSource

__all__ = ["Seawall", "detect_interface"]

Interface = Literal["auto", "asgi", "wsgi"]


def detect_interface(app: Any) -> Literal["asgi", "wsgi"]:
    """Tell an ASGI app from a WSGI app.

    ASGI apps are coroutine functions or objects whose ``__call__`` is one
    (Starlette, FastAPI, Django's ASGIHandler, Litestar, Quart); everything
    else callable is taken for WSGI (Flask, Django's WSGIHandler, Falcon, Bottle).
    Pass ``interface=`` when an app defeats this (an ASGI app written as a
    class whose ``__call__`` returns an awaitable without being ``async def``).
    """
    if inspect.iscoroutinefunction(app):
        return "asgi"
    call = type(app).__dict__.get("__call__") or getattr(type(app), "__call__", None)  # noqa: B004
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    if getattr(app, "_is_coroutine", None) is not None:  # asgiref's markcoroutinefunction
        return "asgi"
    if not callable(app):
        msg = f"app: expected an ASGI or WSGI callable, got {type(app).__name__}"
        raise ConfigurationError(msg)
    return "wsgi"


class Seawall:
    """Wrap *app* (ASGI or WSGI) in a stack of protection layers.

    ``Seawall(app, layers=[...])`` returns an
    :class:`~seawall.asgi.ASGIMiddleware` or a
    :class:`~seawall.wsgi.WSGIMiddleware` (both are ``Seawall`` instances),
    chosen by :func:`detect_interface` unless *interface* says.

    Args:
        app: the application to protect.
        layers: layer instances; ``None`` gives :func:`seawall.recommended_layers`.
        interface: ``"auto"``, ``"asgi"`` or ``"wsgi"``.
        trusted_proxies: CIDRs whose forwarding headers are believed (default: none).
        trusted_hops: this many proxies stand in front of the app, trusted
            whatever their address: ``1`` makes the right-most forwarding
            entry (the address the one proxy saw) the client.
        ipv6_prefix: IPv6 clients share a key per network of this prefix length.
        request_id_header: the header a well-formed incoming request id is read
            from and the response echoes it in.
        order: ``"canonical"`` (sort layers, see docs/architecture.md) or ``"as given"``.
        on_layer_error: what a layer's own failure does: ``"continue"`` (log, skip
            the layer: fail open) or ``"raise"``.
    """

    interface: Literal["asgi", "wsgi"]

    #: The instance attributes a copy of the wall takes (the adapters' twins,
    #: seawall.contrib): those __init__ sets and the one adapters set. A
    #: subclass that adds one adds it here (tests/contrib checks).
    _twin_fields: tuple[str, ...] = (
        "app",
        "stack",
        "resolver",
        "ids",
        "in_flight",
        "draining",
        "_rid_header",
        "_rid_lower",
        "_rid_len",
        "_rid_key",
        "_rid_environ",
        "app_renders_errors",
    )

    def __new__(cls, app: Any, *args: Any, **kwargs: Any) -> Seawall:
        if cls is Seawall:
            interface = kwargs.get("interface", "auto")
            if interface not in ("auto", "asgi", "wsgi"):
                msg = f"interface: expected 'auto', 'asgi' or 'wsgi', got {interface!r}"
                raise ConfigurationError(msg)
            if interface == "auto":
                interface = detect_interface(app)
            if interface == "asgi":
                from seawall.asgi import ASGIMiddleware

                cls = ASGIMiddleware
            else:
                from seawall.wsgi import WSGIMiddleware

                cls = WSGIMiddleware
        return object.__new__(cls)

    def __init__(
        self,
        app: Any,
        layers: Sequence[object] | None = None,
        *,
        interface: Interface = "auto",
        trusted_proxies: Sequence[str] = (),
        trusted_hops: int | None = None,
        ipv6_prefix: int = 64,
        request_id_header: str = "X-Request-ID",
        order: Literal["canonical", "as given"] = "canonical",
        on_layer_error: Literal["continue", "raise"] = "continue",
    ) -> None:
        if layers is None:
            from seawall.layers import recommended_layers

            layers = recommended_layers()
        self.app = app
        self.stack = Stack(layers, order=order, on_layer_error=on_layer_error)
        self.resolver = ClientResolver(
            trusted_proxies, trusted_hops=trusted_hops, ipv6_prefix=ipv6_prefix
        )
        self.ids = RequestIds(request_id_header)
        #: Requests being handled now (ASGI; the WSGI server owns its threads).
        self.in_flight = 0
        #: True once ASGI lifespan shutdown began: readiness fails, shedding may refuse.
        self.draining = False
        self._rid_header = request_id_header
        self._rid_lower = request_id_header.lower()
        self._rid_len = len(request_id_header)
        self._rid_key = request_id_header.lower().encode("latin-1")
        self._rid_environ = "HTTP_" + request_id_header.upper().replace("-", "_")
        for layer in self.stack.layers:
            bind = getattr(layer, "bind", None)
            if callable(bind):
                bind(self)

    @classmethod
    def from_config(
        cls,
        app: Any,
        source: ConfigSource = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Seawall:
        """Build from settings: a dict, a TOML file path, and ``SEAWALL_*`` variables.

        Environment variables (``env``, default ``os.environ``) override the
        file or dict; keyword *overrides* win over both. Unknown or ill-typed
        keys raise :class:`~seawall.exceptions.ConfigurationError` naming the key.
        See docs/configuration.md for every key.
        """
        from seawall.config import load_config

        settings = load_config(source, env=env, overrides=overrides)
        return cls(app, **settings)

    @property
    def layers(self) -> tuple[object, ...]:
        """The layers, in the order they run (outermost first)."""
        return self.stack.layers

    def stats(self) -> dict[str, Any]:
        """A snapshot of every layer's statistics, keyed by layer name."""
        return self.stack.stats()

    def describe(self) -> list[tuple[int, str, str]]:
        """``(position, name, repr)`` for each layer, outermost first."""
        return [
            (i, name, repr(layer))
            for i, (name, layer) in enumerate(zip(self.stack.names, self.stack.layers, strict=True))
        ]

    def __repr__(self) -> str:
        names = ", ".join(self.stack.names)
        return f"<{type(self).__name__} [{names}] around {self.app!r}>"
