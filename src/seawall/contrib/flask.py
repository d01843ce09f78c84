"""The Flask extension: ``from seawall.flask import Seawall``.

::

    app.config["SEAWALL"] = {"rate_limit": {"limit": "100/minute"}, "timing": True}
    guard = Seawall(app)                 # or guard = Seawall(); guard.init_app(app)

    @app.post("/login")
    @guard.limit("5/minute")
    def login(): ...

Theory of operation:

1. ``init_app`` wraps ``app.wsgi_app`` with the WSGI driver, built from
   ``app.config["SEAWALL"]`` (the :func:`seawall.config.load_config` schema)
   updated with the extension's keyword arguments.
2. A URL value preprocessor (it runs before every ``before_request``) puts
   the matched rule (``/items/<int:id>``) in ``view.route``, so statistics
   and breakers key by template and handler decorators see it. (Flask
   clears the request from the environ when it returns, so the rule cannot
   be read afterwards.) It finds the view through seawall's own context
   variable and the template from the endpoint Flask passes it, cached per
   endpoint with one rule: ``request`` is a werkzeug proxy, and each
   attribute read through it costs more than the rest of the hook (the
   matched rule is read from it only for endpoints with several rules).
3. Flask turns unhandled exceptions into 500s itself, so they never reach
   the driver. The ``got_request_exception`` signal hands them to the
   layers (ErrorCapture logs and fingerprints them) and the problem+json
   500 is served by a 500 error handler registered only if the app has
   none. When Flask propagates exceptions (testing, debug,
   ``PROPAGATE_EXCEPTIONS``) the driver sees them instead, and the signal
   does nothing, so an error is captured exactly once. HTTP errors raised on
   purpose (``abort(403)``, 404) are ``HTTPException`` and are never captured.
4. :class:`~seawall.exceptions.Rejected` (raised by handler decorators) is
   rendered as problem+json by an error handler registered only if the app
   has none for it; the app's own handler for it (or a subclass) wins.
5. Exempt views (``@guard.exempt``, or a blueprint marked with it) are
   found before the layers run by matching the URL map, which is done only
   when the app has an exempt view.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.contrib import missing_extra

try:
    from flask import Blueprint, Flask, got_request_exception, request
    from werkzeug.exceptions import HTTPException, InternalServerError
except ModuleNotFoundError as exc:  # the framework's extra is not installed
    raise missing_extra("seawall.flask", "flask", exc) from exc

from seawall._core.decisions import Respond
from seawall._log import _current, current_request
from seawall.contrib import Walls, settings_kwargs
from seawall.exceptions import ConfigurationError, Rejected
from seawall.handlers import OVERRIDE_ATTR, mark_of, view_mark, view_marks
from seawall.handlers import exempt as _mark_exempt
from seawall.wsgi import WSGIMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from flask.typing import ResponseReturnValue

__all__ = ["Seawall"]

_F = TypeVar("_F", bound=Callable[..., Any])
_ANSWER = "seawall.flask.answer"


class _Entry:
    """What ``app.wsgi_app`` becomes: the wall, or the twin a marked view is served by.

    Views marked ``@exempt`` get the exempt twin, views whose limit has
    ``override_defaults=True`` the twin without the RateLimit layers
    (:class:`seawall.contrib.Walls`); a blueprint's mark covers its views.
    """

    __slots__ = ("_app", "_fresh", "_scanned", "_wall", "_walls", "has_marks")

    def __init__(self, app: Flask, wall: WSGIMiddleware) -> None:
        self._app = app
        self._wall = wall
        self._walls = Walls(wall)
        self._scanned = -1
        self._fresh = True
        self.has_marks = False

    def _scan(self) -> None:
        app = self._app
        self._scanned = len(app.view_functions) + len(app.blueprints)
        self.has_marks = any(view_marks(v) for v in app.view_functions.values()) or any(
            mark_of(bp) for bp in app.blueprints.values()
        )

    def _mark(self, environ: WSGIEnvironment) -> str | None:
        app = self._app
        # Bound as Flask binds it (Flask.create_url_adapter): SERVER_NAME,
        # and subdomains matched only when the app asks for it.
        server_name = app.config.get("SERVER_NAME")
        subdomain = None
        if app.url_map.host_matching:
            server_name = None
        elif not app.subdomain_matching:
            subdomain = app.url_map.default_subdomain or ""
        try:
            adapter = app.url_map.bind_to_environ(
                environ, server_name=server_name, subdomain=subdomain
            )
            rule, _ = adapter.match(return_rule=True)
        except HTTPException:
            return None  # no route: the wall applies in full
        endpoint = rule.endpoint
        view = app.view_functions.get(endpoint)
        mark = view_mark(view, environ.get("REQUEST_METHOD"))
        if mark == "exempt":
            return mark
        name = endpoint.rpartition(".")[0]
        while name:
            # An exempt blueprint wins over a view's own override.
            found = mark_of(app.blueprints.get(name))
            if found == "exempt":
                return found
            mark = mark or found
            name = name.rpartition(".")[0]
        return mark

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request through the wall (or the twin its view's mark asks for)."""
        if self._fresh:
            # Blueprints and app factories register views after the guards
            # were applied: a guard above the route decorator shows only now.
            self._fresh = False
            _check_views(self._app)
        walls = self._walls
        if walls.source is not walls.wall.stack:
            walls.refresh()
        if walls.differ:
            app = self._app
            if self._scanned != len(app.view_functions) + len(app.blueprints):
                self._scan()
            if self.has_marks:
                mark = self._mark(environ)
                if mark is not None:
                    return walls.for_mark(mark)(environ, start_response)  # type: ignore[no-any-return]
        return self._wall(environ, start_response)


