"""Both drivers under a real server on 127.0.0.1: uvicorn (ASGI) and gunicorn (WSGI)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.server

APP = """
import asyncio, time
from seawall import Seawall, Timing, ErrorCapture

async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(3):
        await send({"type": "http.response.body", "body": b"x%d" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})

def wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"x0", b"x1", b"x2"]

asgi_app = Seawall(asgi, layers=[Timing(), ErrorCapture()])
wsgi_app = Seawall(wsgi, layers=[Timing(), ErrorCapture()])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["uvicorn", "gunicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path):
    (tmp_path / "srvapp.py").write_text(APP)
    port = free_port()
    if request.param == "uvicorn":
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "srvapp:asgi_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "srvapp:wsgi_app",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--log-level",
            "warning",
        ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            output = proc.stdout.read1().decode() if proc.stdout else ""
            pytest.fail(f"{request.param} did not start: {output}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_real_server(server: str) -> None:
    r = httpx.get(server + "/", headers={"X-Request-ID": "real-1"})
    assert r.status_code == 200
    assert r.text == "x0x1x2"
    assert r.headers["x-request-id"] == "real-1"
    assert "server-timing" in r.headers
    r = httpx.get(server + "/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["request_id"] == r.headers["x-request-id"]
