"""Writes seawall starts on an event loop and does not make a response wait for.

A ``count_when`` count on a remote storage and a circuit breaker's state
change in a shared store run as tasks after the response went out. asyncio
keeps only weak references to tasks, so they are held here until they end;
and at ASGI lifespan shutdown the driver waits for them (see
:func:`drain`), so a worker that stops does not drop the counts of its last
requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from seawall._log import logger

__all__ = ["SHUTDOWN_GRACE", "drain", "pending", "spawn"]

#: Seconds the ASGI driver gives background writes at lifespan shutdown,
#: after the requests in flight. Storage calls carry their own timeouts; this
#: only bounds a store that accepts a connection and then never answers.
SHUTDOWN_GRACE = 5.0

_running: set[asyncio.Task[Any]] = set()


def spawn(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    owner: set[asyncio.Task[Any]] | None = None,
) -> asyncio.Task[Any]:
    """Run *coro* as a task on *loop*, held until it ends (and in *owner*, if given)."""
    task = loop.create_task(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    task.add_done_callback(_report)
    if owner is not None:
        owner.add(task)
        task.add_done_callback(owner.discard)
    return task


def _report(task: asyncio.Task[Any]) -> None:
    # A failure nobody awaits: one structured line, instead of asyncio's
    # "exception was never retrieved" whenever the task is collected.
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        coro = task.get_coro()
        logger.error(
            "seawall.background.failed",
            task=getattr(coro, "__qualname__", repr(coro)),
            error=type(exc).__name__,
            exc_info=exc,
        )


def pending(tasks: set[asyncio.Task[Any]] | None = None) -> int:
    """How many of *tasks* (default: every background write) have not ended."""
    return len(_running if tasks is None else tasks)


async def drain(timeout: float | None = None, tasks: set[asyncio.Task[Any]] | None = None) -> bool:
    """Wait up to *timeout* s for the running loop's *tasks* (default: all); whether all ended.

    Tasks that do not end in time are left running, not cancelled: the loop
    may go on (tests), and a server that stops the loop cancels them itself.
    """
    loop = asyncio.get_running_loop()
    waiting = [t for t in (_running if tasks is None else tasks) if t.get_loop() is loop]
    if not waiting:
        return True
    _, late = await asyncio.wait(waiting, timeout=timeout)
    return not late
