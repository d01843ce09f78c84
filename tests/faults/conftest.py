"""A dedicated redis-server per test on a spare port (never the shared one on 6379)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_topologies.servers import RedisProcess, free_port, require_binary


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of our own, which the test may kill, pause and restart."""
    require_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seawall-faults-"))
    server = RedisProcess(free_port(), workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
