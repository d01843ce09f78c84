"""The stack: layers in order, and the hooks each of them implements.

Theory of operation:

1. Layers are sorted once by their ``order`` (outermost first; stable), or
   kept as given. Each hook is looked up once; a layer without a hook costs
   nothing at that phase.
2. ``on_request`` runs outermost first; the first :class:`Respond` ends the
   request at that *depth*. Only layers at or outside that depth see the
   later hooks: a breaker never learns of a request the rate limiter refused.
3. ``on_response``, ``on_exception`` and ``on_complete`` run innermost first,
   the way wrapping middleware would unwind.
4. A hook that raises is logged once per occurrence and skipped: a layer's
   own failure never fails a request (``on_layer_error="continue"``), unless
   the stack was built with ``on_layer_error="raise"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from seawall._core.decisions import Respond
from seawall._core.layer import ORDER, Outcome, ResponseHead
from seawall._core.request import AFTER_RESPONSE, RequestView
from seawall._log import logger
from seawall.exceptions import ConfigurationError

__all__ = ["Stack", "layer_order"]


def layer_order(layer: object) -> int:
    """Return the canonical position of *layer* (custom layers: just outside the app)."""
    order = getattr(layer, "order", None)
    if isinstance(order, int):
        return order
    if isinstance(order, str) and order in ORDER:
        return ORDER[order]
    return ORDER["custom"]


def _name(layer: object) -> str:
    return str(getattr(layer, "name", None) or type(layer).__name__.lower())


class _ByMethod(dict[str, tuple[tuple[int, Callable[..., Any]], ...]]):
    """The ``on_request`` hooks that run for each method (a layer's ``skip_methods`` left out).

    Worked out once per method and kept (for at most 64 methods: a client
    can send any token as a method).
    """

    __slots__ = ("_hooks", "_skips")

    def __init__(
        self, hooks: tuple[tuple[int, Callable[..., Any]], ...], skips: list[frozenset[str]]
    ) -> None:
        super().__init__()
        self._hooks = hooks
        self._skips = skips

    def __missing__(self, method: str) -> tuple[tuple[int, Callable[..., Any]], ...]:
        hooks = tuple(
            pair for pair, skip in zip(self._hooks, self._skips, strict=True) if method not in skip
        )
        if len(self) < 64:
            self[method] = hooks
        return hooks


class Stack:
    """An ordered set of layers and their pre-looked-up hooks.

    Args:
        layers: layer objects (see :class:`seawall.typing.Layer`).
        order: ``"canonical"`` sorts by each layer's ``order``; ``"as given"`` keeps it.
        on_layer_error: ``"continue"`` (log and skip a failing hook) or ``"raise"``.
    """

    # The drivers read the private tuples (and ``_depth``) directly on the
    # hot path: on CPython 3.11 a property read is an unspecialised call.
    __slots__ = (
        "_adders",
        "_by_method",
        "_complete",
        "_depth",
        "_exception",
        "_response",
        "_shutdown",
        "_startup",
        "layers",
        "message_hooks",
        "names",
        "on_layer_error",
        "request_hooks",
        "websocket_hooks",
    )

    def __init__(
        self,
        layers: Sequence[object] = (),
        *,
        order: Literal["canonical", "as given"] = "canonical",
        on_layer_error: Literal["continue", "raise"] = "continue",
    ) -> None:
        if order not in ("canonical", "as given"):
            msg = f"order: expected 'canonical' or 'as given', got {order!r}"
            raise ConfigurationError(msg)
        if on_layer_error not in ("continue", "raise"):
            msg = f"on_layer_error: expected 'continue' or 'raise', got {on_layer_error!r}"
            raise ConfigurationError(msg)
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            msg = f"layers: expected a list of layers, got {type(layers).__name__}"
            raise ConfigurationError(msg)
        items = list(layers)
        for layer in items:
            if isinstance(layer, type):
                msg = (
                    f"layers: got the class {layer.__name__}, pass an instance: {layer.__name__}()"
                )
                raise ConfigurationError(msg)

        if order == "canonical":
            items.sort(key=layer_order)
        self.layers: tuple[object, ...] = tuple(items)
        self._depth = len(items)
        self.names: tuple[str, ...] = tuple(_name(layer) for layer in items)
        self.on_layer_error = on_layer_error

        def hooks(attr: str) -> tuple[tuple[int, Callable[..., Any]], ...]:
            return tuple(
                (i, getattr(layer, attr))
                for i, layer in enumerate(items)
                if callable(getattr(layer, attr, None))
            )

        self.request_hooks = hooks("on_request")
        self._by_method = _ByMethod(
            self.request_hooks,
            [frozenset(getattr(items[i], "skip_methods", ())) for i, _ in self.request_hooks],
        )
        self.websocket_hooks = tuple(
            (i, hook) for i, hook in self.request_hooks if getattr(items[i], "websocket", False)
        )
        #: ``on_websocket_message`` hooks: asked about each message a client
        #: sends on an admitted websocket (RateLimit with ``websocket_messages``).
        self.message_hooks = hooks("on_websocket_message")
        self._response = tuple(reversed(hooks("on_response")))
        self._adders = tuple(reversed(hooks("add_headers")))
        self._exception = tuple(reversed(hooks("on_exception")))
        self._complete = tuple(reversed(hooks("on_complete")))
        self._startup = hooks("on_startup")
        self._shutdown = hooks("on_shutdown")

    def request_hooks_for(self, method: str) -> tuple[tuple[int, Callable[..., Any]], ...]:
        """The ``(index, on_request)`` pairs that run for *method*, outermost first.

        A layer with a ``skip_methods`` attribute (a collection of methods)
        is left out for those methods: ErrorCapture reads bodies for its
        logs, and a GET has none to read.
        """
        return self._by_method[method]

    @property
    def all_depth(self) -> int:
        """The depth meaning "the app was called": every layer saw the request."""
        return self._depth

    @property
    def has_response_hooks(self) -> bool:
        """Whether some layer edits response heads (``on_response`` or ``add_headers``)."""
        return bool(self._response or self._adders)

    def add_headers(self, request: RequestView, status: int, depth: int) -> list[tuple[str, str]]:
        """The lines the ``add_headers`` hooks at or outside *depth* add (innermost first)."""
        lines: list[tuple[str, str]] = []
        for index, hook in self._adders:
            if index <= depth:
                try:
                    added = hook(request, status)
                except Exception as exc:
                    self.layer_failed(index, "add_headers", exc)
                else:
                    if added:
                        lines.extend(added)
        return lines

    @property
    def has_complete_hooks(self) -> bool:
        """Whether some layer wants to learn how requests ended."""
        return bool(self._complete)

    @property
    def has_exception_hooks(self) -> bool:
        """Whether some layer turns exceptions into responses (ErrorCapture)."""
        return bool(self._exception)

    def layer_failed(self, index: int, hook: str, exc: BaseException) -> None:
        """Log a layer's own failure, then skip it or raise per ``on_layer_error``."""
        logger.error(
            "seawall.layer.failed",
            layer=self.names[index],
            hook=hook,
            error=type(exc).__name__,
            exc_info=exc,
        )
        if self.on_layer_error == "raise":
            raise exc

    def on_response(self, request: RequestView, head: ResponseHead, depth: int) -> None:
        """Let the layers at or outside *depth* edit the response head."""
        for index, hook in self._response:
            if index <= depth:
                try:
                    hook(request, head)
                except Exception as exc:
                    self.layer_failed(index, "on_response", exc)

    def on_exception(self, request: RequestView, exc: BaseException, depth: int) -> Respond | None:
        """Ask the layers (ErrorCapture) for the response to an unhandled exception."""
        answer: Respond | None = None
        for index, hook in self._exception:
            if index <= depth and answer is None:
                try:
                    answer = hook(request, exc)
                except Exception as err:
                    self.layer_failed(index, "on_exception", err)
        return answer

    def on_complete(self, request: RequestView, outcome: Outcome, depth: int) -> None:
        """Tell the layers at or outside *depth* how the request ended."""
        for index, hook in self._complete:
            if index <= depth:
                try:
                    hook(request, outcome)
                except Exception as exc:
                    self.layer_failed(index, "on_complete", exc)

    @staticmethod
    def after_response(request: RequestView, outcome: Outcome) -> None:
        """Run the callbacks of :meth:`RequestView.after_response` (each once)."""
        callbacks = request.state.pop(AFTER_RESPONSE, None)
        for callback in callbacks or ():
            try:
                callback(request, outcome)
            except Exception as exc:
                logger.error(
                    "seawall.after_response.failed",
                    callback=getattr(callback, "__qualname__", repr(callback)),
                    error=type(exc).__name__,
                    exc_info=exc,
                )

    @property
    def lifespan_hooks(self) -> bool:
        """Whether some layer wants to hear of ASGI lifespan startup or shutdown."""
        return bool(self._startup or self._shutdown)

    def on_startup(self) -> None:
        """Tell the layers the app is starting (ASGI lifespan)."""
        for index, hook in self._startup:
            try:
                hook()
            except Exception as exc:
                self.layer_failed(index, "on_startup", exc)

    def on_shutdown(self) -> float:
        """Tell the layers the app is stopping; return how long to drain in-flight requests.

        Each ``on_shutdown()`` may return the seconds it wants in-flight
        requests to be given; the longest wins.
        """
        wait = 0.0
        for index, hook in self._shutdown:
            try:
                asked = hook()
            except Exception as exc:
                self.layer_failed(index, "on_shutdown", exc)
                continue
            if isinstance(asked, (int, float)) and asked > wait:
                wait = float(asked)
        return wait

    def stats(self) -> dict[str, Any]:
        """A snapshot of every layer's ``stats()``, keyed by layer name."""
        out: dict[str, Any] = {}
        for name, layer in zip(self.names, self.layers, strict=True):
            fn = getattr(layer, "stats", None)
            if callable(fn):
                key = name
                n = 2
                while key in out:
                    key = f"{name}#{n}"
                    n += 1
                out[key] = fn()
        return out

    def find(self, kind: type) -> list[Any]:
        """Return the layers that are instances of *kind*."""
        return [layer for layer in self.layers if isinstance(layer, kind)]
