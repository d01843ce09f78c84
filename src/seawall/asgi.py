"""The pure-ASGI driver.

Theory of operation:

1. Only ``http`` and ``websocket`` scopes are touched; anything else passes
   straight through, ``lifespan`` with its ``receive`` watched: at startup
   and shutdown the layers hear of it, and at shutdown the driver waits for
   requests in flight, then for the writes they left running, before the
   app sees the message. Websockets see only the layers that declare
   ``websocket = True`` (identity, rate limit on connect).
2. The response is never buffered: each ``send`` is forwarded as it comes,
   with the layers' header edits applied to a copy of ``http.response.start``
   (the app's own message is never changed: apps reuse them). The one
   exception is a 500, held while the app runs on without waiting, so that an
   exception's problem response can replace the framework's own 500 (Starlette's
   ``ServerErrorMiddleware`` sends one, then re-raises at once). The hold is
   bounded: it ends when the app returns or raises, when it has waited
   :data:`HOLD_SECONDS` on anything (a streamed chunk, a background task),
   or past :data:`HOLD_BYTES` of body. If seawall has no answer of its own
   for the exception, the held 500 goes out before it is re-raised.
3. After ``http.response.start`` has gone out no second one is ever sent: an
   exception then is logged (ErrorCapture) and re-raised so the server closes
   the connection instead of passing off a truncated body as complete.
4. The request body is read only when a layer yields :class:`ReadBody`; the
   bytes read are replayed to the app byte-identical, in as few messages as
   possible (one, plus an ``http.disconnect`` read with them), then
   ``receive`` resumes.
5. ``on_complete`` runs after the app returns, so background tasks have run;
   ``http.response.pathsend`` and a final ``http.response.zerocopy`` end the
   response as a final body chunk does.
6. A request stopped while its layers decide (cancelled during a layer's
   I/O) still tells every layer that saw it (:mod:`seawall._run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from time import perf_counter
from typing import Any, TypeVar

from seawall._app import Seawall
from seawall._core import background
from seawall._core.decisions import ReadBody, ReplaceBody, Respond
from seawall._core.layer import Outcome, ResponseHead
from seawall._core.request import RequestView, asgi_view
from seawall._log import (
    bind_request,
    logger,
    reset_current,
    reset_structlog_request_id,
    set_current,
    set_structlog_request_id,
    unbind_request,
)
from seawall._run import arun_request, start_request
from seawall.exceptions import Rejected, RequestTimeout, ValidationFailed

__all__ = [
    "ASGIApp",
    "ASGIMiddleware",
    "DeadlineExpired",
    "Receive",
    "Scope",
    "Send",
    "full_template",
    "prefixed_template",
    "route_of",
    "with_deadline",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_T = TypeVar("_T")

_ENDPOINT_ROUTES: dict[int, str | None] = {}

#: id(app.routes) -> (that list, its length, {id(route): ((path regex, full template), ...)}).
#: The list is held: the route ids in the table stay those of live routes.
_INCLUDED: dict[int, tuple[Any, int, dict[int, tuple[tuple[Any, str], ...]]]] = {}


_UNRESOLVED: Any = object()
#: The key FastAPI's scope state holds while an included router serves the
#: request (``None``: this FastAPI has none to tell; every route is looked up).
_INCLUDED_KEY: Any = _UNRESOLVED


def mounted(scope: Scope, template: str) -> str:
    """*template* with the paths of the mounts (``app.mount``) the request went through.

    A route of a mounted app knows only its own path: ``/orders/{id}`` for
    ``/legacy/orders/{id}``, the same template as a route of the outer app.
    Starlette's ``Mount`` adds its path to ``root_path`` and keeps the
    ``root_path`` it started from in ``app_root_path``: the difference is the
    mounts' prefix (a root path the server or the app set is not in it).
    """
    base = scope.get("app_root_path")
    if not isinstance(base, str):
        return template
    root = scope.get("root_path", "")
    if isinstance(root, str) and len(root) > len(base) and root.startswith(base):
        return root[len(base) :] + template
    return template


def prefixed_template(scope: Scope, matched: Any, template: str) -> str:
    """:func:`full_template`, skipped for a route no included router serves.

    Most routes are the app's own: FastAPI marks a request an included router
    serves in its scope state, and only those pay for the lookup.
    """
    global _INCLUDED_KEY
    key = _INCLUDED_KEY
    if key is _UNRESOLVED:
        try:
            from fastapi.routing import _FASTAPI_INCLUDED_ROUTER_KEY as key
        except ImportError:
            key = None  # another FastAPI: look every route up
        _INCLUDED_KEY = key
    state = scope.get("fastapi")
    if key is not None and isinstance(state, dict) and key not in state:
        return mounted(scope, template)
    return mounted(scope, full_template(scope, matched, template))


def full_template(scope: Scope, matched: Any, template: str) -> str:
    """*template* of the FastAPI route *matched* with the prefixes of the routers it is in.

    FastAPI 0.165 and later keep an included router's routes out of
    ``app.routes`` and put the router's own route, unprefixed, in
    ``scope["route"]``: ``/items/{id}`` for ``/v1/items/{id}``. Two routers
    (or one router included twice) would then share one template, and so
    one set of statistics, metrics labels and per-route breakers.
    ``fastapi.routing.iter_route_contexts`` gives every route with its
    prefixed template; a route included under several prefixes is told
    apart by matching the request's path.
    """
    app = scope.get("app")
    routes = getattr(app, "routes", None)
    if not routes:
        return template
    cached = _INCLUDED.get(id(routes))
    if cached is None or cached[0] is not routes or cached[1] != len(routes):
        if len(_INCLUDED) >= 64:
            _INCLUDED.clear()
        cached = _INCLUDED[id(routes)] = (routes, len(routes), _prefixed_templates(routes))
    found = cached[2].get(id(matched))
    if not found:
        return template
    if len(found) == 1:
        return found[0][1]
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    for pattern, full in found:
        if pattern.match(path):
            return full
    return template


def walk_routes(
    routes: Iterable[Any], *, hosts: bool = True, prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, Any]]:
    """Every route of a Starlette/FastAPI app as ``(mount prefix, route)``, in routing order.

    Looks into mounted apps (``app.mount``), into ``Host`` routes unless
    *hosts* is false, and, on FastAPI versions that no longer copy an
    included router's routes into ``app.routes``, into included routers
    through ``fastapi.routing.iter_route_contexts``: their routes carry the
    routers' prefixes and dependencies.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before 0.165, or plain Starlette: routes are flat
        contexts: Iterable[Any] = routes
    else:
        contexts = iter_route_contexts(list(routes))
    for route in contexts:
        original = getattr(route, "original_route", route)
        inner = getattr(original, "routes", None)
        if inner is None:
            yield prefix, route
            continue
        path = getattr(original, "path", None)  # a Mount's; a Host has none
        if depth < 8 and (hosts or isinstance(path, str)):
            below = prefix + path if isinstance(path, str) else prefix
            yield from walk_routes(inner, hosts=hosts, prefix=below, depth=depth + 1)


