"""Start throwaway redis-server processes (standalone, Cluster, Sentinel) for tests.

Only processes started here are ever signalled or stopped; the shared
server on 6379 is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def require_binary() -> None:
    """Skip (or fail, under SEAWALL_REQUIRE_REDIS) when redis-server is not installed."""
    if os.path.exists(REDIS_SERVER) and os.path.exists(REDIS_CLI):
        return
    reason = f"redis-server/redis-cli not found (looked for {REDIS_SERVER}, {REDIS_CLI})"
    if os.environ.get("SEAWALL_REQUIRE_REDIS"):
        pytest.fail(f"SEAWALL_REQUIRE_REDIS is set but {reason}")
    pytest.skip(f"{reason}; install Redis or set SEAWALL_REQUIRE_REDIS to make this fail")


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_ports(count: int) -> tuple[int, ...]:
    """*count* free ports whose Cluster bus ports (port + 10000) are free too.

    Random, not fixed: other test runs on the same machine must not collide.
    """
    import random

    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 50000)
        if port in ports or port + 10000 in ports:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        ports.append(port)
    return tuple(ports)


def ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def cli(port: int, *args: str, timeout: float = 10.0) -> str:
    out = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout + out.stderr


class RedisProcess:
    """One redis-server on *port*, with its files in *workdir*."""

    def __init__(
        self, port: int, workdir: Path | None = None, *extra: str, config: Path | None = None
    ) -> None:
        self.port = port
        # Its own directory unless given one (the server's log goes there).
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="seawall-redis-"))
        self.extra = extra
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / f"redis-{port}.log"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running server's process, or ``None``."""
        return self.proc

    @property
    def url(self) -> str:
        """The server's ``redis://`` URI (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        if port_in_use(self.port):
            msg = f"port {self.port} is already in use; cannot start a test redis-server there"
            raise RuntimeError(msg)
        args = [REDIS_SERVER]
        if self.config is not None:
            args.append(str(self.config))
        args += [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.log),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not answer: {self.tail()}")
            time.sleep(0.02)
        return self

    def tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the server dies without a word (connections reset)."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but never answers."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class RedisCluster:
    """Three masters (no replicas) on *ports*, joined with ``redis-cli --cluster create``."""

    def __init__(self, ports: tuple[int, ...], workdir: Path) -> None:
        self.nodes = []
        for port in ports:
            d = workdir / f"cluster-{port}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                RedisProcess(
                    port,
                    d,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                )
            )

    @property
    def uri(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 20.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            out = cli(
                self.nodes[0].port,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
                timeout=timeout,
            )
            deadline = time.monotonic() + timeout
            while not all("cluster_state:ok" in cli(n.port, "cluster", "info") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster did not become ok: {out}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinel:
    """One master on *master_port* watched by one sentinel on *sentinel_port*."""

    service = "mymaster"

    def __init__(self, master_port: int, sentinel_port: int, workdir: Path) -> None:
        self.master = RedisProcess(master_port, workdir)
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"sentinel monitor {self.service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 5000\n"
        )
        self.sentinel = RedisProcess(sentinel_port, workdir, "--sentinel", config=conf)

    @property
    def uri(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}"

    def start(self, timeout: float = 15.0) -> RedisSentinel:
        try:
            self.master.start()
            self.sentinel.start()
            deadline = time.monotonic() + timeout
            while str(self.master.port) not in cli(
                self.sentinel.port, "sentinel", "get-master-addr-by-name", self.service
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("sentinel never saw its master")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.stop()
