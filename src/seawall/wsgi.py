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
   by the unread rest, so the app reads the same bytes.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, Any

from seawall._app import Seawall
from seawall._core.decisions import ReadBody, ReplaceBody, Respond
from seawall._core.layer import Outcome, ResponseHead
from seawall._core.request import RequestView
from seawall._log import bind_request, unbind_request
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


def _get_header(items: list[tuple[str, str]], lname: str) -> str | None:
    for name, value in items:
        if name.lower() == lname:
            return value
    return None


def _apply(items: list[tuple[str, str]], head: ResponseHead) -> list[tuple[str, str]]:
    if head.removed:
        out = [(k, v) for k, v in items if k.lower() not in head.removed]
    else:
        out = list(items)
    out.extend(head.added)
    return out


class _Input:
    """``wsgi.input`` that gives back bytes already read, then the rest."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data = self._head.read()
            return data + (self._rest.read() if self._rest is not None else b"")
        data = self._head.read(size)
        if len(data) < size and self._rest is not None:
            data += self._rest.read(size - len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(-1 if size is None else size)
        if (
            line.endswith(b"\n")
            or self._rest is None
            or (size is not None and 0 <= size <= len(line))
        ):
            return line
        more = self._rest.readline(-1 if size is None or size < 0 else size - len(line))
        return line + bytes(more)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class _CountingInput:
    """``wsgi.input`` that stops the app with a 413 past *limit* bytes, without buffering."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._seen = 0

    def _count(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise BodyTooLarge(self._limit)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            # Never read an unbounded body whole: one byte past the limit decides.
            return self._count(self._stream.read(self._limit - self._seen + 1))
        return self._count(self._stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit - self._seen + 1
        return self._count(self._stream.readline(size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class _Request:
    """Per-request bookkeeping shared by ``start_response`` and the closing iterator."""

    __slots__ = (
        "depth",
        "ended",
        "exception",
        "finished",
        "responded_by",
        "sent_body",
        "started_response",
        "status",
        "tokens",
        "ttfb",
        "view",
    )

    def __init__(self, view: RequestView, tokens: Any) -> None:
        self.view = view
        self.tokens = tokens
        self.status: int | None = None
        self.ttfb: float | None = None
        self.ended: float | None = None
        self.exception: BaseException | None = None
        self.responded_by: str | None = None
        self.depth = 0
        self.sent_body = False
        self.started_response = False
        self.finished = False


class WSGIMiddleware(Seawall):
    """Seawall as WSGI middleware.

    Build it with :class:`~seawall.Seawall` (which picks this class for WSGI
    apps) or directly, with the same arguments.
    """

    interface = "wsgi"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one WSGI request."""
        started = perf_counter()
        stack = self.stack
        view = RequestView.from_wsgi(environ, resolver=self.resolver, started=started)
        rid = self.ids.accept(environ.get(self._rid_environ))
        view.request_id = rid
        environ["seawall.request_id"] = rid
        environ["seawall.request"] = view
        state = _Request(view, bind_request(view))
        rid_header = self._rid_header

        def body_io(effect: Any) -> Any:
            if isinstance(effect, ReadBody):
                return self._read_body(environ, effect.limit, view)
            if isinstance(effect, ReplaceBody):
                environ["wsgi.input"] = io.BytesIO(effect.body)
                environ["CONTENT_LENGTH"] = str(len(effect.body))
                environ.pop("HTTP_TRANSFER_ENCODING", None)
                if effect.content_type:
                    environ["CONTENT_TYPE"] = effect.content_type
                view.body = effect.body
                return None
            raise TypeError(type(effect).__name__)  # pragma: no cover

        try:
            respond, depth = run_request(stack, view, body_io)
        except BaseException:
            unbind_request(state.tokens)
            raise
        state.depth = depth
        if respond is not None:
            state.responded_by = stack.names[depth]
            return self._own_response(state, respond, start_response, None)

        view.admitted = perf_counter()
        if view.max_body is not None and view.body is None and "wsgi.input" in environ:
            environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], view.max_body)

        def wrapped_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            code = int(status[:3])
            head = ResponseHead(code, headers, _get_header)
            if view.response_headers:
                head.extend(view.response_headers)
            stack.on_response(view, head, depth)
            head.set(rid_header, rid)
            state.status = code
            state.ttfb = perf_counter()
            state.started_response = True
            return start_response(status, _apply(headers, head), exc_info)

        try:
            result = self.app(environ, wrapped_start_response)
        except Rejected as exc:
            state.exception = exc
            rendered = Respond.from_rejection(exc, instance=view.path, request_id=rid)
            return self._own_response(state, rendered, start_response, self._exc_info(state))
        except Exception as exc:
            state.exception = exc
            answer = stack.on_exception(view, exc, depth)
            if answer is None:
                self._finish(state)
                raise
            return self._own_response(state, answer, start_response, self._exc_info(state))
        except BaseException:
            self._finish(state)
            raise

        wrapper_cls = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper_cls, type) and isinstance(result, wrapper_cls):
            original_close = getattr(result, "close", None)

            def close() -> None:
                try:
                    if original_close is not None:
                        original_close()
                finally:
                    state.ended = perf_counter()
                    self._finish(state)

            try:
                result.close = close  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            else:
                return result  # type: ignore[return-value]
        return _ClosingIterator(self, state, result, start_response)

    @staticmethod
    def _exc_info(state: _Request) -> Any:
        # PEP 3333: exc_info only when start_response was already called
        # (it lets us replace those headers); a first call passes none, or
        # servers and test transports re-raise the app's exception.
        return sys.exc_info() if state.started_response else None

    def _own_response(
        self, state: _Request, respond: Respond, start_response: StartResponse, exc_info: Any
    ) -> Iterable[bytes]:
        view = state.view
        head = ResponseHead(respond.status, respond.headers, None)
        head.extend(view.response_headers)
        self.stack.on_response(view, head, state.depth)
        head.set(self._rid_header, view.request_id)
        headers = [
            ("Content-Type", respond.content_type),
            ("Content-Length", str(len(respond.body))),
            *respond.headers,
            *head.added,
        ]
        state.status = respond.status
        state.ttfb = perf_counter()
        state.started_response = True
        try:
            start_response(_status_line(respond.status), headers, exc_info)
        except BaseException:
            self._finish(state)
            raise
        return _ClosingIterator(self, state, [respond.body], start_response)

    def _finish(self, state: _Request) -> None:
        if state.finished:
            return
        state.finished = True
        view = state.view
        now = perf_counter()
        template = view.route or view.raw.get("seawall.route")
        outcome = Outcome(
            status=state.status,
            exception=state.exception,
            duration=(state.ended or now) - view.started,
            ttfb=None if state.ttfb is None else state.ttfb - view.started,
            route=str(template or view.path),
            responded_by=state.responded_by,
            disconnected=state.ended is None and state.exception is None,
            timed_out=view.deadline is not None
            and (state.ended or now) - view.admitted > view.deadline,
            templated=template is not None,
        )
        try:
            self.stack.on_complete(view, outcome, state.depth)
        finally:
            unbind_request(state.tokens)

    @staticmethod
    def _read_body(environ: WSGIEnvironment, limit: int, view: RequestView) -> bytes | None:
        stream = environ.get("wsgi.input")
        if stream is None:
            view.body = b""
            return b""
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length >= 0:
            want = min(length, limit + 1)
        else:
            # Chunked or unknown length: never read more than one byte past the limit.
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
            rest = stream if got < length else None
        else:
            rest = stream if got >= want else None
        environ["wsgi.input"] = _Input(data, rest)
        if not complete:
            return None
        view.body = data
        return data


class _ClosingIterator:
    """Yield the app's chunks as they come; finish the bookkeeping on ``close()``."""

    __slots__ = ("_driver", "_iter", "_result", "_start_response", "_state")

    def __init__(
        self,
        driver: WSGIMiddleware,
        state: _Request,
        result: Iterable[bytes],
        start_response: StartResponse,
    ) -> None:
        self._driver = driver
        self._state = state
        self._result = result
        self._iter: Iterator[bytes] | None = None
        self._start_response = start_response

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        state = self._state
        if self._iter is None:
            self._iter = iter(self._result)
        try:
            chunk = next(self._iter)
        except StopIteration:
            state.ended = perf_counter()
            raise
        except Rejected as exc:
            state.exception = exc
            if state.sent_body:
                raise
            rendered = Respond.from_rejection(
                exc, instance=state.view.path, request_id=state.view.request_id
            )
            return self._replace(rendered)
        except Exception as exc:
            state.exception = exc
            answer = self._driver.stack.on_exception(state.view, exc, state.depth)
            if answer is None or state.sent_body:
                raise
            return self._replace(answer)
        if chunk:
            state.sent_body = True
        return chunk

    def _replace(self, answer: Respond) -> bytes:
        # Nothing was sent yet: PEP 3333 lets us call start_response again
        # with exc_info, which replaces the headers the app gave.
        state = self._state
        head = ResponseHead(answer.status, answer.headers, None)
        head.set(self._driver._rid_header, state.view.request_id)
        headers = [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
            *head.added,
        ]
        exc_info = sys.exc_info() if state.started_response else None
        self._start_response(_status_line(answer.status), headers, exc_info)
        state.status = answer.status
        self._iter = iter(())
        state.sent_body = True
        return answer.body

    def close(self) -> None:
        """Close the app's iterable (always), then finish the request's bookkeeping."""
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._driver._finish(self._state)
