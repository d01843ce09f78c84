"""RequestView: what a layer knows about a request.

Built once per request by the driver, from an ASGI scope or a WSGI environ.
Its request attributes are read-only; headers are decoded only when a layer
asks for one. Two per-request mutable parts are deliberate: :attr:`state`
(a scratch dict where a layer keeps what its later hooks need, keyed by the
layer itself, since layers must hold no per-request state) and
:attr:`response_headers` (headers a layer wants on whatever response goes
out, the app's or a rejection).
"""

from __future__ import annotations

import contextlib
import os
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from itertools import chain, count, repeat
from operator import add
from typing import Any, Literal

from seawall._core.client import UNKNOWN_CLIENT, ClientResolver, normalize_address

__all__ = ["AFTER_RESPONSE", "RequestIds", "RequestView", "asgi_view", "wsgi_view"]

#: The :attr:`RequestView.state` key of the callbacks :meth:`RequestView.after_response` keeps.
AFTER_RESPONSE = "seawall.after_response"

_SAFE_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")

# Header names most requests carry. Their decoded forms are looked up rather
# than computed: on CPython a decode, a lower() or a slice costs several times
# a dict lookup, and reading headers runs on every request. Any other name
# takes the general (exact) path.
_COMMON_NAMES = (
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "connection",
    "keep-alive",
    "content-type",
    "content-length",
    "transfer-encoding",
    "cookie",
    "referer",
    "origin",
    "authorization",
    "cache-control",
    "pragma",
    "dnt",
    "te",
    "upgrade",
    "upgrade-insecure-requests",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "range",
    "expect",
    "priority",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-user",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-request-id",
    "x-requested-with",
    "x-api-key",
    "forwarded",
    "via",
)
# ASGI: raw (lower-case) name -> decoded name.
_RAW_NAMES = {name.encode("latin-1"): name for name in _COMMON_NAMES}
# WSGI: environ key -> header name, as key[5:].replace("_", "-").lower() gives.
_ENV_NAMES = {"HTTP_" + name.upper().replace("-", "_"): name for name in _COMMON_NAMES}
# The two headers of the CGI environ without the HTTP_ prefix (present only if set).
_CGI_NAMES = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}
# WSGI environ keys known not to be headers; any other key takes the exact test.
_NOT_HEADER_KEYS = frozenset(
    {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "REMOTE_HOST",
        "REMOTE_USER",
        "REQUEST_URI",
        "RAW_URI",
        "GATEWAY_INTERFACE",
        "HTTPS",
        "wsgi.version",
        "wsgi.url_scheme",
        "wsgi.input",
        "wsgi.errors",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
        "wsgi.file_wrapper",
        "wsgi.input_terminated",
        "wsgi.early_hints",
        "gunicorn.socket",
        "werkzeug.socket",
        "werkzeug.request",
        "seawall.request_id",
    }
)

# Headers that frame a body, for header_totals(): matched by length first, so
# the common header costs one len() and a set lookup, never a lower().
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_FRAMING_RAW = frozenset({b"content-length", b"transfer-encoding"})
_FRAMING_LENGTHS = frozenset({14, 17})
_FRAMING_KEY_LENGTHS = frozenset({19, 22})  # "HTTP_" + either name
# For header_totals(): keys that are no header or read on their own, and
# header keys known to be neither framing header.
_TOTALS_SKIP = _NOT_HEADER_KEYS | _CGI_NAMES.keys()
_PLAIN_HEADER_KEYS = frozenset(key for key, name in _ENV_NAMES.items() if name not in _FRAMING)


# The last two hex digits of the generated ids (see RequestIds._reseed).
_TAILS = ["%02x" % i for i in range(256)]  # noqa: UP031


