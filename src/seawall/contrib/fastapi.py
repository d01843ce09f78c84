"""FastAPI and Starlette: ``from seawall.fastapi import SeawallMiddleware, limit``.

::

    app.add_middleware(SeawallMiddleware, timing=True, error_capture=True,
                       rate_limit="100/minute")

    @app.post("/login", dependencies=[Depends(limit("5/minute"))])
    async def login(): ...

    document(app)      # the 429/503/413/415/422 problem responses in OpenAPI

Theory of operation:

1. :class:`SeawallMiddleware` is pure ASGI: it builds the same ASGI driver
   ``seawall.Seawall`` does, from explicit keyword arguments (one per config
   key, so Starlette's ParamSpec-typed ``add_middleware`` checks them).
2. Starlette orders middleware as ``ServerErrorMiddleware -> user middleware
   -> ExceptionMiddleware -> router``, so the exception handlers an app
   registers run before the wall sees an exception: a ``Rejected`` (from a
   dependency or a decorator) the app handles stays the app's; one it does
   not handle reaches the driver, which renders it as problem+json.
3. Exempt endpoints are found before the layers run by matching the app's
   routes in order (the first full match decides), only when some
   endpoint is marked exempt.
4. The dependencies (:func:`limit`, :func:`breaker`, :func:`validate`) take the
   ``Request`` themselves, so endpoints need no ``request`` parameter; they
   set the request's route template (``/items/{id}``) before the check, and
   route-level limits key by the matched route (its methods and template),
   not by raw path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

from seawall.contrib import missing_extra

try:
    from starlette.requests import HTTPConnection, Request
    from starlette.routing import compile_path
except ModuleNotFoundError as exc:  # the framework's extra is not installed
    raise missing_extra("seawall.fastapi", "fastapi", exc) from exc

from seawall._log import current_request
from seawall.asgi import (
    ASGIApp,
    ASGIMiddleware,
    Receive,
    Scope,
    Send,
    mark_coroutine_function,
    mounted,
    prefixed_template,
    walk_routes,
)
from seawall.config import LAYER_KEYS
from seawall.contrib import Walls, settings_kwargs
from seawall.exceptions import ConfigurationError
from seawall.handlers import OVERRIDE_ATTR, is_exempt, mark_of
from seawall.layers import recommended_layers

__all__ = [
    "SeawallMiddleware",
    "breaker",
    "document",
    "limit",
    "problem_responses",
    "validate",
]

_STATUSES_ATTR = "__seawall_statuses__"

#: The problem statuses each layer (by config key or layer name) may answer.
LAYER_STATUSES: dict[str, tuple[int, ...]] = {
    "error_capture": (500,),
    "errors": (500,),
    "load_shedding": (503,),
    "shedding": (503,),
    "concurrency": (503,),
    "rate_limit": (429,),
    "ratelimit": (429,),
    "validation": (400, 413, 415, 422),
    "circuit_breaker": (503,),
    "breaker": (503,),
    "timeout": (504,),
}

_TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}


def _app_renders_errors(scope: Scope, exc: BaseException) -> bool:
    """Whether the app registered a handler for unhandled errors (``Exception`` or 500)."""
    handlers = getattr(scope.get("app"), "exception_handlers", None)
    if not handlers:
        return False
    return 500 in handlers or any(
        isinstance(key, type) and isinstance(exc, key) for key in handlers
    )


def _settings_of(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The settings dict :class:`SeawallMiddleware`'s keywords (but *layers*) make."""
    data = dict(keywords.get("config") or {})
    for key, value in keywords.items():
        if key in ("config", "layers") or value is None:
            continue
        data[key] = list(value) if key == "trusted_proxies" else value
    return data


