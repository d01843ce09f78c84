"""Fixtures of the rate-limit tests: a private redis-server, a port nobody listens on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own, so command counts see only this test's traffic."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not os.path.exists(REDIS_SERVER):
            if os.environ.get("SEAWALL_REQUIRE_REDIS"):
                pytest.fail(f"SEAWALL_REQUIRE_REDIS is set but {REDIS_SERVER} is missing")
            pytest.skip(f"no redis-server binary at {REDIS_SERVER}")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        msg = f"redis-server on port {self.port} did not start"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A started redis-server on a free port, stopped after the test."""
    server = PrivateRedis(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unstarted_redis() -> Iterator[PrivateRedis]:
    """A free port where the test may start a redis-server later (an outage first)."""
    server = PrivateRedis(free_port())
    yield server
    server.stop()


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
