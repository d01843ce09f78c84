"""The WSGI driver (PEP 3333).

Theory of operation:

1. ``start_response`` is wrapped so the layers' header edits apply to the
   app's status line and headers; ``exc_info`` is passed through untouched.
2. The app's iterable is returned inside a closing iterator that never
   buffers: it yields each chunk as the app produces it, and its ``close()``
   always calls the app iterable's ``close()``, then finishes the request's
   bookkeeping (``on_complete``), so timing and breakers see the real end.
3. ``wsgi.file_wrapper`` responses are handed back as they are, with our
   bookkeeping attached to their ``close()``, so servers keep their
   ``sendfile`` fast path.
4. An exception before any body byte is sent becomes the problem response
   (``start_response`` is called with ``exc_info``, as PEP 3333 asks); after
   that it is logged and re-raised so the server aborts the response.
5. The request body is read only when a layer yields :class:`ReadBody`, up
   to its limit; ``wsgi.input`` is then replaced by the bytes read followed
   by the unread rest, so the app reads the same bytes. Never past
   ``CONTENT_LENGTH`` (PEP 3333): a server such as ``wsgiref`` hands over the
   socket itself, where a read past the body waits for bytes that never
   come. For the same reason a request with no length whose server does not
   mark the stream's end (``wsgi.input_terminated``) has no body we read
   when its stream is a socket's (wsgiref: what follows is the chunk
   framing, then nothing), as werkzeug decides for every such request.
   Other streams (a test transport's in-memory body) are read to their end.
6. A list or tuple from the app keeps its length on the iterable the server
   gets (servers add ``Content-Length`` to a one-chunk answer).
7. A request stopped while its layers decide (a gevent ``Timeout``, a
   layer's error under ``on_layer_error="raise"``) still tells every layer
   that saw it (:mod:`seawall._run`).
"""

from __future__ import annotations

import io
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, Any

from seawall._app import Seawall
from seawall._core.decisions import ReadBody, ReplaceBody, Respond
from seawall._core.layer import Outcome, ResponseHead
from seawall._core.request import RequestView, wsgi_view
from seawall._log import (
    reset_current,
    reset_structlog_request_id,
    set_current,
    set_structlog_request_id,
)
from seawall._run import run_request
from seawall.asgi import BodyTooLarge
from seawall.exceptions import Rejected

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["WSGIMiddleware"]


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


# Status lines seen -> their code: a dict lookup where int(status[:3]) would
# slice, parse and allocate on every response. Bounded: apps send a handful.
_STATUS_CODES: dict[str, int] = {}


def _status_code(status: str) -> int:
    code = int(status[:3])
    if len(_STATUS_CODES) < 256:
        _STATUS_CODES[status] = code
    return code


def _get_header(items: list[tuple[str, str]], lname: str) -> str | None:
    for name, value in items:
        if name.lower() == lname:
            return value
    return None


def _apply(items: list[tuple[str, str]], head: ResponseHead) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in items if k.lower() not in head.removed]
    out.extend(head.added)
    return out


