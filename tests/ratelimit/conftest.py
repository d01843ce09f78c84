"""Helpers of the rate-limit tests (private redis-servers: tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.redis_topologies.servers import free_port


def redis_wall(interface: str, limit: str, redis_url: str, key_prefix: str, **options: Any) -> Any:
    """The twin app for *interface* under one RateLimit on the real Redis.

    The storage timeout is 1 s, not 20 ms: a loaded CI machine must not turn
    a slow reply into the failure policy.
    """
    from seawall import RateLimit
    from tests.apps import wrap

    layer = RateLimit(
        limit, storage=redis_url, key_prefix=key_prefix, storage_timeout=1.0, **options
    )
    return wrap(interface, [layer])


@contextmanager
def serve(tmp_path: Path, source: str, argv: list[str]) -> Iterator[str]:
    """Run ``python -m <argv>`` on a free port of 127.0.0.1, serving *source* as ``app.py``.

    ``{port}`` in *argv* is filled in; the repository is importable too (for
    ``tests.*``). Yields ``127.0.0.1:<port>`` once the port accepts
    connections; the server's stderr is in ``tmp_path / "server.log"``
    after the block (the server is stopped by then).
    """
    (tmp_path / "app.py").write_text(source)
    port = free_port()
    root = str(Path(__file__).resolve().parents[2])
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *(arg.format(port=port) for arg in argv)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