class Seawall:
    """The Flask extension: protect an app with the seawall layers.

    Args:
        app: the Flask app (or call :meth:`init_app` later).
        layers: layer objects, used as given (instead of the settings' layer tables).
        **settings: settings in the :func:`seawall.config.load_config`
            schema; they update ``app.config["SEAWALL"]``.

    Raises:
        seawall.ConfigurationError: a setting is unknown or ill-typed (the
            message names the key).
    """

    def __init__(
        self, app: Flask | None = None, *, layers: Iterable[object] | None = None, **settings: Any
    ) -> None:
        self.settings = settings
        self.layers = None if layers is None else list(layers)
        self.wall: WSGIMiddleware | None = None
        self._apps: list[Flask] = []
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<seawall.flask.Seawall wall={self.wall!r}>"

    # -- wiring ---------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Wrap *app*'s WSGI callable and register the hooks and error handlers."""
        config = dict(app.config.get("SEAWALL") or {})
        config.update(self.settings)
        config.pop("interface", None)
        kwargs = settings_kwargs(config, layers=self.layers)
        wall = WSGIMiddleware(app.wsgi_app, **kwargs)
        # Flask propagating (TESTING, debug, PROPAGATE_EXCEPTIONS): the error
        # goes on to the test or the debugger, after ErrorCapture logged it.
        wall.app_renders_errors = lambda environ, exc: _propagates(app)
        self.wall = wall
        self._apps.append(app)
        entry = _Entry(app, wall)
        app.wsgi_app = entry  # type: ignore[method-assign]
        app.extensions["seawall"] = entry
        app.url_value_preprocessor(_route_setter(app))
        got_request_exception.connect(self._on_exception, app, weak=False)
        app.log_exception = _logged_once(app.log_exception)  # type: ignore[method-assign,assignment]
        # Flask keys handlers by status code (HTTP errors) or None (others);
        # the app's own handlers, registered before us, are kept.
        spec = app.error_handler_spec[None]
        # For Rejected itself unless the app has one: an app's handler for one
        # kind (RateLimited) keeps it, Flask picking the closest class, and
        # every other refusal (CircuitOpen...) still gets its problem+json.
        if Rejected not in spec[None]:
            app.register_error_handler(Rejected, _render_rejected)
        if not spec[500]:
            app.register_error_handler(InternalServerError, _render_500)

    def _on_exception(self, sender: Flask, exception: BaseException, **_: Any) -> None:
        if _propagates(sender):
            return  # Flask re-raises: the driver captures it (once), then raises it on.
        view = current_request()
        entry = sender.extensions.get("seawall")
        # One extension may serve several apps: use the wall of the sender.
        wall = getattr(entry, "_wall", None)
        if view is None or wall is None or not wall.stack.has_exception_hooks:
            return
        rule = request.url_rule
        if rule is not None:
            view.route = rule.rule
        answer = wall.stack.on_exception(view, exception, wall.stack.all_depth)
        if answer is not None:
            view.state[_ANSWER] = answer

    # -- decorators -----------------------------------------------------------

    def _check_order(self, target: Any, decorator: str) -> None:
        """Refuse a view the app already registered: the guard would never run.

        ``@app.route`` registers the function it is given, so a guard
        written above it wraps a copy nobody calls (the view would run
        unlimited, with no error). Written below, as documented, it is fine.
        """
        for app in self._apps:
            if any(view is target for view in app.view_functions.values()):
                raise ConfigurationError(_order_message(target, decorator))
        # Not weakly referable (a callable object): no later check.
        with contextlib.suppress(TypeError):
            _GUARDED[target] = decorator

    def limit(self, *args: Any, **kwargs: Any) -> Callable[[_F], _F]:
        """Rate-limit a view, or a whole blueprint (``seawall.limit`` arguments).

        Each view (or blueprint) decorated gets its own bucket per client.
        """
        from seawall.layers.ratelimit import limit

        def apply(target: _F) -> _F:
            if isinstance(target, Blueprint):
                limiter = limit(*args, **kwargs)
                target.before_request(limiter(_blueprint_check(target)))
                if limiter.override_defaults:
                    setattr(target, OVERRIDE_ATTR, True)
                return target
            self._check_order(target, "limit")
            return limit(*args, **kwargs)(target)  # type: ignore[return-value]

        return apply

    def validate(self, *args: Any, **kwargs: Any) -> Callable[[_F], _F]:
        """Validate the requests of a view or a blueprint (``seawall.validate`` arguments)."""
        from seawall.layers.validation import validate

        def apply(target: _F) -> _F:
            if isinstance(target, Blueprint):
                target.before_request(validate(*args, **kwargs)(_blueprint_check(target)))
                return target
            self._check_order(target, "validate")
            return validate(*args, **kwargs)(target)

        return apply

    def breaker(self, name: str | None = None, /, **options: Any) -> Callable[[_F], _F]:
        """Put a view or a whole blueprint behind a circuit breaker (``seawall.breaker``).

        On a blueprint, every view's outcome feeds one breaker (named after
        the blueprint unless *name* is given): a 5xx response or an
        unhandled exception is a failure.
        """
        from seawall.layers.breaker import breaker

        def apply(target: _F) -> _F:
            if isinstance(target, Blueprint):
                _blueprint_breaker(target, name or f"blueprint:{target.name}", options)
                return target
            self._check_order(target, "breaker")
            guarded: _F = breaker(name, **options)(_responding(target))
            return guarded

        return apply

    @staticmethod
    def exempt(target: _F) -> _F:
        """Exempt a view or a blueprint from the rejecting layers (:func:`seawall.exempt`)."""
        return _mark_exempt(target)