class RequestIds:
    """Accept a well-formed incoming request id or generate one.

    An incoming id is accepted when it is 1-128 characters of
    ``A-Z a-z 0-9 . _ : @ + = / -``; anything else is replaced, so a hostile
    value never reaches logs or response headers. Generated ids are a random
    per-process prefix plus a counter (re-seeded in a forked child): unique
    across workers and cheap per request.
    """

    __slots__ = ("__weakref__", "_ids", "_prefix", "header")

    def __init__(self, header: str = "x-request-id") -> None:
        self.header = header.lower()
        self._reseed()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def reseed_child() -> None:
                ids = ref()
                if ids is not None:
                    ids._reseed()

            os.register_at_fork(after_in_child=reseed_child)

    def _reseed(self) -> None:
        # The random prefix and the counter are one integer: the top bit set
        # keeps every id 20 hex digits. The ids are "%x" % (prefix + n) for
        # n = 1, 2, ...; the prefix's low 32 bits are zero, so 256 ids in a
        # row share all but their last two digits. They are made 256 at a
        # time, a head formatted once followed by each of 256 precomputed
        # tails, by C iterators alone: one next() is a string concatenation
        # where formatting an 80-bit integer cost twice as much (callgrind:
        # ~1.1k instructions a request less). No Python code runs inside
        # next(), so it is as atomic under the GIL as next() of a count().
        prefix = (int.from_bytes(os.urandom(6), "big") | 1 << 47) << 32
        self._prefix = prefix
        heads = map("%x".__mod__, count(prefix >> 8))
        blocks: Iterator[Iterator[str]] = map(
            map, repeat(add), map(repeat, heads, repeat(256)), repeat(_TAILS)
        )
        ids = chain.from_iterable(blocks)
        next(ids)  # n = 0: ids start at 1
        self._ids = ids

    def accept(self, incoming: str | None) -> str:
        """Return *incoming* if it is a safe id, else a fresh one."""
        if incoming is not None and _SAFE_ID.fullmatch(incoming):
            return incoming
        return next(self._ids)

    def new(self) -> str:
        """Return a fresh id, unique across processes.

        Both drivers inline this (``next(ids._ids)``): keep them in step.
        """
        return next(self._ids)