class SeawallMiddleware:
    """The seawall layers as Starlette/FastAPI middleware (pure ASGI).

    Every keyword is a key of the :func:`seawall.config.load_config` schema:
    a layer key takes a table (``dict``), its shorthand (``rate_limit="100/minute"``),
    ``True`` (defaults) or ``False`` (left out). As with every settings
    source, only the layers named are used; with none named, the
    recommended layers. *layers* takes layer objects instead, and *config*
    a whole settings dict (the keywords override it).

    Raises:
        seawall.ConfigurationError: a setting is unknown or ill-typed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        layers: Iterable[object] | None = None,
        config: Mapping[str, Any] | None = None,
        timing: Any = None,
        error_capture: Any = None,
        health: Any = None,
        metrics: Any = None,
        dashboard: Any = None,
        load_shedding: Any = None,
        concurrency: Any = None,
        rate_limit: Any = None,
        validation: Any = None,
        circuit_breaker: Any = None,
        timeout: Any = None,
        trusted_proxies: Iterable[str] | None = None,
        trusted_hops: int | None = None,
        ipv6_prefix: int | None = None,
        request_id_header: str | None = None,
        order: Literal["canonical", "as given"] | None = None,
        on_layer_error: Literal["continue", "raise"] | None = None,
        **others: Any,
    ) -> None:
        data = _settings_of(
            {
                "config": config,
                "timing": timing,
                "error_capture": error_capture,
                "health": health,
                "metrics": metrics,
                "dashboard": dashboard,
                "load_shedding": load_shedding,
                "concurrency": concurrency,
                "rate_limit": rate_limit,
                "validation": validation,
                "circuit_breaker": circuit_breaker,
                "timeout": timeout,
                "trusted_proxies": trusted_proxies,
                "trusted_hops": trusted_hops,
                "ipv6_prefix": ipv6_prefix,
                "request_id_header": request_id_header,
                "order": order,
                "on_layer_error": on_layer_error,
                # Any other keyword goes to the settings check, which names a
                # misspelt one and lists the known settings (a TypeError would not).
                **others,
            }
        )
        data.pop("interface", None)
        self.app = app
        self._wall = ASGIMiddleware(app, **settings_kwargs(data, layers=layers))
        # Inside Starlette's ServerErrorMiddleware: an app's own Exception/500
        # handler runs there, after us, on what we raise on.
        self._wall.app_renders_errors = _app_renders_errors
        self._walls = Walls(self._wall)
        self._routes_key: tuple[int, int] | None = None
        self._routes: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"<SeawallMiddleware {self._wall!r}>"

    @property
    def wall(self) -> ASGIMiddleware:
        """The ASGI driver doing the work (``seawall.stats(app)`` finds it)."""
        return self._wall

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Serve one ASGI connection through the wall (or its exempt twin).

        Returns the wall's coroutine rather than awaiting it in one of its
        own: Starlette awaits what a middleware returns, and a coroutine here
        would only add a frame to every await of every request. Marked a
        coroutine function (below): servers tell ASGI 3 from ASGI 2 by it.
        """
        walls = self._walls
        if walls.source is not walls.wall.stack:
            walls.refresh()
        if walls.differ and scope["type"] == "http":
            mark = self._mark(scope)
            if mark is not None:
                return walls.for_mark(mark)(scope, receive, send)  # type: ignore[no-any-return]
        return self._wall(scope, receive, send)

    def _mark(self, scope: Scope) -> str | None:
        """The mark of the endpoint *scope* goes to (``@exempt``, ``override_defaults``)."""
        app = scope.get("app")
        routes = getattr(getattr(app, "router", app), "routes", None)
        if not routes:
            return None
        key = (id(routes), len(routes))
        if key != self._routes_key:
            # Only apps with a marked endpoint pay for matching routes here.
            self._routes_key = key
            table = _route_table(routes)
            self._routes = tuple(table) if any(mark for _, _, mark in table) else ()
        if not self._routes:
            return None
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method = scope.get("method")
        for pattern, methods, mark in self._routes:
            if (methods is None or method in methods) and pattern.match(path):
                return mark  # type: ignore[no-any-return]
        return None

    @property
    def layers(self) -> tuple[object, ...]:
        """The layers, outermost first."""
        return self._wall.layers

    def stats(self) -> dict[str, Any]:
        """A snapshot of every layer's statistics."""
        return self._wall.stats()


mark_coroutine_function(SeawallMiddleware.__call__)


def _route_mark(route: Any) -> str | None:
    """``"exempt"``/``"override"``: a marked endpoint, or one with an overriding limit."""
    mark = mark_of(getattr(route, "endpoint", None))
    if mark is not None:
        return mark
    # A RouteContext (FastAPI 0.165+) answers for its effective route.
    dependant = getattr(route, "dependant", None)
    if dependant is not None:
        # Path-decorator and router dependencies are in here too (FastAPI merges them).
        stack = list(dependant.dependencies)
        while stack:
            dep = stack.pop()
            if getattr(dep.call, OVERRIDE_ATTR, False) is True:
                return "override"
            stack.extend(dep.dependencies)
    return None


