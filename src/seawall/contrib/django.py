"""Django: one middleware, sync and async, over the same engine as the drivers.

::

    # settings.py
    MIDDLEWARE = ["seawall.django.SeawallMiddleware", ...]   # first, or near it
    SEAWALL = {"timing": True, "error_capture": True, "rate_limit": "100/minute"}

    # views.py
    from seawall.django import limit

    @limit("5/minute")
    async def login(request): ...

Theory of operation:

1. Django builds the middleware once per handler and tells it whether the
   next handler is async. The instance then runs in that mode only
   (``markcoroutinefunction`` when async), so neither a WSGI nor an ASGI
   deployment pays a sync/async switch.
2. ``SEAWALL`` is read and validated when the middleware is built (the
   first request, or ``get_wsgi_application()``/``get_asgi_application()``):
   a bad key raises ``ImproperlyConfigured`` naming it.
3. The request phase is the drivers' own: a :class:`~seawall.RequestView`
   built from the ASGI scope (ASGI deployments) or ``request.META`` (WSGI),
   then ``run_request``/``arun_request`` over the stack. A :class:`Respond`
   becomes an ``HttpResponse``; otherwise the view runs with the request
   bound (``seawall.current_request()``, ``request_id`` in every structlog
   line). Body effects read ``request.body`` (Django has buffered it).
4. View exceptions reach ``process_exception``: Django's own (``Http404``,
   ``PermissionDenied``, ``SuspiciousOperation``, ``BadRequest``) are left to
   Django; a ``Rejected`` becomes its problem+json; anything else goes to the
   layers (ErrorCapture answers the problem+json 500).
5. The layers' header edits apply to the response on the way out; the
   outcome (with ``request.resolver_match.route`` as the route) is given to
   ``on_complete`` when the response is built, or when a streaming response
   is closed.
"""

from __future__ import annotations

import functools
import io
import re
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any, Literal, TypeVar

from seawall.contrib import missing_extra

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.exceptions import (  # type: ignore[import-untyped]
        BadRequest,
        ImproperlyConfigured,
        PermissionDenied,
        RequestDataTooBig,
        SuspiciousOperation,
    )
    from django.http import (  # type: ignore[import-untyped]
        Http404,
        HttpRequest,
        HttpResponse,
        HttpResponseBase,
    )
    from django.http.multipartparser import MultiPartParserError  # type: ignore[import-untyped]
    from django.http.response import ResponseHeaders  # type: ignore[import-untyped]
    from django.urls import (  # type: ignore[import-untyped]
        Resolver404,
        get_resolver,
        resolve,
    )
except ModuleNotFoundError as exc:  # the framework's extra is not installed
    raise missing_extra("seawall.django", "django", exc) from exc

from seawall._app import Seawall
from seawall._core.decisions import ReadBody, ReplaceBody, Respond
from seawall._core.layer import Outcome, ResponseHead
from seawall._core.request import RequestView, wsgi_view
from seawall._log import bind_request, current_request, unbind_request
from seawall._run import arun_request, run_request, start_request
from seawall.asgi import BodyTooLarge, DeadlineExpired, with_deadline
from seawall.contrib import Walls, settings_kwargs
from seawall.exceptions import ConfigurationError, Rejected, RequestTimeout
from seawall.handlers import OVERRIDE_ATTR, exempt, view_mark, view_marks
from seawall.wsgi import _CountingInput

