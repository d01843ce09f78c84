"""Session-scoped Redis Cluster (3 masters) and Sentinel (master + sentinel), torn down after.

Started from the installed redis-server binary in temporary directories, on
free ports picked at start (fixed ports collide with other runs on the host);
skipped with a reason when the binary is absent (failed under
SEAWALL_REQUIRE_REDIS).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_topologies.servers import (
    RedisCluster,
    RedisSentinel,
    free_cluster_ports,
    free_port,
    require_binary,
)


def _start_or_skip(what: str, start: object) -> None:
    try:
        start()  # type: ignore[operator]
    except RuntimeError as exc:
        if os.environ.get("SEAWALL_REQUIRE_REDIS"):
            pytest.fail(f"could not start the Redis {what}: {exc}")
        pytest.skip(f"could not start the Redis {what}: {exc}")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on three free ports of 127.0.0.1."""
    require_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seawall-cluster-"))
    cluster = RedisCluster(free_cluster_ports(3), workdir)
    _start_or_skip("Cluster", cluster.start)
    yield cluster
    cluster.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """A master watched by one sentinel (service 'mymaster'), on free ports."""
    require_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seawall-sentinel-"))
    setup = RedisSentinel(free_port(), free_port(), workdir)
    _start_or_skip("Sentinel setup", setup.start)
    yield setup
    setup.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["cluster", "sentinel"])
def topology_uri(request: pytest.FixtureRequest) -> str:
    """The storage URI of each topology in turn."""
    if request.param == "cluster":
        return request.getfixturevalue("redis_cluster").uri  # type: ignore[no-any-return]
    return request.getfixturevalue("redis_sentinel").uri  # type: ignore[no-any-return]