class RequestView:
    """A read-only view of one request, shared by every layer.

    Attributes are those of the request line and connection, plus
    ``request_id``, ``started`` (``perf_counter()`` on arrival), ``admitted``
    (when the layers let it through to the app), ``route`` (the route
    template when an adapter knows it before the app runs) and ``body`` (the
    request body, once a layer has read it). Two are requests layers make of
    the driver: ``deadline`` (seconds the app may take: ASGI cancels it and
    answers 504, WSGI marks the outcome ``timed_out``) and ``max_body`` (the
    driver counts the body as the app reads it and stops it with a 413 past
    this many bytes, without buffering). Headers are
    read with :meth:`header`/:meth:`header_list`/:attr:`headers`. The client
    identity (:attr:`client`, :attr:`client_key`) is resolved once, lazily,
    with the trusted-proxy rules of the stack.

    ``path`` is the path inside the app, as the framework routes it: without
    ``root_path`` (ASGI) or ``SCRIPT_NAME`` (WSGI), the prefix a proxy or a
    mount serves the app under, which ``root_path`` keeps. Rules,
    exemptions and the endpoints of Health, Metrics and the dashboard are
    matched against it.
    """

    __slots__ = (
        "_client",
        "_headers",
        "_raw_headers",
        "_resolver",
        "_wsgi",
        "admitted",
        "body",
        "deadline",
        "interface",
        "max_body",
        "method",
        "path",
        "peer",
        "query_string",
        "raw",
        "request_id",
        "response_headers",
        "root_path",
        "route",
        "scheme",
        "started",
        "state",
    )

    method: str
    path: str
    query_string: str
    scheme: str
    root_path: str
    peer: str | None
    request_id: str
    interface: Literal["asgi", "wsgi"]
    started: float
    route: str | None
    raw: Mapping[str, Any]
    state: dict[Any, Any]
    response_headers: list[tuple[str, str]]
    body: bytes | None
    admitted: float
    deadline: float | None
    max_body: int | None

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query_string: str = "",
        scheme: str = "http",
        root_path: str = "",
        peer: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        environ: Mapping[str, Any] | None = None,
        resolver: ClientResolver | None = None,
        request_id: str = "",
        interface: Literal["asgi", "wsgi"] = "asgi",
        started: float = 0.0,
        route: str | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.scheme = scheme
        self.root_path = root_path
        self.peer = peer
        self._raw_headers = headers
        self._wsgi = environ
        self._headers: dict[str, list[str]] | None = None
        self._resolver = resolver
        self._client: str | None = None
        self.request_id = request_id
        self.interface = interface
        self.started = started
        self.route = route
        self.raw = raw if raw is not None else (environ or {})
        self.state = {}
        self.response_headers = []
        self.body = None
        self.admitted = started
        self.deadline = None
        self.max_body = None

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_asgi(
        cls,
        scope: Mapping[str, Any],
        resolver: ClientResolver | None = None,
        started: float = 0.0,
    ) -> RequestView:
        """Build a view from an ASGI HTTP or websocket *scope*."""
        return asgi_view(cls, scope, resolver, started)

    @classmethod
    def from_wsgi(
        cls,
        environ: Mapping[str, Any],
        resolver: ClientResolver | None = None,
        started: float = 0.0,
    ) -> RequestView:
        """Build a view from a WSGI *environ* (PEP 3333 latin-1 strings)."""
        return wsgi_view(cls, environ, resolver, started)

    # -- headers --------------------------------------------------------------

    def _header_map(self) -> dict[str, list[str]]:
        headers = self._headers
        if headers is None:
            headers = {}
            raw = self._raw_headers
            if raw is not None:
                raw_names = _RAW_NAMES
                for raw_name, raw_value in raw:
                    name = raw_names.get(raw_name)
                    if name is None:
                        name = raw_name.decode("latin-1").lower()
                    value = raw_value.decode("latin-1")
                    if name in headers:
                        headers[name].append(value)
                    else:
                        headers[name] = [value]
            elif self._wsgi is not None:
                environ = self._wsgi
                env_names = _ENV_NAMES
                for key in environ:
                    if key in _NOT_HEADER_KEYS:
                        continue
                    name = env_names.get(key)
                    if name is None:
                        if key.startswith("HTTP_"):
                            name = key[5:].replace("_", "-").lower()
                        else:
                            name = _CGI_NAMES.get(key)
                            if name is None or not environ[key]:
                                continue
                    # WSGI servers join repeated lines with ", " already.
                    value = environ[key]
                    if name in headers:
                        headers[name].append(value)
                    else:
                        headers[name] = [value]
            self._headers = headers
        return headers

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of header *name* (case-insensitive), or *default*."""
        values = self._header_map().get(name.lower())
        return values[0] if values else default

    def header_list(self, name: str) -> list[str]:
        """Return every value of header *name*, one per header line."""
        return list(self._header_map().get(name.lower(), ()))

    @property
    def headers(self) -> Mapping[str, list[str]]:
        """All headers: lower-case name to the list of its values."""
        return self._header_map()

    @property
    def header_count(self) -> int:
        """How many header lines the request has."""
        if self._raw_headers is not None:
            return len(self._raw_headers)
        return sum(len(v) for v in self._header_map().values())

    def header_totals(self) -> tuple[int, int, bool]:
        """Header lines, their total size, and whether a body is framed, in one pass.

        Returns ``(lines, size, framed)``: :attr:`header_count`, the summed
        length of every name and value in :attr:`headers`, and whether a
        ``Content-Length`` or ``Transfer-Encoding`` header is present. Nothing
        is decoded and no header map is built: size limits checked on every
        request need no more than this.
        """
        raw = self._raw_headers
        if raw is not None:
            size = 0
            framed = False
            for raw_name, raw_value in raw:
                # Byte lengths: latin-1 decoding and lower() keep every length.
                name_length = len(raw_name)
                size += name_length + len(raw_value)
                if name_length in _FRAMING_LENGTHS and raw_name.lower() in _FRAMING_RAW:
                    framed = True
            return len(raw), size, framed
        environ = self._wsgi
        if environ is None:
            return 0, 0, False
        lines = 0
        size = 0
        framed = False
        # The same keys as _header_map, one value each; names are the key
        # without "HTTP_" (5 characters, taken off once at the end). Set
        # lookups sort out the usual keys: a string slice costs five times more.
        for key in environ:
            if key in _TOTALS_SKIP:
                continue
            if key in _PLAIN_HEADER_KEYS:
                lines += 1
                size += len(key) + len(environ[key])
            elif key[:5] == "HTTP_":
                lines += 1
                size += len(key) + len(environ[key])
                if (
                    len(key) in _FRAMING_KEY_LENGTHS
                    and key[5:].replace("_", "-").lower() in _FRAMING
                ):
                    framed = True
        size -= 5 * lines
        value = environ.get("CONTENT_TYPE")
        if value:
            lines += 1
            size += 12 + len(value)  # "content-type"
        value = environ.get("CONTENT_LENGTH")
        if value:
            lines += 1
            size += 14 + len(value)  # "content-length"
            framed = True
        return lines, size, framed

    # -- identity -------------------------------------------------------------

    @property
    def client(self) -> str:
        """The client's IP address after the trusted-proxy rules (or ``"unknown"``)."""
        client = self._client
        if client is None:
            resolver = self._resolver
            if resolver is None:
                client = self.peer or UNKNOWN_CLIENT
                self._client = client
                return client
            if resolver.probes:
                resolver.probe(self)
            if not resolver.trusts_any:
                # What resolve() returns when no proxy is trusted, without
                # its call and the bound method it takes (the default
                # configuration: ~2k instructions a request less, measured).
                peer = self.peer
                client = (None if peer is None else normalize_address(peer)) or UNKNOWN_CLIENT
            else:
                client = resolver.resolve(self.peer, self._header_list_lower)
            self._client = client
        return client

    @property
    def client_key(self) -> str:
        """The client as a rate-limit key: the address, or its /64 for IPv6."""
        client = self._client
        if client is None:
            client = self.client
        if ":" not in client:
            return client
        resolver = self._resolver or _DEFAULT_RESOLVER
        return resolver.key_for(client)

    def _header_list_lower(self, name: str) -> list[str]:
        return self._header_map().get(name, [])

    # -- convenience ----------------------------------------------------------

    @property
    def target(self) -> str:
        """Path and query string, as the client sent them (for URL length checks)."""
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    def route_or_path(self) -> str:
        """The route template when known, else the raw path."""
        return self.route or self.path

    def after_response(self, callback: Callable[[RequestView, Any], None]) -> None:
        """Call ``callback(request, outcome)`` once this request has ended.

        The driver calls it after the last body byte (WSGI: at ``close()``),
        after the layers' ``on_complete`` hooks, with the same
        :class:`~seawall.Outcome`; an exception it raises is logged and
        ignored. For handler-level helpers, which are not layers of the
        stack: ``seawall.limit(..., count_when=...)`` counts this way.
        """
        callbacks = self.state.get(AFTER_RESPONSE)
        if callbacks is None:
            self.state[AFTER_RESPONSE] = [callback]
        else:
            callbacks.append(callback)

    def __repr__(self) -> str:
        return f"<RequestView {self.method} {self.path} id={self.request_id}>"


