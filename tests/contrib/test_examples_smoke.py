"""Every example under a real server (uvicorn for ASGI, gunicorn for WSGI) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent

# name -> (server, directory, target)
SERVERS = {
    "flask_app": ("gunicorn", EXAMPLES, "flask_app:app"),
    "plain_wsgi": ("gunicorn", EXAMPLES, "plain_wsgi:app"),
    "falcon_app": ("gunicorn", EXAMPLES, "falcon_app:app"),
    "django_wsgi": ("gunicorn", EXAMPLES / "django_project", "mysite.wsgi:application"),
    "fastapi_app": ("uvicorn", EXAMPLES, "fastapi_app:app"),
    "plain_asgi": ("uvicorn", EXAMPLES, "plain_asgi:app"),
    "litestar_app": ("uvicorn", EXAMPLES, "litestar_app:app"),
    "django_asgi": ("uvicorn", EXAMPLES / "django_project", "mysite.asgi:application"),
}

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str) -> tuple[subprocess.Popen[bytes], str]:
    kind, directory, target = SERVERS[name]
    port = free_port()
    if kind == "gunicorn":
        cmd = [
            str(BIN / "gunicorn"),
            "--chdir",
            str(directory),
            "-w",
            "1",
            "--threads",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "2",
            target,
        ]
    else:
        cmd = [
            str(BIN / "uvicorn"),
            "--app-dir",
            str(directory),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            target,
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """Start every example at once (startup dominates), each on a free port; always stop them."""
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    ready: dict[str, str] = {}
    try:
        for name in SERVERS:
            procs[name] = start(name)
        deadline = time.monotonic() + 90
        while len(ready) < len(procs) and time.monotonic() < deadline:
            for name, (proc, base) in procs.items():
                if name in ready or proc.poll() is not None:
                    continue
                try:
                    httpx.get(base + "/health/live", timeout=1.0)
                except httpx.TransportError:
                    continue
                ready[name] = base
            if len(ready) < len(procs):
                time.sleep(0.1)
        for name, (proc, _) in procs.items():
            if name not in ready:
                proc.kill()
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                ready[name] = "failed: " + err[-2000:]
        yield ready
    finally:
        for proc, _ in procs.values():
            stop(proc)


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, servers: dict[str, str]) -> str:
    """The base URL of one running example."""
    base = servers[request.param]
    if not base.startswith("http"):
        pytest.fail(f"{request.param} did not start:\n{base}")
    return base


def test_example_serves_through_the_wall(server: str) -> None:
    """A few requests: health, a normal answer with our headers, a captured error."""
    with httpx.Client(base_url=server, timeout=30.0) as client:
        health = client.get("/health/live")
        assert health.status_code == 200
        assert health.headers["content-type"].startswith("application/health+json")

        ok = client.get("/", headers={"X-Request-ID": "smoke-1"})
        assert ok.status_code == 200
        assert ok.headers["x-request-id"] == "smoke-1"
        assert ok.json()["request_id"] == "smoke-1"
        assert "server-timing" in ok.headers

        boom = client.get("/boom")
        assert boom.status_code == 500
        assert boom.headers["content-type"] == "application/problem+json"
        assert "something broke" not in boom.text
        assert boom.json()["request_id"] == boom.headers["x-request-id"]


@pytest.fixture(params=["flask_app", "django_wsgi", "django_asgi", "fastapi_app"])
def framework_server(request: pytest.FixtureRequest, servers: dict[str, str]) -> str:
    """The base URL of one running framework example (they have the decorated routes)."""
    base = servers[request.param]
    if not base.startswith("http"):
        pytest.fail(f"{request.param} did not start:\n{base}")
    return base


def test_example_decorators_under_a_real_server(framework_server: str) -> None:
    """limit, validate (with sanitizing) and exempt, as each framework's example wires them."""
    with httpx.Client(base_url=framework_server, timeout=30.0) as client:
        logins = [client.post("/login").status_code for _ in range(6)]
        assert logins == [200] * 5 + [429]
        refused = client.post("/login")
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) > 0

        created = client.post("/items", json={"name": "<script>x()</script>bob"})
        assert created.status_code == 201
        assert created.json()["created"] == "bob"
        bad = client.post("/items", json={"title": "no name"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"

        status = client.get("/status")
        assert status.status_code == 200
        assert "ratelimit" not in status.headers  # exempt: no rate limit layer
        assert "server-timing" in status.headers  # but still timed