def _route_table(routes: Iterable[Any]) -> list[tuple[Any, frozenset[str] | None, str | None]]:
    """Every route as ``(path regex, methods or None, mark)``, in the order routing tries them.

    Looks into mounted apps and included routers (:func:`seawall.asgi.walk_routes`;
    not into ``Host`` routes, which are not matched by path). Matched here
    rather than through each route's ``matches()``: that needs FastAPI's
    private routing state for included routes.
    """
    table: list[tuple[Any, frozenset[str] | None, str | None]] = []
    for prefix, ctx in walk_routes(routes, hosts=False):
        path = getattr(ctx, "path", None)
        if not isinstance(path, str):
            continue  # a route that is not matched by path
        methods = getattr(ctx, "methods", None)
        pattern, _, _ = compile_path(prefix + path)
        table.append((pattern, frozenset(methods) if methods else None, _route_mark(ctx)))
    return table


# -- dependencies --------------------------------------------------------------


def _route_of(request: HTTPConnection) -> str | None:
    """Put the matched route template on the request (scope and view) and return it."""
    route = request.scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if template:
        if "fastapi" in request.scope:
            template = prefixed_template(request.scope, route, str(template))
        else:
            template = mounted(request.scope, str(template))
        request.scope["seawall.route"] = template
        view = current_request()
        if view is not None:
            view.route = template
        return str(template)
    return None


def _require_middleware(request: HTTPConnection, what: str) -> None:
    """Refuse to run a dependency whose answers only SeawallMiddleware renders, without it.

    Its 429 or 422 would otherwise be a bare 500 (a router tested on a
    plain ``FastAPI()``), with a message about another entry point.
    """
    if "seawall.request_id" not in request.scope:
        msg = (
            f"seawall.fastapi.{what}() needs the middleware: "
            "app.add_middleware(seawall.fastapi.SeawallMiddleware) on the app serving this route"
        )
        raise ConfigurationError(msg)


#: What a validate() dependency reads as the body (a model or a JSON Schema), for document().
_BODY_ATTR = "__seawall_body__"


def _mark(dependency: Any, statuses: tuple[int, ...]) -> Any:
    setattr(dependency, _STATUSES_ATTR, statuses)
    return dependency


def limit(*args: Any, **kwargs: Any) -> Callable[[HTTPConnection], Awaitable[None]]:
    """A dependency that rate-limits a route: ``Depends(limit("5/minute"))``.

    Takes the arguments of ``seawall.limit``. Each route the dependency
    guards (a path operation: its methods and its template, so
    ``GET /items/{id}`` is one route whatever the id) gets its own bucket per
    client, so one ``limit(...)`` can guard a whole router. With ``name=``
    the routes share one bucket per client, named so (in memory as in Redis).
    Raises ``RateLimited`` (429 problem+json, ``Retry-After``) when used up;
    the ``RateLimit`` headers go on the response.
    """
    import hashlib
    import sys

    from seawall.layers.ratelimit import limit as handler_limit

    first = handler_limit(*args, **kwargs)  # built now: a bad limit fails at import
    # Buckets are named after the route and this call site (the same in
    # every worker), so two limit(...) dependencies on one route, or one on
    # GET and POST /items/{id}, keep their own counts in Redis too.
    caller = sys._getframe(1)
    site = f"{caller.f_globals.get('__name__', '')}:{caller.f_lineno}"
    tag = hashlib.blake2b(site.encode(), digest_size=4).hexdigest()
    # (id(route), template) -> (route, guard): routes are not hashable;
    # holding the route keeps its id from being reused by another one. The
    # template too: one router included under two prefixes is one route.
    guards: dict[tuple[int, str | None], tuple[Any, Callable[[], Awaitable[None]]]] = {}
    spare = [first]
    made = [first]

    def guard_for(matched: Any, template: str | None) -> Callable[[], Awaitable[None]]:
        if first.name is not None and len(made) == 1 and not spare:
            # A named bucket is one for every route: the first route's guard
            # serves them all, so memory shares it as Redis does (one key).
            shared = next(iter(guards.values()))[1]
            guards[id(matched), template] = (matched, shared)
            return shared
        if spare:
            limiter = spare.pop()
        else:
            limiter = handler_limit(*args, **kwargs)
            made.append(limiter)

        async def route() -> None:
            return None

        # The bucket is named after the function the limiter guards: name it
        # after the route so every route keeps its own counts.
        methods = " ".join(sorted(getattr(matched, "methods", None) or ()))
        route.__module__ = tag
        route.__qualname__ = f"{methods} {template}".strip() if template else "<unmatched>"
        guarded: Callable[[], Awaitable[None]] = limiter(route)
        guards[id(matched), template] = (matched, guarded)
        return guarded

    # HTTPConnection, not Request: FastAPI gives it on websocket routes too,
    # where the limit applies to the handshake.
    async def dependency(request: HTTPConnection) -> None:
        _require_middleware(request, "limit")
        template = _route_of(request)
        matched = request.scope.get("route")
        entry = guards.get((id(matched), template))
        if entry is not None and entry[0] is matched:
            guarded = entry[1]
        else:
            guarded = guard_for(matched, template)
        await guarded()

    # seawall.testing.reset finds the limiters (one per route) here.
    dependency.__seawall_handlers__ = made  # type: ignore[attr-defined]
    if first.override_defaults:
        # The middleware serves the routes it guards without the app's RateLimit.
        setattr(dependency, OVERRIDE_ATTR, True)
    return _mark(dependency, (429,))  # type: ignore[no-any-return]