_DEFAULT_RESOLVER = ClientResolver()


# object.__new__ looked up once (a global read, not an attribute of a global).
_new = object.__new__


def asgi_view(
    cls: type[RequestView],
    scope: Mapping[str, Any],
    resolver: ClientResolver | None,
    started: float,
) -> RequestView:
    """:meth:`RequestView.from_asgi` as a plain function, for the drivers.

    A module function called by position costs less than a classmethod
    (measured: about 700 instructions a call less on CPython 3.11), and
    this runs once per request.
    """
    # Slots are filled directly: this runs once per request, and a
    # 15-keyword __init__ call costs more than everything else here.
    view = _new(cls)
    method = scope.get("method", "GET")
    view.method = method if method in _UPPER else method.upper()
    path = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        # The path inside the app, as Starlette routes it (the ASGI path
        # includes the root path the server or a proxy serves the app under).
        path = path[len(root) :] or "/"
    view.path = path
    view.query_string = scope.get("query_string", b"").decode("latin-1")
    view.scheme = scope.get("scheme", "http")
    view.root_path = root
    client = scope.get("client")
    view.peer = client[0] if client else None
    view._raw_headers = scope.get("headers") or []
    view._wsgi = None
    view._headers = None
    view._resolver = resolver
    view._client = None
    view.request_id = ""
    view.interface = "asgi"
    view.started = started
    view.admitted = started
    view.route = None
    view.raw = scope
    view.state = {}
    view.response_headers = []
    view.body = None
    view.deadline = None
    view.max_body = None
    return view


#: The methods as they usually come: anything else is upper-cased (a set
#: lookup costs less than a call). werkzeug and Django upper-case the method
#: before routing, and servers such as werkzeug's and wsgiref pass "post"
#: through: rules for "POST /login" must see it as POST.
_UPPER = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def wsgi_view(
    cls: type[RequestView],
    environ: Mapping[str, Any],
    resolver: ClientResolver | None,
    started: float,
) -> RequestView:
    """:meth:`RequestView.from_wsgi` as a plain function (see :func:`asgi_view`)."""
    script = environ.get("SCRIPT_NAME", "")
    # PATH_INFO: the path inside the app, as Flask and Django route it.
    path = environ.get("PATH_INFO", "")
    if not path.isascii():
        # Keep the latin-1 text rather than refuse a request that is not UTF-8.
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            path = path.encode("latin-1").decode("utf-8")
    view = _new(cls)
    method = environ.get("REQUEST_METHOD", "GET")
    view.method = method if method in _UPPER else method.upper()
    view.path = path or "/"
    view.query_string = environ.get("QUERY_STRING", "")
    view.scheme = environ.get("wsgi.url_scheme", "http")
    view.root_path = script
    view.peer = environ.get("REMOTE_ADDR") or None
    view._raw_headers = None
    view._wsgi = environ
    view._headers = None
    view._resolver = resolver
    view._client = None
    view.request_id = ""
    view.interface = "wsgi"
    view.started = started
    view.admitted = started
    view.route = None
    view.raw = environ
    view.state = {}
    view.response_headers = []
    view.body = None
    view.deadline = None
    view.max_body = None
    return view