def _content_length(environ: WSGIEnvironment) -> int | None:
    """The body's length as ``CONTENT_LENGTH`` says, or ``None`` if it does not (validly)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        return None
    return length if length >= 0 else None


def _may_block(stream: Any) -> bool:
    """Whether reading *stream* past the body's end could wait forever (a socket's).

    ``wsgiref`` passes the connection's own reader. In-memory streams (test
    transports that send no length, such as httpx's) end with the body.
    """
    raw = getattr(stream, "raw", stream)
    return isinstance(raw, socket.SocketIO) or isinstance(stream, socket.socket)


def _unframed(environ: WSGIEnvironment, stream: Any) -> bool:
    """A body of unknown length with no marked end on a stream that may block: none to read."""
    return not environ.get("wsgi.input_terminated") and _may_block(stream)


class _Input:
    """``wsgi.input`` that gives back bytes already read, then the rest.

    *left*: how many bytes the rest holds (``CONTENT_LENGTH`` minus what was
    read), ``None`` if the stream itself ends with the body. Reads stop
    there: past it, a socket's reader waits for bytes that never come.
    """

    def __init__(self, head: bytes, rest: Any, left: int | None = None) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest
        self._left = left

    def _more(self, size: int) -> bytes:
        """At most *size* bytes (all, if negative) of the rest."""
        rest, left = self._rest, self._left
        if rest is None:
            return b""
        if left is not None:
            size = left if size < 0 else min(size, left)
            if size <= 0:
                return b""
        data = rest.read(size) if size >= 0 else rest.read()
        if left is not None:
            self._left = left - len(data)
        return bytes(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._head.read() + self._more(-1)
        data = self._head.read(size)
        if len(data) < size:
            data += self._more(size - len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(-1 if size is None else size)
        if (
            line.endswith(b"\n")
            or self._rest is None
            or (size is not None and 0 <= size <= len(line))
        ):
            return line
        want = -1 if size is None or size < 0 else size - len(line)
        left = self._left
        if left is not None:
            want = left if want < 0 else min(want, left)
            if want <= 0:
                return line
        more = bytes(self._rest.readline(want))
        if left is not None:
            self._left = left - len(more)
        return line + more

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # Django 6 asks before it seeks to measure a body.
        return False


class _CountingInput:
    """``wsgi.input`` that stops the app with a 413 past *limit* bytes, without buffering."""

    def __init__(self, stream: Any, limit: int, environ: WSGIEnvironment | None = None) -> None:
        self._stream = stream
        self._limit = limit
        self._seen = 0
        # For reads of no size only (rare): CONTENT_LENGTH is looked at then.
        self._environ = environ

    def _count(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise BodyTooLarge(self._limit)
        return data

    def _unsized(self) -> int:
        """How much a read of no size may ask for: to the body's end, one byte past the limit."""
        want = self._limit - self._seen + 1
        if self._environ is None:
            return want
        length = _content_length(self._environ)
        if length is not None:
            return max(0, min(want, length - self._seen))
        if _unframed(self._environ, self._stream):
            return 0
        return want

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            # Never read an unbounded body whole: one byte past the limit
            # decides; never past the body's end (PEP 3333).
            want = self._unsized()
            return self._count(self._stream.read(want)) if want else b""
        return self._count(self._stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._unsized()
            if not size:
                return b""
        return self._count(self._stream.readline(size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # Django 6 asks before it seeks to measure a body: counting needs
        # every byte to pass through read().
        return False

    def close(self) -> None:
        # Django closes request._stream; this wraps it there too.
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _NoLength(AttributeError, TypeError):
    """The iterable has no length: what ``hasattr`` and ``len()`` both take for "none".

    ``hasattr(it, "__len__")`` (waitress) hides an ``AttributeError`` only;
    ``len()`` callers (wsgiref) and ``list()``'s length hint expect a
    ``TypeError``, as a generator gives.
    """


class _Length:
    """``__len__`` of the iterable the server gets: the app's list's or tuple's, else none.

    Servers add ``Content-Length`` to a one-chunk answer by its ``len()``
    (PEP 3333; wsgiref, waitress), else they go chunked or close-delimited.
    A descriptor: the length is looked up only when a server asks, so the
    request path pays nothing, and an app's generator gets no length (a
    plain ``__len__`` would have to claim one).
    """

    def __get__(self, state: Any, owner: Any = None) -> Any:
        if state is None:
            return self
        try:
            result = state.result
        except AttributeError:
            result = None
        if isinstance(result, (list, tuple)):
            return result.__len__
        raise _NoLength("__len__")


class _Request:
    """Per-request bookkeeping, and the closing iterable handed to the server.

    As the iterable it yields the app's chunks (``result``) as they come and
    finishes the bookkeeping on ``close()``; being one object with the
    bookkeeping spares an allocation per request. ``__iter__`` is a generator
    function, so ``iter()`` makes the generator with no Python frame of its
    own and each chunk costs a generator step rather than a Python
    ``__next__`` call; ``close()`` lives here, not in the generator, because
    a generator that never started ignores close().

    Slotted, with no ``__init__``: the driver sets the fields itself, which
    spares the Python frame ``type.__call__`` would run ``__init__`` in
    (a C-to-Python call, not an inlined one). On CPython
    3.11 a read that falls back to a class-level default is an unspecialised
    lookup, a slot read is not, and a slotted instance allocates no
    ``__dict__``. Fields the common path sets anyway get no default:
    ``status`` and ``ttfb`` (set when the response starts), ``ended`` (set
    when the app's iterable is exhausted), ``depth`` and ``result``; reads
    that may find them unset catch ``AttributeError`` (a 3.11 ``try`` costs
    nothing when nothing is raised). ``holder`` is ``None`` once finished.
    """

    __slots__ = (
        "depth",
        "ended",
        "environ",
        "exception",
        "holder",
        "log_token",
        "responded_by",
        "result",
        "rid_token",
        "server_start_response",
        "status",
        "ttfb",
        "view",
        "wall",
    )

    wall: WSGIMiddleware
    view: RequestView
    environ: WSGIEnvironment
    server_start_response: StartResponse
    holder: list[RequestView | None] | None
    log_token: Any
    rid_token: Any
    exception: BaseException | None
    responded_by: str | None
    depth: int
    result: Iterable[bytes]
    status: int | None
    ttfb: float
    ended: float

    __len__ = _Length()

    def __bool__(self) -> bool:
        # With a __len__, truth would be len() != 0: an empty list's answer
        # is still an answer (and a generator's has no len() at all).
        return True

    def __call__(self, effect: Any) -> Any:
        """Run :class:`ReadBody`/:class:`ReplaceBody` for the layers (the ``body_io``).

        The object itself is the ``body_io`` given to ``run_request``: a bound
        method would be made on every request, for effects few stacks have.
        """
        environ, view = self.environ, self.view
        if isinstance(effect, ReadBody):
            return WSGIMiddleware._read_body(environ, effect.limit, view)
        if isinstance(effect, ReplaceBody):
            environ["wsgi.input"] = io.BytesIO(effect.body)
            environ["CONTENT_LENGTH"] = str(len(effect.body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ.pop("HTTP_CONTENT_ENCODING", None)
            if effect.content_type:
                environ["CONTENT_TYPE"] = effect.content_type
            view.body = effect.body
            return None
        raise TypeError(type(effect).__name__)  # pragma: no cover

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
        code: int | None = None,
    ) -> Callable[[bytes], object]:
        """The ``start_response`` the app gets: applies the layers' header edits.

        The server gets a new list of headers: the layers' edits, then the
        request id echoed if no header carries it. *headers* (a list, as
        PEP 3333 requires) is copied once, by the first edit that needs it.
        *code* is the driver's own: the status of a response it starts itself.
        The edits are here, not in a method of their own: this runs on every
        response (measured).
        """
        if code is None:
            code = _STATUS_CODES.get(status) or _status_code(status)
        self.status = code
        self.ttfb = perf_counter()
        wall, view = self.wall, self.view
        stack = wall.stack
        extra = view.response_headers
        out = headers
        # stack._response, not the has_response_hooks property: hot path.
        if stack._response:
            head = ResponseHead(code, headers, _get_header)
            if extra:
                head.added.extend(extra)
            stack.on_response(view, head, self.depth)
            # Most heads only gain lines: one list display, no call.
            out = _apply(headers, head) if head.removed else [*headers, *head.added]
        elif extra:
            # What a ResponseHead would give: no hook removes anything.
            out = [*headers, *extra]
        adders = stack._adders
        if adders:
            # Stack.add_headers inline (as in the ASGI driver): one call per
            # layer and no intermediate list, on every response (measured).
            depth = self.depth
            for index, hook in adders:
                if index <= depth:
                    try:
                        lines = hook(view, code)
                    except Exception as exc:
                        stack.layer_failed(index, "add_headers", exc)
                        continue
                    if lines:
                        if out is headers:
                            out = [*headers, *lines]
                        else:
                            out.extend(lines)
        lname = wall._rid_lower
        size = wall._rid_len
        for name, _ in out:
            # len() first: lower() allocates, and few names have the length.
            if len(name) == size and name.lower() == lname:
                if out is headers:
                    out = list(headers)
                break
        else:
            if out is headers:
                out = [*headers, (wall._rid_header, view.request_id)]
            else:
                out.append((wall._rid_header, view.request_id))
        return self.server_start_response(status, out, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        # Whether a body byte went out: a local, where a field would cost a
        # store per request and per chunk.
        sent = False
        try:
            for chunk in self.result:
                if chunk:
                    sent = True
                yield chunk
        except Rejected as exc:
            self.exception = exc
            if sent:
                raise
            view = self.view
            yield self._replace(
                Respond.from_rejection(exc, instance=view.path, request_id=view.request_id)
            )
            return
        except Exception as exc:
            self.exception = exc
            answer = self.wall.stack.on_exception(self.view, exc, self.depth)
            if answer is None or sent:
                raise
            yield self._replace(answer)
            return
        self.ended = perf_counter()

    def _replace(self, answer: Respond) -> bytes:
        # Nothing was sent yet: PEP 3333 lets us call start_response again
        # with exc_info, which replaces the headers the app gave.
        headers = [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
        ]
        started = hasattr(self, "ttfb")
        exc_info = sys.exc_info() if started else None
        # Through our start_response, as every answer of ours: the layers'
        # header edits (Server-Timing...) and the request id go on it too.
        self.start_response(_status_line(answer.status), headers, exc_info, answer.status)
        if not started:
            del self.ttfb  # the app never started a response: no time to first byte
        return b"" if self.environ.get("REQUEST_METHOD") == "HEAD" else answer.body

    def close(self) -> None:
        """Close the app's iterable (always), then finish the request's bookkeeping (once)."""
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            # The bookkeeping is inline, not a method call: close() runs on
            # every request (measured).
            holder = self.holder
            if holder is not None:
                self.holder = None
                stack = self.wall.stack
                try:
                    complete = stack._complete
                    view = self.view
                    # view.state: a handler may have asked for a callback (after_response).
                    if complete or view.state:
                        try:
                            ended: float | None = self.ended
                        except AttributeError:  # the iterable was not exhausted
                            ended = None
                        try:
                            status = self.status
                        except AttributeError:  # no response started
                            status = None
                        started = view.started
                        try:
                            ttfb: float | None = self.ttfb - started
                        except AttributeError:
                            ttfb = None
                        end = ended or perf_counter()
                        exception = self.exception
                        template = view.route or self.environ.get("seawall.route")
                        deadline = view.deadline
                        outcome = Outcome(
                            status,
                            exception,
                            end - started,
                            ttfb,
                            template or view.path,
                            self.responded_by,
                            ended is None and exception is None,
                            deadline is not None and end - view.admitted > deadline,
                            template is not None,
                        )
                        # Stack.on_complete inline, as in the ASGI driver: one
                        # call fewer per request.
                        depth = self.depth
                        for index, hook in complete:
                            if index <= depth:
                                try:
                                    hook(view, outcome)
                                except Exception as exc:
                                    stack.layer_failed(index, "on_complete", exc)
                        if view.state:
                            stack.after_response(view, outcome)
                finally:
                    # seawall._log.unbind_request inline (keep the two in step).
                    holder[0] = None
                    try:
                        reset_current(self.log_token)
                        reset_structlog_request_id(self.rid_token)
                    except ValueError:
                        # A WSGI server may call close() from another context:
                        # forget the id rather than fail the response.
                        set_current(None)
                        set_structlog_request_id(...)

    def finish(self) -> None:
        """Finish the bookkeeping of a request whose iterable the server never closes."""
        self.result = ()
        self.close()


def _finish_on_close(result: Any, state: _Request) -> bool:
    """Make the ``close()`` of a ``wsgi.file_wrapper`` response finish *state*.

    Whether it could (a wrapper whose ``close`` cannot be replaced gets the
    closing iterator instead). A function of its own: a closure in the
    driver would make its variables cells on every request (measured).
    """
    original_close = getattr(result, "close", None)

    def close() -> None:
        try:
            if original_close is not None:
                original_close()
        finally:
            state.ended = perf_counter()
            state.finish()

    try:
        result.close = close
    except (AttributeError, TypeError):
        return False
    return True


class WSGIMiddleware(Seawall):
    """Seawall as WSGI middleware.

    Build it with :class:`~seawall.Seawall` (which picks this class for WSGI
    apps) or directly, with the same arguments.
    """

    interface = "wsgi"

    #: Whether the app wants an unhandled exception raised out of it (Flask
    #: propagating in testing and debug mode, for the test or the debugger):
    #: then the layers see it (ErrorCapture logs it) and it is raised on
    #: instead of being answered here. Set by adapters; ``None``: never.
    app_renders_errors: Callable[[WSGIEnvironment, BaseException], bool] | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one WSGI request."""
        started = perf_counter()
        stack = self.stack
        view = wsgi_view(RequestView, environ, self.resolver, started)
        incoming = environ.get(self._rid_environ)
        # RequestIds.new inline, as in the ASGI driver: most requests bring no id.
        rid = next(self.ids._ids) if incoming is None else self.ids.accept(incoming)
        view.request_id = rid
        environ["seawall.request_id"] = rid
        state = _Request()
        state.wall = self
        state.view = view
        state.environ = environ
        state.server_start_response = start_response
        state.exception = None
        state.responded_by = None
        # seawall._log.bind_request inline (keep the two in step, as the ASGI
        # driver does): one call and one tuple fewer per request.
        holder: list[RequestView | None] = [view]
        state.holder = holder
        state.log_token = set_current(holder)
        state.rid_token = set_structlog_request_id(rid)

        if stack._by_method[view.method]:
            try:
                respond, depth = run_request(stack, view, state, state)
            except BaseException:
                # run_request recorded the layer it was in: every layer up to
                # it hears on_complete (a slot taken further out is given back).
                state.depth = getattr(state, "depth", 0)
                state.finish()
                raise
            state.depth = depth
            if respond is not None:
                state.responded_by = stack.names[depth]
                return self._own_response(state, respond, None)
        else:
            state.depth = stack._depth

        view.admitted = perf_counter()
        if view.max_body is not None and view.body is None and "wsgi.input" in environ:
            environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], view.max_body, environ)

        try:
            result = self.app(environ, state.start_response)
        except Rejected as exc:
            state.exception = exc
            rendered = Respond.from_rejection(exc, instance=view.path, request_id=rid)
            return self._own_response(state, rendered, self._exc_info(state))
        except Exception as exc:
            state.exception = exc
            answer = stack.on_exception(view, exc, state.depth)
            renders = self.app_renders_errors
            if answer is None or (renders is not None and renders(environ, exc)):
                state.finish()
                raise
            return self._own_response(state, answer, self._exc_info(state))
        except BaseException:
            state.finish()
            raise

        wrapper_cls = environ.get("wsgi.file_wrapper")
        if (
            wrapper_cls is not None
            and isinstance(wrapper_cls, type)
            and isinstance(result, wrapper_cls)
            and _finish_on_close(result, state)
        ):
            return result  # type: ignore[return-value]
        state.result = result
        return state

    @staticmethod
    def _exc_info(state: _Request) -> Any:
        # PEP 3333: exc_info only when start_response was already called
        # (it lets us replace those headers); a first call passes none, or
        # servers and test transports re-raise the app's exception.
        return sys.exc_info() if hasattr(state, "ttfb") else None

    def _own_response(self, state: _Request, respond: Respond, exc_info: Any) -> Iterable[bytes]:
        headers = [
            ("Content-Type", respond.content_type),
            ("Content-Length", str(len(respond.body))),
            *respond.headers,
        ]
        status = respond.status
        try:
            state.start_response(_status_line(status), headers, exc_info, status)
        except BaseException:
            state.finish()
            raise
        # A HEAD answer has the headers of a GET's, and no body (RFC 9110, 9.3.2).
        head = state.environ.get("REQUEST_METHOD") == "HEAD"
        state.result = [b"" if head else respond.body]
        return state

    @staticmethod
    def _read_body(environ: WSGIEnvironment, limit: int, view: RequestView) -> bytes | None:
        stream = environ.get("wsgi.input")
        if stream is None:
            view.body = b""
            return b""
        known = _content_length(environ)
        if known is None and _unframed(environ, stream):
            # No length and no marked end (wsgiref, chunked): what follows on
            # the socket is the framing, and then nothing. The app gets the
            # stream as it was.
            view.body = b""
            return b""
        length = -1 if known is None else known
        if length >= 0:
            want = min(length, limit + 1)
        else:
            # Chunked, its end marked: never read more than one byte past the limit.
            want = limit + 1
        chunks: list[bytes] = []
        got = 0
        while got < want:
            chunk = stream.read(min(65536, want - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        complete = got <= limit
        if length >= 0:
            environ["wsgi.input"] = _Input(data, stream if got < length else None, length - got)
        else:
            environ["wsgi.input"] = _Input(data, stream if got >= want else None)
        if not complete:
            return None
        view.body = data
        return data
