"""Run the layers' request phase: the only place sync and async differ.

``run_flow``/``arun_flow`` drive one layer flow, running each effect it
yields with the sync or async client and sending the result back in (a
:class:`~seawall.exceptions.StorageError` is thrown in instead, so the layer
applies its failure policy). Effects that touch the request itself
(:class:`ReadBody`, :class:`ReplaceBody`) go to the driver's *body_io*.

``run_request``/``arun_request`` run every layer's ``on_request`` in order and
return ``(respond, depth)``: the response to send (``None``: call the app) and
the index of the layer that answered.

A request stopped while its layers are still deciding (the task cancelled
during a layer's I/O, a gevent ``Timeout``, a layer's error under
``on_layer_error="raise"``) returns no depth: the exception goes up instead.
Layers before the one that was running may already hold something for the
request (a shedding slot, a concurrency slot, a breaker's probe), and only
``on_complete`` gives it back. So the runners record the index of the layer
they were in on *progress* (the driver's per-request object, as its
``depth``) when an exception passes through them, and the driver tells every
layer up to that one. The record is made in an ``except`` clause, which costs
nothing on CPython 3.11+ until something is raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import GeneratorType
from typing import Any

from seawall._core.decisions import CONTINUE, ReadBody, ReplaceBody, Respond
from seawall._core.request import RequestView
from seawall._core.stack import Stack
from seawall.exceptions import Rejected

__all__ = ["arun_flow", "arun_request", "run_flow", "run_request", "start_request"]

BodyIO = Callable[[Any], Any]
AsyncBodyIO = Callable[[Any], Awaitable[Any]]

_BODY_EFFECTS = (ReadBody, ReplaceBody)


def _no_body_io(effect: Any) -> Any:
    msg = f"this driver cannot run {type(effect).__name__}"
    raise RuntimeError(msg)


async def _no_abody_io(effect: Any) -> Any:
    return _no_body_io(effect)


def run_flow(flow: Any, body_io: BodyIO = _no_body_io) -> Any:
    """Drive *flow* to its decision, running its effects synchronously."""
    try:
        effect = next(flow)
        while True:
            try:
                if isinstance(effect, _BODY_EFFECTS):
                    result = body_io(effect)
                else:
                    result = effect.run()
            except Exception as exc:
                effect = flow.throw(exc)
            else:
                effect = flow.send(result)
    except StopIteration as stop:
        return stop.value


async def arun_flow(flow: Any, body_io: AsyncBodyIO = _no_abody_io) -> Any:
    """Drive *flow* to its decision, awaiting its effects on the event loop."""
    try:
        effect = next(flow)
        while True:
            try:
                if isinstance(effect, _BODY_EFFECTS):
                    result = await body_io(effect)
                else:
                    result = await effect.arun()
            except Exception as exc:
                effect = flow.throw(exc)
            else:
                effect = flow.send(result)
    except StopIteration as stop:
        return stop.value


def _render(exc: Rejected, request: RequestView) -> Respond:
    return Respond.from_rejection(exc, instance=request.path, request_id=request.request_id)


def run_request(
    stack: Stack, request: RequestView, body_io: BodyIO = _no_body_io, progress: Any = None
) -> tuple[Respond | None, int]:
    """Run every ``on_request`` hook (sync effects); return ``(respond, depth)``.

    If an exception escapes, ``progress.depth`` (when *progress* is given)
    is the index of the layer that was running.
    """
    index = 0
    try:
        for index, hook in stack._by_method[request.method]:
            try:
                decision = hook(request)
                if decision is None or decision is CONTINUE:
                    continue
                if type(decision) is GeneratorType:
                    decision = run_flow(decision, body_io)
                if isinstance(decision, Respond):
                    return decision, index
            except Rejected as exc:
                return _render(exc, request), index
            except Exception as exc:
                stack.layer_failed(index, "on_request", exc)
    except BaseException:
        if progress is not None:
            progress.depth = index
        raise
    return None, stack._depth


def start_request(
    stack: Stack, request: RequestView, progress: Any = None
) -> tuple[Respond | None, int, Any]:
    """
    Run ``on_request`` hooks synchronously until one yields an effect.

    Returns ``(respond, depth, flow)``: *flow* is the generator that needs
    the event loop (finish it with :func:`arun_request`), else ``None``. Most
    requests need no I/O at all, and this spares them a coroutine. If an
    exception escapes, ``progress.depth`` is the index of the layer that was running.
    """
    index = 0
    try:
        for index, hook in stack._by_method[request.method]:
            try:
                decision = hook(request)
                if decision is None or decision is CONTINUE:
                    continue
                if type(decision) is GeneratorType:
                    return None, index, decision
                if isinstance(decision, Respond):
                    return decision, index, None
            except Rejected as exc:
                return _render(exc, request), index, None
            except Exception as exc:
                stack.layer_failed(index, "on_request", exc)
    except BaseException:
        if progress is not None:
            progress.depth = index
        raise
    return None, stack._depth, None


async def arun_request(
    stack: Stack,
    request: RequestView,
    body_io: AsyncBodyIO = _no_abody_io,
    *,
    start: int = 0,
    flow: Any = None,
    progress: Any = None,
) -> tuple[Respond | None, int]:
    """
    Run the ``on_request`` hooks (async effects); return ``(respond, depth)``.

    *start* and *flow* resume after :func:`start_request` stopped at a flow.
    If an exception escapes (the task cancelled during a layer's I/O),
    ``progress.depth`` is the index of the layer that was running.
    """
    index = start
    try:
        for index, hook in stack._by_method[request.method]:
            if index < start:
                continue
            try:
                if flow is not None:
                    decision, flow = flow, None
                else:
                    decision = hook(request)
                if decision is None or decision is CONTINUE:
                    continue
                if type(decision) is GeneratorType:
                    decision = await arun_flow(decision, body_io)
                if isinstance(decision, Respond):
                    return decision, index
            except Rejected as exc:
                return _render(exc, request), index
            except Exception as exc:
                stack.layer_failed(index, "on_request", exc)
    except BaseException:
        if progress is not None:
            progress.depth = max(progress.depth, index)
        raise
    return None, stack._depth