#: Functions a guard decorator was given, as they were (weakly): one Flask
#: registered itself means the guard sat above the route decorator.
_GUARDED: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _order_message(target: Any, decorator: str) -> str:
    return (
        f"@guard.{decorator} on {getattr(target, '__qualname__', target)!r} sits "
        f"above the route decorator: Flask registered the view unguarded. Put "
        f"@guard.{decorator} below @app.route / @blueprint.route"
    )


def _check_views(app: Flask) -> None:
    """Refuse, at the first request, a view registered as it was before a guard wrapped it."""
    if not _GUARDED:
        return
    for view in app.view_functions.values():
        decorator = _GUARDED.get(view)
        if decorator is not None:
            raise ConfigurationError(_order_message(view, decorator))


def _logged_once(log_exception: Callable[[Any], None]) -> Callable[[Any], None]:
    """Flask's ``log_exception``, skipped for an error ErrorCapture logged already.

    Flask logs every unhandled error ("Exception on /boom [GET]", with its
    traceback) after telling ``got_request_exception``, where ErrorCapture
    logs it (scrubbed, with the request id): once is enough.
    """

    def log_once(exc_info: Any) -> None:
        view = current_request()
        if view is not None and _ANSWER in view.state:
            return
        log_exception(exc_info)

    return log_once