def _prefixed_templates(routes: Any) -> dict[int, tuple[tuple[Any, str], ...]]:
    try:
        from fastapi.routing import iter_route_contexts
        from starlette.routing import compile_path
    except ImportError:  # FastAPI before 0.165: app.routes has them, prefixed
        return {}
    table: dict[int, list[tuple[Any, str]]] = {}
    for ctx in iter_route_contexts(list(routes)):
        original = ctx.original_route
        full, path = ctx.path_format, ctx.path
        if not isinstance(full, str) or not isinstance(path, str):
            continue
        if full == getattr(original, "path_format", None):
            continue  # not included under a prefix: scope["route"] says it already
        table.setdefault(id(original), []).append((compile_path(path)[0], full))
    return {key: tuple(value) for key, value in table.items()}


def route_of(scope: Scope) -> str | None:
    """
    The route template the app matched (``/items/{id}``), if it says.

    Read after the app ran: FastAPI puts the route in ``scope["route"]``,
    Starlette the endpoint (looked up in its router once per endpoint), the
    framework adapters put it in ``scope["seawall.route"]``.
    """
    matched = scope.get("route")
    if matched is not None:
        path = getattr(matched, "path_format", None) or getattr(matched, "path", None)
        if path:
            if "fastapi" in scope:
                # FastAPI 0.165+ leaves an included router's route unprefixed.
                return prefixed_template(scope, matched, str(path))
            return mounted(scope, str(path))
    endpoint = scope.get("endpoint")
    if endpoint is None:
        route = scope.get("seawall.route")
        return None if route is None else str(route)
    key = id(endpoint)
    if key in _ENDPOINT_ROUTES:
        return _ENDPOINT_ROUTES[key]
    found: str | None = None
    for candidate in getattr(scope.get("router"), "routes", ()):
        if getattr(candidate, "endpoint", None) is endpoint:
            found = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
            break
    if found is None and scope.get("seawall.route") is not None:
        return str(scope["seawall.route"])
    if len(_ENDPOINT_ROUTES) < 10_000:
        _ENDPOINT_ROUTES[key] = found
    return found


def _get_header(items: list[tuple[bytes, bytes]], lname: str) -> str | None:
    key = lname.encode("latin-1")
    for name, value in items:
        if name.lower() == key:
            return value.decode("latin-1")
    return None