def breaker(name: str, /, **options: Any) -> Callable[[HTTPConnection], Any]:
    """A dependency that puts a route behind the named breaker (``seawall.breaker`` options).

    Open: 503 problem+json with ``Retry-After``. Closed or half-open: the
    route runs and its outcome is recorded (an exception the breaker counts
    as a failure, e.g. a ``RuntimeError`` or an ``HTTPException`` 5xx, is
    one; a 4xx ``HTTPException`` is not counted; a normal return is a
    success). The breaker is the one ``@seawall.breaker(name)`` and
    ``@seawall.protect(breaker=name)`` use.
    """
    import time

    from seawall._breaker.registry import breakers
    from seawall.layers.breaker import exception_failed, held_by_request

    found = breakers.get(name, **options)
    clock = getattr(found, "_clock", time.monotonic)

    # HTTPConnection: on a websocket route the breaker guards the session,
    # and an open one refuses the handshake.
    async def dependency(request: HTTPConnection) -> Any:
        _route_of(request)
        if held_by_request(found):
            # The CircuitBreaker layer holds this breaker's permit for the request.
            yield None
            return
        permit = await found.aacquire()
        if type(permit) is float:
            raise found.refusal(permit)
        start = clock()
        try:
            yield None
        except Exception as exc:
            # As the layer and the decorator judge: a Rejected or an ignored
            # type is not counted, an HTTPException by its status (4xx: not counted).
            failed = exception_failed(found, exc)
            await found.arecord(permit, failed, clock() - start, exc=exc)
            raise
        await found.arecord(permit, False, clock() - start)

    return _mark(dependency, (503,))  # type: ignore[no-any-return]


def validate(*args: Any, **kwargs: Any) -> Callable[[Request], Awaitable[Any]]:
    """A dependency that validates (and cleans) the request body; it returns the document.

    Takes ``seawall.validate``'s arguments (``schema``, ``sanitize``, ...)::

        @app.post("/users")
        async def create(user: User = Depends(validate(User))): ...

    A body that does not fit is a 422 problem+json (400 if malformed); the
    dependency's value is the parsed, cleaned body (a model instance when
    *schema* is a pydantic model).
    """
    from seawall.layers.validation import validate as handler_validate

    kwargs["into"] = "document"

    async def checked(request: Request, document: Any = None) -> Any:
        return document

    guarded = handler_validate(*args, **kwargs)(checked)

    async def dependency(request: Request) -> Any:
        _require_middleware(request, "validate")
        _route_of(request)
        return await guarded(request)

    # document() gives the route the body it reads (FastAPI sees no body parameter).
    schema = kwargs.get("schema", args[0] if args else None)
    if schema is not None:
        setattr(dependency, _BODY_ATTR, schema)
    return _mark(dependency, LAYER_STATUSES["validation"])  # type: ignore[no-any-return]


