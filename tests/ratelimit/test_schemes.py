"""The storage URI schemes besides redis://: valkey://, redis+unix://, and limits' others."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall import ConfigurationError, RateLimit
from tests.apps import client_for, wrap
from tests.redis_topologies.servers import RedisProcess, free_port, require_binary


def _statuses(interface: str, layer: RateLimit, n: int) -> list[int]:
    with client_for(wrap(interface, [layer])) as client:
        return [client.get("/").status_code for _ in range(n)]


def test_valkey_scheme_runs_on_redis_py(interface: str, redis_url: str, key_prefix: str) -> None:
    """valkey:// needs no extra client package: redis-py speaks to it (here: the real server)."""
    uri = redis_url.replace("redis://", "valkey://", 1)
    layer = RateLimit(
        "3/minute",
        storage=uri,
        key_prefix=key_prefix,
        storage_timeout=1.0,
        on_storage_error="deny",
    )
    assert _statuses(interface, layer, 5) == [200, 200, 200, 429, 429]
    assert layer.stats()["storage_errors"] == 0


@pytest.fixture
def unix_redis() -> Iterator[Path]:
    """A private redis-server listening on a unix socket; yields the socket path."""
    require_binary()
    workdir = Path(tempfile.mkdtemp(prefix="seawall-unix-"))
    sock = workdir / "redis.sock"
    server = RedisProcess(
        free_port(), workdir, "--unixsocket", str(sock), "--unixsocketperm", "700"
    )
    server.start()
    yield sock
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("strategy", ["moving-window", "gcra"])
def test_redis_unix_socket(interface: str, unix_redis: Path, strategy: str) -> None:
    """redis+unix:// reaches Redis over its socket, sync and async alike."""
    layer = RateLimit(
        "2/minute",
        strategy=strategy,
        storage=f"redis+unix://{unix_redis}",
        storage_timeout=1.0,
        on_storage_error="deny",
    )
    assert _statuses(interface, layer, 4) == [200, 200, 429, 429]
    assert layer.stats()["storage_errors"] == 0


def test_limits_storage_without_its_client_fails_at_startup() -> None:
    """A limits scheme whose client library is missing is refused when the layer is built."""
    pytest.importorskip("limits")
    try:
        import memcachio  # noqa: F401
        import pymemcache  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("memcached clients are installed here")
    with pytest.raises(ConfigurationError, match="memcached:// needs"):
        RateLimit("1/second", storage="memcached://127.0.0.1:11211")


def test_unknown_scheme_is_refused() -> None:
    """A typo in the scheme fails loudly, listing the supported ones."""
    with pytest.raises(ConfigurationError, match="unknown scheme 'redsi'"):
        RateLimit("1/second", storage="redsi://127.0.0.1:6379")