__all__ = [
    "DjangoWall",
    "SeawallMiddleware",
    "breaker",
    "exempt",
    "get_wall",
    "limit",
    "validate",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_DJANGO_OWN = (Http404, PermissionDenied, SuspiciousOperation, BadRequest, MultiPartParserError)
_STATE = "_seawall"


class DjangoWall(Seawall):
    """The engine state of one :class:`SeawallMiddleware`: stack, client resolver, ids.

    Not callable as an app: the middleware drives it.
    """

    _twin_fields = (*Seawall._twin_fields, "interface")

    def __init__(self, app: Any, interface: Literal["asgi", "wsgi"], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.interface = interface


def _settings() -> dict[str, Any]:
    data = getattr(settings, "SEAWALL", None)
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"SEAWALL: expected a dict of settings, got {type(data).__name__}"
        raise ImproperlyConfigured(msg)
    return dict(data)


def build_wall(get_response: Any, interface: Literal["asgi", "wsgi"]) -> DjangoWall:
    """Build the wall from ``settings.SEAWALL``; raise ``ImproperlyConfigured`` naming a bad key."""
    data = _settings()
    layers = data.pop("layers", None)
    data.pop("interface", None)
    if layers is not None and not isinstance(layers, (list, tuple)):
        msg = f"SEAWALL: layers: expected a list of layer objects, got {type(layers).__name__}"
        raise ImproperlyConfigured(msg)
    try:
        return DjangoWall(get_response, interface, **settings_kwargs(data, layers=layers))
    except ConfigurationError as exc:
        msg = f"SEAWALL: {exc}"
        raise ImproperlyConfigured(msg) from None


_last_wall: weakref.ref[DjangoWall] | None = None

#: Callbacks run on every wall built while they are here, before the exempt
#: twin is made: ``seawall.testing.override(SeawallMiddleware, ...)`` adds
#: one, so the walls Django's test clients build during the block get it too.
build_hooks: list[Callable[[DjangoWall], None]] = []


def get_wall() -> DjangoWall:
    """The wall of the most recently built :class:`SeawallMiddleware`.

    Django builds the middleware once per handler (once per process in
    production; once per test client in tests), so this is the process's
    wall: ``get_wall().stats()``, or ``seawall.testing.override(get_wall(), ...)``.

    Raises:
        LookupError: no ``SeawallMiddleware`` was built yet.
    """
    wall = None if _last_wall is None else _last_wall()
    if wall is None:
        msg = "no SeawallMiddleware built yet: is it in settings.MIDDLEWARE?"
        raise LookupError(msg)
    return wall


class _State:
    """One request's bookkeeping, kept on the request for ``process_exception``."""

    __slots__ = (
        "depth",
        "exception",
        "finished",
        "responded_by",
        "status",
        "timed_out",
        "tokens",
        "ttfb",
        "view",
        "wall",
    )

    def __init__(self, wall: Seawall, view: RequestView, tokens: Any) -> None:
        self.wall = wall
        self.view = view
        self.tokens = tokens
        # stack._depth, not the all_depth property: hot path.
        self.depth = wall.stack._depth
        self.exception: BaseException | None = None
        self.responded_by: str | None = None
        self.status: int | None = None
        self.ttfb: float | None = None
        self.timed_out = False
        self.finished = False


def _get_header(response: HttpResponseBase, lname: str) -> str | None:
    value = response.headers.get(lname)
    return None if value is None else str(value)


def _store_layout_known() -> bool:
    """Whether ``ResponseHeaders`` keeps ``_store[lower name] = (name, value)`` (since 3.2)."""
    probe = ResponseHeaders({})
    probe["X-Probe"] = "1"
    return getattr(probe, "_store", None) == {"x-probe": ("X-Probe", "1")}


#: Whether :func:`_write_headers` may store plain lines itself (checked once,
#: so a Django that keeps its headers otherwise only ever gets the public path).
_DIRECT = _store_layout_known()


def _write_headers(
    headers: Any,
    removed: Any,
    added: list[tuple[str, str]],
    rid_name: str,
    rid_lower: str,
    rid: str,
) -> None:
    """Apply the layers' edits to Django's *headers*, then echo the request id.

    Django keeps one value per name: a second line of a name folds into
    ``"old, new"``. The request id is echoed only if no line carries one
    already (the view's own, else the first a layer added), as the ASGI and
    WSGI drivers do: one id, never two folded. ``ResponseHeaders.__setitem__`` checks every name
    and value (an ASCII name, a latin-1 value, no CR or LF; it MIME-encodes
    other text) in three calls per line: a ``str`` line that is ASCII
    without CR or LF passes those checks unchanged, so it is stored here as
    ``__setitem__`` would store it. Every other line goes through Django.
    """
    if not _DIRECT or type(headers) is not ResponseHeaders:
        _write_headers_checked(headers, removed, added, rid_name, rid_lower, rid)
        return
    store = headers._store
    for name in removed:
        store.pop(name.lower(), None)
    for name, value in added:
        if type(name) is str and type(value) is str:
            lname = name.lower()
            if lname == rid_lower and lname in store:
                continue
            old = store.get(lname)
            if old is not None:
                value = f"{old[1]}, {value}"
            line = name + value
            if line.isascii() and "\n" not in line and "\r" not in line:
                store[lname] = (name, value)
            else:
                headers[name] = value
        else:
            old = headers.get(name)
            headers[name] = value if old is None else f"{old}, {value}"
    if rid_lower not in store:
        line = rid_name + rid
        if line.isascii() and "\n" not in line and "\r" not in line:
            store[rid_lower] = (rid_name, rid)
        else:
            headers[rid_name] = rid


def _write_headers_checked(
    headers: Any,
    removed: Any,
    added: list[tuple[str, str]],
    rid_name: str,
    rid_lower: str,
    rid: str,
) -> None:
    """:func:`_write_headers` through the public mapping interface only."""
    for name in removed:
        if name in headers:
            del headers[name]
    for name, value in added:
        if type(name) is str and name.lower() == rid_lower and rid_name in headers:
            continue
        old = headers.get(name)
        headers[name] = value if old is None else f"{old}, {value}"
    if rid_name not in headers:
        headers[rid_name] = rid


def _to_response(respond: Respond) -> HttpResponse:
    response = HttpResponse(respond.body, status=respond.status, content_type=respond.content_type)
    for name, value in respond.headers:
        response.headers[name] = value
    return response


def _read_body(request: HttpRequest, view: RequestView, limit: int) -> bytes | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > limit:
        return None
    try:
        data: bytes = request.body  # Django buffers it and replays it to request.read()
    except RequestDataTooBig:
        # Django's own cap, not the layer's: name it, or raising max_body
        # would look like the fix.
        cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = BodyTooLarge(cap)
        exc.detail = (
            f"The request body is larger than {cap} bytes (Django's DATA_UPLOAD_MAX_MEMORY_SIZE)."
        )
        raise exc from None
    if len(data) > limit:
        return None
    view.body = data
    return data


def _body_effect(request: HttpRequest, view: RequestView, effect: Any) -> Any:
    """Run a layer's body effect on the request (``functools.partial``-bound per request)."""
    if isinstance(effect, ReadBody):
        return _read_body(request, view, effect.limit)
    if isinstance(effect, ReplaceBody):
        _replace_body(request, view, effect)
        return None
    raise TypeError(type(effect).__name__)  # pragma: no cover


def _replace_body(request: HttpRequest, view: RequestView, effect: ReplaceBody) -> None:
    body = effect.body
    request._body = body
    request._stream = io.BytesIO(body)
    request._read_started = False
    for attr in ("_post", "_files"):
        if hasattr(request, attr):
            delattr(request, attr)
    request.META["CONTENT_LENGTH"] = str(len(body))
    request.META.pop("HTTP_CONTENT_ENCODING", None)
    if effect.content_type:
        request.META["CONTENT_TYPE"] = effect.content_type
        request.content_type = effect.content_type.split(";", 1)[0].strip()
    view.body = body


class SeawallMiddleware:
    """The seawall layers as Django middleware, sync- and async-capable.

    Add it to ``MIDDLEWARE`` (first, so it sees every request and its
    timing covers the other middleware) and configure it with a ``SEAWALL``
    dict in the :func:`seawall.config.load_config` schema, or
    ``SEAWALL = {"layers": [...]}`` with layer objects.

    Raises:
        django.core.exceptions.ImproperlyConfigured: ``SEAWALL`` has an
            unknown or ill-typed key (the message names it).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            # Django then calls us with await: no thread hop on either side.
            markcoroutinefunction(self)
        self.wall = build_wall(get_response, "asgi" if self.async_mode else "wsgi")
        for hook in list(build_hooks):
            hook(self.wall)
        global _last_wall
        _last_wall = weakref.ref(self.wall)
        self._walls = Walls(self.wall)
        self._marked_views: dict[Any, bool] = {}

    def __repr__(self) -> str:
        mode = "async" if self.async_mode else "sync"
        return f"<seawall.django.SeawallMiddleware {mode} {self.wall!r}>"

    # -- shared steps ----------------------------------------------------------

    def _pick(self, request: HttpRequest) -> Seawall:
        """The twin a marked view is served by (exempt, override_defaults), else the wall."""
        # The URLconf Django resolves the view with (BaseHandler.resolve_request).
        urlconf = getattr(request, "urlconf", None) or settings.ROOT_URLCONF
        has = self._marked_views.get(urlconf)
        if has is None:
            # Only URLconfs with a marked view pay for resolving early.
            has = _any_marked(get_resolver(urlconf).url_patterns)
            self._marked_views[urlconf] = has
        if not has:
            return self.wall
        try:
            match = _resolve(request.path_info, urlconf)
        except Resolver404:
            return self.wall
        return self._walls.for_mark(view_mark(match.func, request.method))  # type: ignore[no-any-return]

    def _begin(self, request: HttpRequest, wall: Seawall) -> _State:
        started = perf_counter()
        # META has the same keys under WSGI and ASGI (Django fills it from the
        # scope), and is well-formed even where a test client's scope is not.
        meta = request.META
        # wsgi_view, not the from_wsgi classmethod: a plain call by position.
        view = wsgi_view(RequestView, meta, wall.resolver, started)
        view.interface = wall.interface
        rid = wall.ids.accept(meta.get(wall._rid_environ))
        view.request_id = rid
        meta["seawall.request_id"] = rid
        state = _State(wall, view, bind_request(view))
        request._seawall = state  # _STATE, read by process_exception
        return state

    def _admit(self, request: HttpRequest, state: _State, limit: int) -> HttpResponse | None:
        """Arm the body limit *limit* a layer asked for; answer 413 now if Content-Length says so.

        Called only when a layer set ``view.max_body`` and none read the body.
        """
        try:
            length = int(request.META.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length > limit:
            exc = BodyTooLarge(limit)
            state.exception = exc
            return self._rejection(request, state, exc)
        stream = getattr(request, "_stream", None)
        if stream is not None:
            request._stream = _CountingInput(stream, limit)
        return None

    @staticmethod
    def _rejection(request: HttpRequest, state: _State, exc: Rejected) -> HttpResponse:
        return _to_response(
            Respond.from_rejection(exc, instance=state.view.path, request_id=state.view.request_id)
        )

    def _finish_head(self, state: _State, response: HttpResponseBase) -> None:
        wall = state.wall
        view = state.view
        stack = wall.stack
        status = response.status_code
        extra = view.response_headers
        # stack._response, not the has_response_hooks property: hot path.
        if extra or stack._response:
            head = ResponseHead(status, response, _get_header)
            if extra:
                head.added.extend(extra)
            stack.on_response(view, head, state.depth)
            removed: Any = head.removed
            added = head.added
        else:
            removed = added = ()  # type: ignore[assignment]
        if stack._adders:
            lines = stack.add_headers(view, status, state.depth)
            added = [*added, *lines] if added else lines
        _write_headers(
            response.headers, removed, added, wall._rid_header, wall._rid_lower, view.request_id
        )
        state.status = status
        state.ttfb = perf_counter()

    @staticmethod
    def _complete(request: HttpRequest, state: _State, response: Any = None) -> None:
        """Give the layers the outcome: now, or at the close of a streaming *response*."""
        if getattr(response, "streaming", False):
            # The real end of a streaming response is its close() (WSGI and ASGI).
            response._resource_closers.append(lambda: SeawallMiddleware._complete(request, state))
            return
        if state.finished:
            return
        state.finished = True
        stack = state.wall.stack
        view = state.view
        if not stack._complete and not view.state:
            return
        route = getattr(getattr(request, "resolver_match", None), "route", None)
        if route:
            view.route = _TEMPLATES.get(route) or _template(route)
        now = perf_counter()
        deadline = view.deadline
        outcome = Outcome(
            state.status,
            state.exception,
            now - view.started,
            None if state.ttfb is None else state.ttfb - view.started,
            view.route or view.path,
            state.responded_by,
            False,
            state.timed_out or (deadline is not None and now - view.admitted > deadline),
            view.route is not None,
        )
        stack.on_complete(view, outcome, state.depth)
        if view.state:
            stack.after_response(view, outcome)

    # -- sync ------------------------------------------------------------------

    def __call__(self, request: HttpRequest) -> Any:
        """Serve one request (a coroutine when the middleware is in async mode)."""
        if self.async_mode:
            return self._acall(request)
        walls = self._walls
        if walls.source is not walls.wall.stack:
            walls.refresh()
        wall = self._pick(request) if walls.differ else self.wall
        stack = wall.stack
        state = self._begin(request, wall)
        view = state.view
        response: Any = None
        try:
            body_io = functools.partial(_body_effect, request, view)
            respond, depth = run_request(stack, view, body_io)
            state.depth = depth
            if respond is not None:
                state.responded_by = stack.names[depth]
                response = _to_response(respond)
            else:
                view.admitted = perf_counter()
                if view.max_body is not None and view.body is None:
                    response = self._admit(request, state, view.max_body)
                if response is None:
                    # A local: 3.11 cannot specialise a method load of an
                    # instance attribute, a plain attribute load it can.
                    get_response = self.get_response
                    response = get_response(request)
            self._finish_head(state, response)
        except BaseException as exc:
            state.exception = state.exception or exc
            response = None
            raise
        finally:
            try:
                self._complete(request, state, response)
            finally:
                _unbind_at_end(state, response)
        return response

    # -- async -----------------------------------------------------------------

    async def _acall(self, request: HttpRequest) -> Any:
        walls = self._walls
        if walls.source is not walls.wall.stack:
            walls.refresh()
        wall = self._pick(request) if walls.differ else self.wall
        stack = wall.stack
        state = self._begin(request, wall)
        view = state.view
        response: Any = None
        try:
            # The hooks run synchronously until one needs I/O: most requests
            # need none, and are spared the coroutine arun_request would be.
            respond, depth, flow = start_request(stack, view)
            if flow is not None:
                sync_io = functools.partial(_body_effect, request, view)

                async def body_io(effect: Any) -> Any:
                    # Django's ASGI handler has spooled the body already: no await needed.
                    return sync_io(effect)

                respond, depth = await arun_request(stack, view, body_io, start=depth, flow=flow)
            state.depth = depth
            if respond is not None:
                state.responded_by = stack.names[depth]
                response = _to_response(respond)
            else:
                view.admitted = perf_counter()
                if view.max_body is not None and view.body is None:
                    response = self._admit(request, state, view.max_body)
                if response is None:
                    if view.deadline is None:
                        response = await self.get_response(request)
                    else:
                        response = await self._with_deadline(request, state, view.deadline)
            self._finish_head(state, response)
        except BaseException as exc:
            state.exception = state.exception or exc
            response = None
            raise
        finally:
            try:
                self._complete(request, state, response)
            finally:
                _unbind_at_end(state, response)
        return response

    async def _with_deadline(self, request: HttpRequest, state: _State, seconds: float) -> Any:
        try:
            return await with_deadline(self.get_response(request), seconds)
        except DeadlineExpired as exc:
            state.timed_out = True
            state.exception = exc
            return self._rejection(
                request,
                state,
                RequestTimeout(
                    f"The request took longer than {seconds:g} s.",
                    extensions={"timeout": seconds},
                ),
            )

    # -- exceptions --------------------------------------------------------------

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        """Render ``Rejected``; other view exceptions go to ErrorCapture (not Django's own)."""
        state: _State | None = getattr(request, _STATE, None)
        if state is None or isinstance(exception, _DJANGO_OWN):
            return None
        state.exception = exception
        if isinstance(exception, Rejected):
            return self._rejection(request, state, exception)
        answer = state.wall.stack.on_exception(state.view, exception, state.depth)
        if answer is None or settings.DEBUG or _own_handler500(request):
            # Logged; Django's technical 500 page stays in DEBUG, and a
            # project's own handler500 (its branded page) renders the 500.
            return None
        # Django sends this when it handles the exception itself; answering
        # for it, so must we: Sentry's integration, ADMINS mails and the test
        # client's re-raise listen to it.
        from django.core.signals import got_request_exception  # type: ignore[import-untyped]

        got_request_exception.send(sender=None, request=request)
        return _to_response(answer)


def _resolve(path: str, urlconf: Any) -> Any:
    """``resolve(path)`` in the language of the path's prefix (``i18n_patterns``).

    seawall resolves before ``LocaleMiddleware`` activates the request's
    language, and a language prefix only matches the active language: with
    the thread's last language active, ``/fr/...`` did not resolve for an
    English one, so an exempt view there got the whole wall.
    """
    if settings.USE_I18N:
        from django.utils import translation  # type: ignore[import-untyped]

        language = translation.get_language_from_path(path)
        if language:
            with translation.override(language):
                return resolve(path, urlconf)
    return resolve(path, urlconf)


def _unbind_at_end(state: _State, response: Any) -> None:
    """Unbind the request, and bind it again while a streaming *response* makes each chunk.

    Django produces a streaming body after the middleware returned: the
    view's generator then logs with the request id bound, and
    ``seawall.request_id()`` answers there, as on the other adapters. Bound
    per chunk, so nothing stays bound if the body is never read to its end
    or closed (a test client's response left aside). A file sent with
    ``wsgi.file_wrapper`` is left as it is: no view code runs there.
    """
    unbind_request(state.tokens)
    if not getattr(response, "streaming", False) or getattr(response, "file_to_stream", None):
        return
    view = state.view
    if getattr(response, "is_async", False):
        response.streaming_content = _abound(view, response.streaming_content)
    else:
        response.streaming_content = _bound(view, response.streaming_content)


def _bound(view: RequestView, chunks: Any) -> Any:
    iterator = iter(chunks)
    while True:
        tokens = bind_request(view)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        finally:
            unbind_request(tokens)
        yield chunk


async def _abound(view: RequestView, chunks: Any) -> Any:
    iterator = aiter(chunks)
    while True:
        tokens = bind_request(view)
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        finally:
            unbind_request(tokens)
        yield chunk


def _own_handler500(request: HttpRequest) -> bool:
    """Whether the URLconf serving *request* sets its own ``handler500``."""
    from django.urls import get_resolver

    urlconf = getattr(request, "urlconf", None) or settings.ROOT_URLCONF
    handler = getattr(get_resolver(urlconf).urlconf_module, "handler500", None)
    return handler is not None


def _any_marked(patterns: Any) -> bool:
    for pattern in patterns:
        inner = getattr(pattern, "url_patterns", None)
        if inner is not None:
            if _any_marked(inner):
                return True
        else:
            if view_marks(getattr(pattern, "callback", None)):
                return True
    return False


# -- decorators ----------------------------------------------------------------


def _set_route(request: Any) -> None:
    view = current_request()
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if view is not None and route:
        view.route = _TEMPLATES.get(route) or _template(route)


#: Django route -> template, per pattern of the URLconf (bounded all the same).
_TEMPLATES: dict[str, str] = {}
_REGEX_MARKS = ("^", "$", "(", "\\", "[")


def _template(route: str) -> str:
    """The template of a Django route: ``/items/<int:pk>/``, from ``re_path`` routes too.

    A ``re_path`` route is its regular expression (``^items/(?P<pk>[0-9]+)/$``,
    joined to an ``include()``'s), which no path matches as a template: a
    per-route breaker never learnt it, and each id got a breaker of its own.
    Its named groups become ``<name>``, other groups ``<_>``, its anchors go
    and escaped characters stand for themselves.
    """
    template = _from_regex(route) if any(mark in route for mark in _REGEX_MARKS) else route
    if not template.startswith("/"):
        template = "/" + template
    if len(_TEMPLATES) < 10_000:
        _TEMPLATES[route] = template
    return template


def _from_regex(route: str) -> str:
    out: list[str] = []
    i, n = 0, len(route)
    while i < n:
        char = route[i]
        if char == "\\" and i + 1 < n:
            out.append(route[i + 1])
            i += 2
        elif char in "^$":
            i += 1
        elif char == "(":
            end = _group_end(route, i)
            name = re.match(r"\(\?P<(\w+)>", route[i:end])
            out.append(f"<{name.group(1)}>" if name else "<_>")
            i = end
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _group_end(route: str, start: int) -> int:
    """The index just past the group opening at *start* (nesting, escapes and classes heeded)."""
    depth, i, in_class = 0, start, False
    while i < len(route):
        char = route[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(route)


def _render(request: Any, exc: Rejected) -> HttpResponse:
    view = current_request()
    return _to_response(
        Respond.from_rejection(
            exc,
            instance=getattr(request, "path", None),
            request_id=None if view is None else view.request_id,
        )
    )


_METHOD_DECORATOR_DUMMY = "_update_method_wrapper.<locals>.dummy"


def _named_after(function: Any, owner: type) -> Any:
    """*function*, named ``owner.function``: decorating a class guards ``View.dispatch``.

    Handler decorators name their state (a rate-limit bucket, an unnamed
    breaker) after the function they guard; two classes decorated whole
    would otherwise share the name ``View.dispatch`` (one Redis bucket).
    """
    if iscoroutinefunction(function):

        async def async_named(*args: Any, **kwargs: Any) -> Any:
            return await function(*args, **kwargs)

        named: Any = async_named
    else:

        def sync_named(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

        named = sync_named
    functools.update_wrapper(named, function)
    named.__module__ = owner.__module__
    named.__qualname__ = f"{owner.__qualname__}.{function.__name__}"
    return named


def _view_is_async(owner: type) -> bool:
    """Whether a class-based view's handlers are async (Django's ``View.view_is_async``)."""
    try:
        return bool(getattr(owner, "view_is_async", False))
    except ImproperlyConfigured:
        return False  # mixed sync and async handlers: Django refuses the view itself


def _awaiting(function: Callable[..., Any]) -> Callable[..., Any]:
    """*function* (returning a coroutine) as a coroutine function awaiting it."""

    async def awaiting(*args: Any, **kwargs: Any) -> Any:
        return await function(*args, **kwargs)

    functools.update_wrapper(awaiting, function)
    return awaiting


def _django_decorator(decorator: Callable[[Any], Any]) -> Callable[[_F], _F]:
    """Adapt a handler decorator to Django views: functions, classes, ``method_decorator``."""
    guarded_methods: dict[Any, Any] = {}

    def apply(view: Any) -> Any:
        overrides = getattr(decorator, "override_defaults", False) is True
        if getattr(view, "__qualname__", "").endswith(_METHOD_DECORATOR_DUMMY):
            # method_decorator decorates a dummy once, only to copy the
            # decorator's attributes: guarding it would name the bucket (or
            # an unnamed breaker) after the dummy, one name shared by every
            # method so decorated (one bucket in Redis for all of them).
            view.__seawall_handlers__ = [decorator]
            if overrides:
                setattr(view, OVERRIDE_ATTR, True)
            return view
        if isinstance(view, type):
            from django.utils.decorators import (  # type: ignore[import-untyped]
                method_decorator,
            )

            guarded_class = method_decorator(apply, name="dispatch")(view)
            guarded_class.__seawall_handlers__ = [
                *guarded_class.__dict__.get("__seawall_handlers__", ()),
                decorator,
            ]
            if overrides:
                setattr(guarded_class, OVERRIDE_ATTR, True)
            return guarded_class
        bound = getattr(view, "func", None)
        function = getattr(bound, "__func__", None)
        is_async = iscoroutinefunction(view)
        if function is not None:
            owner = type(bound.__self__)  # type: ignore[union-attr]
            # A class of async handlers has a sync dispatch() that returns
            # their coroutine: guard it as the async function it is.
            is_async = is_async or (not iscoroutinefunction(function) and _view_is_async(owner))
            # method_decorator builds partial(bound method) on every request:
            # guard the underlying function once, so its state persists.
            guarded = guarded_methods.get(function)
            if guarded is None:
                source = _awaiting(function) if is_async else function
                named = _named_after(source, owner)
                guarded = guarded_methods.setdefault(function, decorator(named))
            target: Any = functools.partial(guarded, bound.__self__)  # type: ignore[union-attr]
        else:
            target = decorator(view)
        if is_async:

            async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                _set_route(request)
                try:
                    return await target(request, *args, **kwargs)
                except Rejected as exc:
                    return _render(request, exc)

            wrapper: Any = async_wrapper
        else:

            def sync_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                _set_route(request)
                try:
                    return target(request, *args, **kwargs)
                except Rejected as exc:
                    return _render(request, exc)

            wrapper = sync_wrapper
        with_name = getattr(view, "func", view)
        functools.update_wrapper(wrapper, with_name)
        # update_wrapper points __wrapped__ at the view, past the guard:
        # keep the guards findable (seawall.testing.reset resets their limits).
        wrapper.__seawall_handlers__ = [*getattr(view, "__seawall_handlers__", ()), decorator]
        if overrides:
            setattr(wrapper, OVERRIDE_ATTR, True)
        return wrapper

    return apply


def limit(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    """Rate-limit a view (function, class or ``method_decorator``), sync or async.

    Takes the arguments of ``seawall.limit``; a refusal is a 429 problem+json.
    """
    from seawall.layers.ratelimit import limit as handler_limit

    return _django_decorator(handler_limit(*args, **kwargs))


def breaker(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    """Put a view behind a circuit breaker (``seawall.breaker`` arguments); open: 503."""
    from seawall.layers.breaker import breaker as handler_breaker

    return _django_decorator(handler_breaker(*args, **kwargs))


def validate(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    """Validate a view's requests (``seawall.validate`` arguments); refusals are problem+json."""
    from seawall.layers.validation import validate as handler_validate

    return _django_decorator(handler_validate(*args, **kwargs))