# Header names layers add, encoded once: lower() and encode() per header per
# response cost more than a dict lookup. Bounded: names come from the
# layers' code, but a layer could build them from request data.
_NAME_BYTES: dict[str, bytes] = {}


def _name_bytes(name: str) -> bytes:
    encoded = _NAME_BYTES.get(name)
    if encoded is None:
        encoded = name.lower().encode("latin-1")
        if len(_NAME_BYTES) < 1024:
            _NAME_BYTES[name] = encoded
    return encoded


def _apply(items: list[tuple[bytes, bytes]], head: ResponseHead) -> list[tuple[bytes, bytes]]:
    if head.removed:
        removed = {n.encode("latin-1") for n in head.removed}
        out = [(k, v) for k, v in items if k.lower() not in removed]
    else:
        out = list(items)
    names = _NAME_BYTES
    for name, value in head.added:
        out.append((names.get(name) or _name_bytes(name), value.encode("latin-1")))
    return out


class BodyTooLarge(ValidationFailed):
    """The request body grew past ``request.max_body`` while the app read it (413)."""

    problem_type = "body-too-large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than {limit} bytes.",
            status=413,
            title="Content Too Large",
            extensions={"max_body": limit},
        )


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


class DeadlineExpired(TimeoutError):
    """The request's own deadline (a Timeout layer's) ran out: not a ``TimeoutError`` of the app's.

    An app that times out a call of its own (``asyncio.wait_for`` on a
    slow API) raises ``TimeoutError`` too; that one is the app's error, a
    500 for ErrorCapture and a failure for a breaker, not our 504.
    """


async def with_deadline(call: Awaitable[_T], seconds: float, holder: Any = None) -> _T:
    """Await *call* within *seconds*; :class:`DeadlineExpired` if they ran out first.

    *holder*, if given, gets the running deadline as ``holder.deadline``
    (3.11+), so that it can be disarmed once the answer is complete.
    """
    if sys.version_info >= (3, 11):
        deadline = asyncio.timeout(seconds)
        if holder is not None:
            holder.deadline = deadline
        try:
            async with deadline:
                return await call
        except TimeoutError:
            if deadline.expired():
                raise DeadlineExpired from None
            raise
    else:  # pragma: no cover
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await asyncio.wait_for(call, seconds)
        except asyncio.TimeoutError:
            if loop.time() - start >= seconds:
                raise DeadlineExpired from None
            raise


async def _nothing() -> None:
    """Do nothing: what :meth:`_Cycle.send` returns for a message it holds back.

    A coroutine, as an ``async def`` send gives: an app may hand it to
    ``create_task``.
    """


def mark_coroutine_function(func: Callable[..., Any]) -> None:
    """Make ``asyncio.iscoroutinefunction`` (and, on 3.12+, ``inspect``'s) true for *func*.

    For a plain function that returns a coroutine it does not create itself
    (the server's, the wrapped app's): servers and SDKs tell ASGI 3 apps
    from ASGI 2 ones by this test (uvicorn's ``--interface auto``, Sentry's
    ``SentryAsgiMiddleware``), and asgiref's ``async_to_sync`` warns without
    it. On 3.10 and 3.11 ``inspect.iscoroutinefunction`` reads code flags
    only; nothing can mark a function for it there.
    """
    if sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(func)
    else:  # pragma: no cover - the marker asyncio reads before 3.12
        func._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


def _close_reason(rejected: Rejected) -> str:
    """The reason of the 1008 close that ends an open websocket a limit refused."""
    return "rate limit exceeded" if rejected.status == 429 else "rejected"


class _Body:
    """What a layer read of the request body, replayed to the app.

    The bytes, not the messages: a message dict costs about 280 bytes, a
    client (HTTP/2 DATA frames) may send any number of tiny or empty ones,
    and the app needs only the bytes (byte-identical, not chunk-identical).
    """

    __slots__ = ("complete", "data", "tail")

    def __init__(self) -> None:
        self.data = bytearray()
        self.complete = False
        #: An ``http.disconnect`` read while reading the body: replayed after it.
        self.tail: Message | None = None

    def messages(self) -> list[Message]:
        """What the app receives first: the bytes read, in one message, then the tail."""
        tail = self.tail
        if tail is None:
            more = not self.complete  # stopped at the limit: receive gives the rest
            return [{"type": "http.request", "body": bytes(self.data), "more_body": more}]
        if not self.data:
            return [tail]
        return [{"type": "http.request", "body": bytes(self.data), "more_body": True}, tail]


#: How long a 500 is held while the app waits (see the module's theory, 2).
HOLD_SECONDS = 0.01
#: How many body bytes of a 500 are held at most.
HOLD_BYTES = 65536


