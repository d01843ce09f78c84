"""Warn when a per-process limit runs in several worker processes.

In-memory rate limits and concurrency limits are per process: under
``gunicorn -w 4`` or ``uvicorn --workers 4`` each worker keeps its own
counts, and a client gets up to four times the limit. That is documented,
but users of the peers keep finding it out in production, so seawall says
it once in the log.

Theory of operation:

1. The first in-memory layer of a kind built in a process arms one daemon
   timer (:func:`watch`); nothing runs on the request path.
2. When it fires (:data:`DELAY` seconds later, once the server has started
   its workers), it counts the processes serving this app: this one, and
   its siblings and children that run the same command line but for its
   numbers (psutil; forked workers run their master's, spawned ones differ
   only in file descriptor numbers), or ``WEB_CONCURRENCY`` if that says
   more.
3. More than one: ``seawall.workers.per_process_limits`` is logged once, as
   a warning, naming the layer kinds and the count. A server started with
   ``--preload`` builds the app in its master before forking: the master's
   timer sees the workers as its children.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from seawall._log import logger

__all__ = ["DELAY", "serving_processes", "watch"]

#: Seconds between building the first in-memory layer and counting workers:
#: servers start their workers together, within this.
DELAY = 2.0

_armed: set[str] = set()
_lock = threading.Lock()


def serving_processes() -> int:
    """How many processes look like workers of this app (at least 1).

    Counts this process and its siblings running the same command line (the
    workers, seen from one of them), or its children running it (a master
    that built the app before forking); ``WEB_CONCURRENCY`` if larger.
    """
    found = 1
    try:
        import psutil

        me = psutil.Process()
        command = _shape(me.cmdline())
        parent = me.parent()
        siblings = [] if parent is None else parent.children()
        same = [p for p in siblings if p.pid != me.pid and _runs(p, command)]
        children = [p for p in me.children() if _runs(p, command)]
        found = max(1 + len(same), len(children))
    except Exception:
        # psutil missing, a process gone or not ours to read: count what is known.
        found = 1
    try:
        declared = int(os.environ.get("WEB_CONCURRENCY", "1"))
    except ValueError:
        declared = 1
    return max(found, declared)


def _shape(command: list[str]) -> list[str]:
    # Spawned workers differ only in numbers: uvicorn --workers starts each
    # with its own spawn_main(tracker_fd=7, pipe_handle=9).
    return [_DIGITS("#", part) for part in command]


_DIGITS = re.compile(r"[0-9]+").sub


def _runs(process: Any, command: list[str]) -> bool:
    try:
        return _shape(process.cmdline()) == command
    except Exception:
        # The process ended, or is not ours to read.
        return False


def watch(kind: str) -> None:
    """Arm, once per process and *kind*, the check for several workers (see the module)."""
    with _lock:
        if kind in _armed:
            return
        first = not _armed
        _armed.add(kind)
    if first:
        timer = threading.Timer(DELAY, _check)
        timer.daemon = True
        timer.name = "seawall-workers"
        timer.start()


def _check() -> None:
    count = serving_processes()
    if count <= 1:
        return
    with _lock:
        kinds = sorted(_armed)
    logger.warning(
        "seawall.workers.per_process_limits",
        layers=kinds,
        processes=count,
        advice=(
            "in-memory limits are counted in each process: with several workers a "
            "client gets up to that many times the limit. Give the layer a shared "
            "storage (storage='redis://...') to count across workers"
        ),
    )
