"""Session-scoped Redis Cluster (7000-7002) and Sentinel (6391 + 26391), torn down after.

Started from the installed redis-server binary in temporary directories;
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

from tests.redis_topologies.servers import RedisCluster, RedisSentinel, require_binary

CLUSTER_PORTS = (7000, 7001, 7002)
SENTINEL_MASTER_PORT, SENTINEL_PORT = 6391, 26391


def _start_or_skip(what: str, start: object) -> None:
    try:
        start()  # type: ignore[operator]
    except RuntimeError as exc:
        if os.environ.get("SEAWALL_REQUIRE_REDIS"):
            pytest.fail(f"could not start the Redis {what}: {exc}")
        pytest.skip(f"could not start the Redis {what}: {exc}")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on 127.0.0.1:7000-7002."""
    require_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seawall-cluster-"))
    cluster = RedisCluster(CLUSTER_PORTS, workdir)
    _start_or_skip("Cluster", cluster.start)
    yield cluster
    cluster.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """A master on 6391 watched by a sentinel on 26391 (service 'mymaster')."""
    require_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seawall-sentinel-"))
    setup = RedisSentinel(SENTINEL_MASTER_PORT, SENTINEL_PORT, workdir)
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