class _Held:
    """A 500 held back: its messages, and how it goes out if the app waits."""

    __slots__ = ("messages", "sending", "size", "task", "timer")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.size = 0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.sending = False


class _Cycle:
    """One HTTP request/response cycle: the state the driver keeps per request.

    Slotted, with no ``__init__``, every field set by the driver: on
    CPython 3.11 a read that falls back to a class-level default is an
    unspecialised lookup, a slot read is not, and a slotted instance
    allocates no ``__dict__``.
    """

    __slots__ = (
        "body",
        "deadline",
        "depth",
        "ended",
        "exception",
        "held",
        "receive",
        "responded_by",
        "scope",
        "send_",
        "started_response",
        "status",
        "timed_out",
        "ttfb",
        "view",
        "wall",
    )

    wall: ASGIMiddleware
    view: RequestView
    scope: Scope
    receive: Receive
    send_: Send
    body: _Body | None
    #: Where the layers stopped: all of them until one answers; if the
    #: request phase is stopped, the layer that was running (seawall._run).
    depth: int
    status: int | None
    ttfb: float | None
    ended: float | None
    #: The Timeout layer's running deadline (3.11+), disarmed by the last body chunk.
    deadline: Any
    started_response: bool
    held: _Held | None
    exception: BaseException | None
    responded_by: str | None
    timed_out: bool

    async def body_io(self, effect: Any) -> Any:
        """Run :class:`ReadBody`/:class:`ReplaceBody` for the layers."""
        if self.body is None:
            self.body = _Body()
        if isinstance(effect, ReadBody):
            return await ASGIMiddleware._read_body(self.body, self.receive, effect.limit, self.view)
        if isinstance(effect, ReplaceBody):
            ASGIMiddleware._replace_body(self.body, self.scope, effect)
            self.view.body = effect.body
            return None
        raise TypeError(type(effect).__name__)  # pragma: no cover

    def head_items(self, status: int, items: Any) -> list[tuple[bytes, bytes]]:
        """The response headers after the layers' edits, with the request id echoed."""
        view = self.view
        stack = self.wall.stack
        extra = view.response_headers
        # stack._response, not the has_response_hooks property: hot path.
        if stack._response:
            head = ResponseHead(status, items, _get_header)
            if extra:
                head.added.extend(extra)
            stack.on_response(view, head, self.depth)
            out = _apply(items, head)
            lines: list[tuple[str, str]] = []
        else:
            out = list(items)
            lines = extra
        adders = stack._adders
        if adders:
            # add_headers inline (not Stack.add_headers): one call per layer
            # on every response.
            depth = self.depth
            for index, hook in adders:
                if index <= depth:
                    try:
                        added = hook(view, status)
                    except Exception as exc:
                        stack.layer_failed(index, "add_headers", exc)
                        continue
                    if added:
                        lines = [*lines, *added] if lines else added
        if lines:
            # One encoding loop for the request-time lines and the hooks'.
            names = _NAME_BYTES
            for line_name, line_value in lines:
                out.append(
                    (names.get(line_name) or _name_bytes(line_name), line_value.encode("latin-1"))
                )
        key = self.wall._rid_key
        # A plain loop: cheaper than `key not in map(itemgetter(0), out)`
        # for a response's handful of headers (measured).
        for name, _ in out:
            if name == key:
                break
        else:
            # Request ids are ASCII (accepted ones match _SAFE_ID): the
            # default codec is the fast path of str.encode.
            out.append((key, view.request_id.encode()))
        return out

    def send(self, message: Message) -> Awaitable[None]:
        """The ``send`` the app gets: edits the start, never buffers the body.

        A plain method that returns the server's own awaitable (for a held
        message, a coroutine that does nothing), not a coroutine of its own:
        one would add a coroutine object and a frame to every ``await
        send(...)`` of the app (callgrind: 1.5k instructions per response
        of two messages). It is marked a coroutine function, as the
        ``async def`` it replaces was, for those who test.
        """
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            self.status = status
            self.ttfb = perf_counter()
            # A copy: an app may send the same start dict on every response,
            # and would find our headers (last request's id) in it next time.
            # dict.copy() clones the table whole: of the copies, the cheapest
            # (callgrind: 0.3k instructions less than dict(), 0.5k than {**m}).
            # ASGI messages are dicts.
            headers = self.head_items(status, message.get("headers") or ())
            message = message.copy()  # type: ignore[attr-defined]
            message["headers"] = headers
            if status == 500:
                # Held: if an exception follows, our problem response replaces
                # the framework's plain 500 (module theory, 2).
                return self._hold(message)
            self.started_response = True
        elif kind == "http.response.body":
            if not message.get("more_body", False):
                # _last() inline: every response ends here (a call costs more).
                self.ended = perf_counter()
                if self.deadline is not None:
                    self._disarm()
            if self.held is not None:
                return self._hold(message)
        else:
            if kind == "http.response.pathsend" or (
                kind == "http.response.zerocopy" and not message.get("more_body", False)
            ):
                self._last()  # the whole rest of the answer, as a final body chunk is
            if self.held is not None:
                return self._hold(message)
        return self.send_(message)

    def _last(self) -> None:
        """The app sent its last message: the answer is complete."""
        self.ended = perf_counter()
        if self.deadline is not None:
            # What the app does next (a background task) is not bounded by
            # the deadline.
            self._disarm()

    def _hold(self, message: Message) -> Awaitable[None]:
        held = self.held
        if held is None:
            held = self.held = _Held()
            # Out of the app's task: the timer fires only while the app waits
            # on something (a framework that re-raises right after its 500
            # does not wait), and sends what is held then.
            held.timer = asyncio.get_running_loop().call_later(
                HOLD_SECONDS, self._release_later, held
            )
        elif held.task is not None:
            # Already going out: this one follows them, in order.
            return self._send_after(held.task, message)
        held.messages.append(message)
        body = message.get("body")
        if body:
            held.size += len(body)
            if held.size > HOLD_BYTES:
                # Too much to keep: out now, in the app's own await.
                return self.release_held()
        return _nothing()

    def _release_later(self, held: _Held) -> None:
        held.timer = None
        if self.held is held:
            held.task = asyncio.get_running_loop().create_task(self._send_held(held))

    async def _send_held(self, held: _Held) -> None:
        held.sending = True
        self.started_response = True
        try:
            for message in held.messages:
                await self.send_(message)
        finally:
            if self.held is held:
                self.held = None

    async def _send_after(self, task: asyncio.Task[None], message: Message) -> None:
        await task
        await self.send_(message)

    async def settle_held(self) -> None:
        """Stop the hold's timer; finish sending what already began to go out.

        Afterwards either nothing of the 500 was sent (``held`` is kept:
        replace it or :meth:`release_held` it) or all of it was
        (``held`` is ``None``, the response started).
        """
        held = self.held
        if held is None:
            return
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        task = held.task
        if task is not None:
            if held.sending:
                # Part of it may be out: the rest follows, as it would have.
                with contextlib.suppress(Exception):
                    await task
                return
            task.cancel()  # not started: nothing went out
            held.task = None

    async def release_held(self) -> None:
        """Send what is held now: the app's own 500 goes out as it sent it."""
        await self.settle_held()
        held = self.held
        if held is None:
            return
        if held.timer is not None:
            held.timer.cancel()
        self.held = None
        self.started_response = True
        # Edited and timed as they were held.
        for message in held.messages:
            await self.send_(message)

    def drop_held(self) -> None:
        """Forget the hold (the request ends without it: cancelled, or replaced)."""
        held, self.held = self.held, None
        if held is not None:
            if held.timer is not None:
                held.timer.cancel()
            if held.task is not None:
                held.task.cancel()

    def _disarm(self) -> None:
        deadline, self.deadline = self.deadline, None
        # Past its end already (our own 504 going out), or left (the app
        # returned): nothing to disarm.
        with contextlib.suppress(RuntimeError):
            deadline.reschedule(None)

    async def send_own(self, respond: Respond) -> None:
        """Send a response of ours (a rejection or a 500), if none has started."""
        if self.held is not None:
            self.drop_held()
        self.status = respond.status
        self.ttfb = perf_counter()
        headers = [
            (b"content-type", respond.content_type.encode("latin-1")),
            (b"content-length", str(len(respond.body)).encode("latin-1")),
        ]
        for name, value in respond.headers:
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        self.started_response = True
        await self.send_(
            {
                "type": "http.response.start",
                "status": respond.status,
                "headers": self.head_items(respond.status, headers),
            }
        )
        # A HEAD answer has the headers of a GET's, and no body (RFC 9110, 9.3.2).
        body = b"" if self.view.method == "HEAD" else respond.body
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def app_receive(self) -> Receive:
        """The ``receive`` the app gets: replays what a layer read, counts if asked."""
        body = self.body
        receive = self.receive
        if body is not None and (body.data or body.tail is not None or body.complete):
            pending = iter(body.messages())
            original = receive

            async def replay() -> Message:
                message = next(pending, None)
                if message is not None:
                    return message
                return await original()

            receive = replay
            if body.complete:
                return receive
        limit = self.view.max_body
        if limit is not None:
            return _counting(receive, limit)
        return receive