def _propagates(app: Flask) -> bool:
    """Whether *app* raises an unhandled exception out of ``wsgi_app``, as Flask decides."""
    propagate = app.config["PROPAGATE_EXCEPTIONS"]
    if propagate is None:
        return bool(app.testing or app.debug)
    return bool(propagate)


def _responding(view: Any) -> Any:
    """*view*, returning a response object: the breaker judges it by ``status_code``.

    Flask views may return ``(body, status)`` tuples, which carry no
    ``status_code`` until Flask makes them a response.
    """
    import functools
    import inspect

    from flask import current_app

    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_responding(*args: Any, **kwargs: Any) -> Any:
            return current_app.make_response(await view(*args, **kwargs))

        return async_responding

    @functools.wraps(view)
    def responding(*args: Any, **kwargs: Any) -> Any:
        return current_app.make_response(view(*args, **kwargs))

    return responding


def _blueprint_check(blueprint: Blueprint) -> Callable[..., None]:
    """A no-op to guard with a handler decorator, run before every view of *blueprint*."""

    def check(**_: Any) -> None:
        return None

    # Handler decorators name their state after the function: one per blueprint.
    check.__module__ = blueprint.import_name
    check.__qualname__ = f"blueprint:{blueprint.name}"
    return check


def _blueprint_breaker(blueprint: Blueprint, name: str, options: dict[str, Any]) -> None:
    """Feed one breaker with every view of *blueprint*: permit before, outcome after."""
    import time

    from seawall._breaker.registry import breakers

    found = breakers.get(name, **options)
    clock = getattr(found, "_clock", time.monotonic)
    key = f"seawall.breaker.{name}"

    def acquire() -> None:
        permit = found.acquire()
        if type(permit) is float:
            raise found.refusal(permit)
        request.environ[key] = (permit, clock())

    def record(response: Any) -> Any:
        held = request.environ.pop(key, None)
        if held is not None:
            found.record(held[0], response.status_code >= 500, clock() - held[1])
        return response

    def teardown(exc: BaseException | None) -> None:
        # Reached with the permit still held only when Flask propagated an
        # exception (no response was made): a failure.
        held = request.environ.pop(key, None)
        if held is not None:
            found.record(held[0], exc is not None or None, clock() - held[1], exc=exc)

    blueprint.before_request(acquire)
    blueprint.after_request(record)
    blueprint.teardown_request(teardown)


def _route_setter(app: Flask) -> Callable[[str | None, dict[str, Any] | None], None]:
    """The URL value preprocessor that reports the matched rule's template."""
    # endpoint -> its only rule's template, or None when it has several.
    # Flask refuses new routes once it served a request, so entries stay true.
    templates: dict[str, str | None] = {}

    def set_route(endpoint: str | None, values: dict[str, Any] | None) -> None:
        holder = _current.get()
        view = None if holder is None else holder[0]
        if view is None or endpoint is None:
            return
        try:
            template = templates[endpoint]
        except KeyError:
            try:
                rules = list(app.url_map.iter_rules(endpoint))
            except KeyError:
                rules = []
            template = templates[endpoint] = rules[0].rule if len(rules) == 1 else None
        if template is None:
            rule = request.url_rule
            if rule is None:
                return
            template = rule.rule
        view.route = template

    return set_route


def _problem(respond: Respond) -> ResponseReturnValue:
    from flask import current_app

    response = current_app.response_class(respond.body, status=respond.status)
    response.headers["Content-Type"] = respond.content_type
    for name, value in respond.headers:
        response.headers.add(name, value)
    return response


def _render_rejected(exc: Rejected) -> ResponseReturnValue:
    view = current_request()
    return _problem(
        Respond.from_rejection(
            exc, instance=request.path, request_id=None if view is None else view.request_id
        )
    )


def _render_500(exc: InternalServerError) -> ResponseReturnValue:
    view = current_request()
    answer = None if view is None else view.state.pop(_ANSWER, None)
    if answer is None:
        return exc  # abort(500) on purpose, or no ErrorCapture: Flask's own page
    return _problem(answer)
