"""Fixtures for the observability tests: samplers with made-up readings, a pausable Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from seawall._observe.sampler import ResourceSampler, Sample


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FrozenSampler(ResourceSampler):
    """A sampler that never reads the machine: its readings are the test's."""

    def ensure(self) -> None:
        pass

    def sample_now(self) -> Sample:
        assert self.latest is not None
        return self.latest


def make_sampler(**values: Any) -> ResourceSampler:
    """A sampler whose only reading has *values* (made now, and never replaced)."""
    sampler = FrozenSampler()
    sampler.record(Sample(time=time.monotonic(), **values))
    return sampler


class PausableRedis:
    """A dedicated redis-server on a spare port that a test can SIGSTOP."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            pytest.skip("redis-server binary not installed")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="seawall-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            self.close()
            pytest.fail("the dedicated redis-server did not start")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pausable_redis() -> Iterator[PausableRedis]:
    """A redis-server of this test's own (never the shared 6379 one)."""
    server = PausableRedis()
    try:
        yield server
    finally:
        server.close()