mark_coroutine_function(_Cycle.send)


class ASGIMiddleware(Seawall):
    """Seawall as pure ASGI middleware (never ``BaseHTTPMiddleware``).

    Build it with :class:`~seawall.Seawall` (which picks this class for ASGI
    apps) or directly, with the same arguments.
    """

    interface = "asgi"

    #: Whether the app renders an unhandled exception itself, outside this
    #: middleware (a Starlette app's own ``Exception``/500 handler, which its
    #: ``ServerErrorMiddleware`` runs): then the layers see the exception
    #: (ErrorCapture logs and counts it) and it is raised on to that handler
    #: instead of being answered here. Set by adapters; ``None``: never.
    app_renders_errors: Callable[[Scope, BaseException], bool] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            elif scope["type"] == "lifespan":
                await self.app(scope, self._lifespan_receive(receive), send)
            else:
                await self.app(scope, receive, send)
            return

        started = perf_counter()
        self.in_flight += 1

        stack = self.stack
        view = asgi_view(RequestView, scope, self.resolver, started)
        key = self._rid_key
        incoming = None
        # ASGI header names are lower-case bytes. A loop: cheaper than
        # dict(headers).get(key) (measured: ~1k instructions a request less).
        for name, value in view._raw_headers:  # type: ignore[union-attr]
            if name == key:
                incoming = value
                break
        if incoming is None:
            # RequestIds.new inline: most requests bring no id of their own.
            rid = next(self.ids._ids)
        else:
            rid = self.ids.accept(incoming.decode("latin-1"))
        view.request_id = rid
        scope["seawall.request_id"] = rid
        # The cycle's slots are filled here, every one of them: a class call
        # with no __init__ (no Python frame) and no function call of our
        # own, on every request (callgrind: ~0.5k instructions fewer than
        # object.__new__ in a helper function).
        cycle = _Cycle()
        cycle.wall = self
        cycle.view = view
        cycle.scope = scope
        cycle.receive = receive
        cycle.send_ = send
        cycle.body = None
        cycle.depth = stack._depth
        cycle.status = None
        cycle.ttfb = None
        cycle.ended = None
        cycle.deadline = None
        cycle.started_response = False
        cycle.held = None
        cycle.exception = None
        cycle.responded_by = None
        cycle.timed_out = False
        # bind_request/unbind_request inline (two calls fewer per request).
        # The finally below runs in this coroutine's context, so the resets
        # cannot meet another context's tokens.
        holder: list[RequestView | None] = [view]
        current_token = set_current(holder)
        rid_token = set_structlog_request_id(rid)
        try:
            if stack._by_method[view.method]:
                respond, cycle.depth, flow = start_request(stack, view, cycle)
                if flow is not None:
                    respond, cycle.depth = await arun_request(
                        stack, view, cycle.body_io, start=cycle.depth, flow=flow, progress=cycle
                    )
                if respond is not None:
                    cycle.responded_by = stack.names[cycle.depth]
                    await cycle.send_own(respond)
                    return
            view.admitted = perf_counter()
            try:
                if view.deadline is None:
                    await self.app(
                        scope,
                        receive
                        if cycle.body is None and view.max_body is None
                        else cycle.app_receive(),
                        cycle.send,
                    )
                else:
                    await with_deadline(
                        self.app(scope, cycle.app_receive(), cycle.send), view.deadline, cycle
                    )
            except DeadlineExpired as exc:
                # Only our own deadline: an app's TimeoutError is an error like any other.
                assert view.deadline is not None
                cycle.timed_out = True
                cycle.exception = exc
                if cycle.held is not None:
                    await cycle.settle_held()
                if cycle.started_response:
                    raise
                await cycle.send_own(
                    Respond.from_rejection(
                        RequestTimeout(
                            f"The request took longer than {view.deadline:g} s.",
                            extensions={"timeout": view.deadline},
                        ),
                        instance=view.path,
                        request_id=rid,
                    )
                )
                return
            except Rejected as exc:
                cycle.exception = exc
                if cycle.held is not None:
                    await cycle.settle_held()
                if cycle.started_response:
                    raise
                await cycle.send_own(
                    Respond.from_rejection(exc, instance=view.path, request_id=rid)
                )
                return
            except Exception as exc:
                cycle.exception = exc
                if cycle.held is not None:
                    await cycle.settle_held()
                answer = stack.on_exception(view, exc, cycle.depth)
                if cycle.started_response:
                    raise
                renders = self.app_renders_errors
                if answer is None or (renders is not None and renders(scope, exc)):
                    if cycle.held is not None:
                        # No answer of ours: the app's own 500 (a custom error
                        # page, as ServerErrorMiddleware sends before it
                        # re-raises) goes out, as it would unwrapped.
                        await cycle.release_held()
                    raise
                await cycle.send_own(answer)
                return
            if cycle.held is not None:
                await cycle.release_held()
        finally:
            if cycle.held is not None:
                cycle.drop_held()
            try:
                complete = stack._complete
                # view.state: a handler may have asked for a callback (after_response).
                if complete or view.state:
                    template = view.route or route_of(scope)
                    end = cycle.ended
                    ttfb = cycle.ttfb
                    outcome = Outcome(
                        cycle.status,
                        cycle.exception,
                        (end or perf_counter()) - started,
                        None if ttfb is None else ttfb - started,
                        template or view.path,
                        cycle.responded_by,
                        cycle.started_response and end is None and cycle.exception is None,
                        cycle.timed_out,
                        template is not None,
                    )
                    # Stack.on_complete inline: one call fewer per request.
                    depth = cycle.depth
                    for index, hook in complete:
                        if index <= depth:
                            try:
                                hook(view, outcome)
                            except Exception as exc:
                                stack.layer_failed(index, "on_complete", exc)
                    if view.state:
                        stack.after_response(view, outcome)
            finally:
                holder[0] = None
                reset_current(current_token)
                reset_structlog_request_id(rid_token)
                self.in_flight -= 1

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # A server (or a test client) may run the app's lifespan
                # again after a shutdown: the wall admits requests again.
                self.draining = False
                self.stack.on_startup()
            elif message["type"] == "lifespan.shutdown":
                await self.drain(self.stack.on_shutdown())
                # Then the writes the last requests left running (count_when
                # counts, shared breaker states), before the app says it stopped.
                if not await background.drain(background.SHUTDOWN_GRACE):
                    logger.warning(
                        "seawall.shutdown.background_writes_left",
                        pending=background.pending(),
                        waited_s=background.SHUTDOWN_GRACE,
                    )
            return message

        return lifespan_receive

    async def drain(self, timeout: float) -> bool:
        """Stop admitting (``draining``) and wait up to *timeout* s for in-flight requests.

        Returns whether every request finished in time.
        """
        self.draining = True
        deadline = perf_counter() + timeout
        while self.in_flight > 0 and perf_counter() < deadline:
            await asyncio.sleep(0.01)
        return self.in_flight == 0

    @staticmethod
    async def _read_body(body: _Body, receive: Receive, limit: int, view: RequestView) -> Any:
        data = body.data
        while not body.complete and len(data) <= limit:
            message = await receive()
            if message["type"] != "http.request":
                body.tail = message  # http.disconnect: replayed to the app as is
                body.complete = True
                break
            chunk = message.get("body")
            if chunk:
                data += chunk
            if not message.get("more_body", False):
                body.complete = True
        if len(data) > limit:
            return None
        read = bytes(data)
        view.body = read
        return read

    @staticmethod
    def _replace_body(body: _Body, scope: Scope, effect: ReplaceBody) -> None:
        body.data = bytearray(effect.body)
        body.tail = None
        body.complete = True
        headers = [
            (k, v)
            for k, v in scope.get("headers", [])
            if k not in (b"content-length", b"transfer-encoding", b"content-encoding")
            and not (effect.content_type and k == b"content-type")
        ]
        headers.append((b"content-length", str(len(effect.body)).encode("latin-1")))
        if effect.content_type:
            headers.append((b"content-type", effect.content_type.encode("latin-1")))
        scope["headers"] = headers

    def _limit_messages(self, view: RequestView, receive: Receive, send: Send) -> tuple[Any, Any]:
        """Wrap a websocket's channels so ``on_websocket_message`` hooks see each client message.

        A refused message closes the connection (1008, so the client knows
        why) and reaches the app as ``websocket.disconnect``; whatever the
        app sends after that is dropped, since the socket is closed.
        """
        from seawall._run import arun_flow

        hooks = self.stack.message_hooks
        stack = self.stack
        closed = False

        async def limited_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] != "websocket.receive" or closed:
                return message
            for index, hook in hooks:
                try:
                    decision = hook(view)
                    if decision is not None and hasattr(decision, "send"):
                        decision = await arun_flow(decision)
                except Rejected as exc:
                    decision = exc
                except Exception as exc:
                    stack.layer_failed(index, "on_websocket_message", exc)
                    continue
                if isinstance(decision, Rejected):
                    closed = True
                    reason = _close_reason(decision)
                    await send({"type": "websocket.close", "code": 1008, "reason": reason})
                    return {"type": "websocket.disconnect", "code": 1008, "reason": reason}
            return message

        async def limited_send(message: Message) -> None:
            if not closed:
                await send(message)

        return limited_receive, limited_send

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        view = RequestView.from_asgi(scope, resolver=self.resolver, started=perf_counter())
        # The client's id when well-formed, as for HTTP: a gateway's id
        # follows the connection into its log lines.
        key = self._rid_key
        incoming = next((v for k, v in scope.get("headers") or () if k == key), None)
        view.request_id = self.ids.accept(None if incoming is None else incoming.decode("latin-1"))
        scope["seawall.request_id"] = view.request_id
        # Bound for the whole connection: handler limits (``seawall.limit``,
        # FastAPI's ``Depends(limit(...))``) and log lines find the request.
        tokens = bind_request(view)
        try:
            respond: Respond | None = None
            for index, hook in self.stack.websocket_hooks:
                try:
                    from seawall._run import arun_flow

                    decision = hook(view)
                    if (
                        decision is not None
                        and not isinstance(decision, Respond)
                        and hasattr(decision, "send")
                    ):
                        decision = await arun_flow(decision)
                    if isinstance(decision, Respond):
                        respond = decision
                        break
                except Rejected as exc:
                    respond = Respond.from_rejection(
                        exc, instance=view.path, request_id=view.request_id
                    )
                    break
                except Exception as exc:
                    self.stack.layer_failed(index, "on_request", exc)
            if respond is None:
                await self._websocket_app(view, scope, receive, send)
                return
            # The refusal answers the connect: read it first, as an app does.
            message = await receive()
            if message["type"] != "websocket.connect":
                return
            await self._deny(scope, send, respond, self._rid_key, view.request_id)
        finally:
            unbind_request(tokens)

    async def _websocket_app(
        self, view: RequestView, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # What answered the handshake, as an HTTP status: 101 once accepted,
        # 403 for a close before that, the denial response's own status.
        answered: list[int] = []
        # Whether the app read the connect, and whether the socket is closed
        # (by either side): a refusal answers the connect, and nothing may
        # follow a close.
        connected = False
        closed = False
        key, rid = self._rid_key, view.request_id

        async def watched_receive() -> Message:
            nonlocal connected, closed
            message = await receive()
            kind = message["type"]
            if kind == "websocket.connect":
                connected = True
            elif kind == "websocket.disconnect":
                closed = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal closed
            kind = message["type"]
            if not answered:
                if kind == "websocket.accept":
                    answered.append(101)
                    headers = list(message.get("headers") or ())
                    if all(name.lower() != key for name, _ in headers):
                        # Echoed on the handshake's answer, as on HTTP
                        # responses; in a copy of the app's message (it may
                        # reuse it for every connection).
                        headers.append((key, rid.encode()))
                        message = {**message, "headers": headers}
                elif kind == "websocket.close":
                    answered.append(403)
                elif kind == "websocket.http.response.start":
                    answered.append(int(message.get("status", 403)))
            if kind == "websocket.close":
                closed = True
            await send(message)

        app_receive, app_send = watched_receive, watched_send
        if self.stack.message_hooks:
            app_receive, app_send = self._limit_messages(view, watched_receive, watched_send)
        exception: BaseException | None = None
        try:
            await self.app(scope, app_receive, app_send)
        except Rejected as exc:
            # A handler's own limit (a FastAPI dependency, seawall.limit):
            # refuse the handshake as the layers do, or once open, close
            # with 1008 (policy violation), as the message limits do.
            exception = exc
            if answered:
                if answered[0] == 101 and not closed:
                    with contextlib.suppress(Exception):
                        await send(
                            {"type": "websocket.close", "code": 1008, "reason": _close_reason(exc)}
                        )
            elif connected or (await receive())["type"] == "websocket.connect":
                respond = Respond.from_rejection(
                    exc, instance=view.path, request_id=view.request_id
                )
                await self._deny(scope, send, respond, key, rid)
                answered.append(respond.status)
        except BaseException as exc:
            exception = exc
            raise
        finally:
            if view.state:
                # For the handler-level callbacks (count_when counts): the
                # handshake's answer is the status.
                template = route_of(scope)
                status = answered[0] if answered else (None if exception is None else 500)
                self.stack.after_response(
                    view,
                    Outcome(
                        status,
                        None if isinstance(exception, Rejected) else exception,
                        perf_counter() - view.started,
                        None,
                        template or view.path,
                        templated=template is not None,
                    ),
                )

    @staticmethod
    async def _deny(scope: Scope, send: Send, respond: Respond, key: bytes, rid: str) -> None:
        """Refuse a websocket handshake: *respond* itself, or a 1008 close (a 403).

        *key* and *rid*: the request id's header name and value, echoed.
        """
        if "websocket.http.response" in scope.get("extensions", {}):
            headers = [
                (b"content-type", respond.content_type.encode("latin-1")),
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in respond.headers),
                (key, rid.encode()),
            ]
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": respond.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": respond.body})
            return
        await send({"type": "websocket.close", "code": 1008, "reason": "rejected"})