# -- OpenAPI -----------------------------------------------------------------


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for problem+json answers with these statuses."""
    return {
        status: {
            "description": _TITLES.get(status, "Error"),
            "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}},
        }
        for status in sorted(set(statuses))
    }


def _wall_statuses(app: Any) -> set[int]:
    found: set[int] = set()
    for entry in getattr(app, "user_middleware", ()):
        if entry.cls is not SeawallMiddleware:
            continue
        kwargs = dict(entry.kwargs)
        names: list[str]
        if kwargs.get("layers") is not None:
            names = [str(getattr(layer, "name", "")) for layer in kwargs["layers"]]
        else:
            settings = _settings_of(kwargs)
            names = [key for key in LAYER_KEYS if settings.get(key) not in (None, False)]
            if not names:
                # No layer named: the middleware runs the recommended stack.
                names = [str(getattr(layer, "name", "")) for layer in recommended_layers()]
        for name in names:
            found.update(LAYER_STATUSES.get(name, ()))
    return found


def document(app: Any) -> None:
    """Add the problem responses seawall may send to each route's OpenAPI operation.

    A route gets the statuses of the middleware's layers (unless its
    endpoint is exempt) and those of its seawall dependencies, each as an
    ``application/problem+json`` response referring to one ``Problem``
    schema in ``components``. Call it once, after the routes and the
    middleware are added. What the app and FastAPI document is kept: a
    status already there (FastAPI's own 422 for path and body validation,
    a ``responses=`` entry) gets the problem+json content beside its own.
    """
    from fastapi.routing import APIRoute

    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before 0.165: app.routes has every route, prefixed
        routes: list[Any] = list(app.routes)
    else:
        # Included routers' routes, with their prefixes and the routers' dependencies.
        routes = list(iter_route_contexts(list(app.routes)))
    wall = _wall_statuses(app)
    plan: dict[tuple[str, str], list[int]] = {}
    bodies: dict[tuple[str, str], Any] = {}
    for route in routes:
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            continue
        statuses = set() if is_exempt(route.endpoint) else set(wall)
        body = None
        stack = list(route.dependant.dependencies)
        while stack:
            dep = stack.pop()
            statuses.update(getattr(dep.call, _STATUSES_ATTR, ()))
            body = getattr(dep.call, _BODY_ATTR, body)
            stack.extend(dep.dependencies)
        statuses.discard(500)  # FastAPI documents no 500s; neither do we
        for method in route.methods or ():
            plan[(route.path_format, method.lower())] = sorted(statuses)
            if body is not None:
                bodies[(route.path_format, method.lower())] = body

    previous = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema  # type: ignore[no-any-return]
        schema: dict[str, Any] = previous()
        _add_problems(schema, plan)
        _add_bodies(schema, bodies)
        app.openapi_schema = schema
        return schema

    # FastAPI serves /openapi.json through app.openapi(): wrap it, so the
    # problems are merged into what FastAPI generated (its 422 included).
    app.openapi = openapi
    app.openapi_schema = None


def _add_bodies(schema: dict[str, Any], bodies: Mapping[tuple[str, str], Any]) -> None:
    """Give operations whose body ``Depends(validate(...))`` reads a ``requestBody``.

    A pydantic model goes into ``components`` (with the models it uses), as
    FastAPI puts a body parameter's; a JSON Schema dict is given inline.
    The app's own ``requestBody`` (a body parameter, ``openapi_extra``) is kept.
    """
    schemas = None
    for (path, method), given in bodies.items():
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is None or "requestBody" in operation:
            continue
        if isinstance(given, Mapping):
            body = {k: v for k, v in given.items() if k != "$schema"}
        elif hasattr(given, "model_json_schema"):
            if schemas is None:
                schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            name = given.__name__
            if name not in schemas:
                model = given.model_json_schema(ref_template="#/components/schemas/{model}")
                for inner, definition in model.pop("$defs", {}).items():
                    schemas.setdefault(inner, definition)
                schemas[name] = model
            body = {"$ref": f"#/components/schemas/{name}"}
        else:
            continue
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }


def _add_problems(schema: dict[str, Any], plan: Mapping[tuple[str, str], list[int]]) -> None:
    ref = {"$ref": "#/components/schemas/Problem"}
    used = False
    for (path, method), statuses in plan.items():
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status in statuses:
            entry = responses.setdefault(str(status), {"description": _TITLES.get(status, "Error")})
            entry.setdefault("content", {}).setdefault(
                "application/problem+json", {"schema": dict(ref)}
            )
            used = True
    if used:
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", _PROBLEM_SCHEMA)
