"""The warning that in-memory limits are per process, with real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.drivers.test_servers import free_port

APP = """
from seawall import Seawall, RateLimit, ConcurrencyLimit

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

STORAGE = __STORAGE__
layers = [RateLimit("1000/minute", storage=STORAGE), ConcurrencyLimit(100, storage=STORAGE)]
wsgi_app = Seawall(app, layers=layers)
asgi_app = Seawall(asgi, layers=[RateLimit("1000/minute", storage=STORAGE)])
"""

EVENT = "seawall.workers.per_process_limits"


def serve(
    tmp_path: Path, server: str, workers: int, storage: str = "memory://", *extra: str
) -> str:
    """Run *server* with *workers* workers for the check's delay and a margin; its output."""
    (tmp_path / "wapp.py").write_text(APP.replace("__STORAGE__", repr(storage)))
    port = free_port()
    if server == "gunicorn":
        cmd = [sys.executable, "-m", "gunicorn", "wapp:wsgi_app", "-b", f"127.0.0.1:{port}",
               "-w", str(workers), "--log-level", "warning", *extra]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "uvicorn", "wapp:asgi_app", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers),
               "--log-level", "warning"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail(f"{server} did not start: {proc.communicate()[0]}")
        time.sleep(3.5)  # the check's DELAY (2 s) after the app was built, and a margin
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    return out


pytestmark = pytest.mark.server


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_several_workers_with_memory_limits_are_reported(tmp_path: Path, server: str) -> None:
    out = serve(tmp_path, server, workers=2)
    # Once per worker, naming the layers built on memory (the module builds
    # both apps) and the count. Counted in the text, not by line: two
    # workers writing to one pipe at once can run their lines together.
    assert out.count(EVENT) == 2, out
    expected = "layers=['ConcurrencyLimit', 'RateLimit'] processes=2"
    assert out.count(expected) == 2, out


def test_preloaded_app_is_reported_by_the_master(tmp_path: Path) -> None:
    """gunicorn --preload builds the app before forking: the master sees its workers."""
    out = serve(tmp_path, "gunicorn", 2, "memory://", "--preload")
    lines = [line for line in out.splitlines() if EVENT in line]
    assert len(lines) == 1, out
    assert "processes=2" in lines[0], out


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_one_worker_is_not_reported(tmp_path: Path, server: str) -> None:
    out = serve(tmp_path, server, workers=1)
    assert EVENT not in out, out


@pytest.mark.redis
def test_shared_storage_is_not_reported(tmp_path: Path, redis_url: str) -> None:
    out = serve(tmp_path, "uvicorn", workers=2, storage=redis_url)
    assert EVENT not in out, out


def test_serving_processes_counts_forked_siblings_and_children() -> None:
    """Two forked children of this process see each other; this process sees both."""
    import multiprocessing

    from seawall._workers import serving_processes

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    gate, done = ctx.Event(), ctx.Event()

    def child() -> None:
        gate.wait(10)
        queue.put(serving_processes())
        done.wait(10)

    procs = [ctx.Process(target=child) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        gate.set()
        seen = [queue.get(timeout=10), queue.get(timeout=10)]
        assert seen == [2, 2]
        assert serving_processes() == 2
    finally:
        done.set()
        for p in procs:
            p.join(10)
    assert serving_processes() == 1


def test_web_concurrency_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from seawall._workers import serving_processes

    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert serving_processes() == 4
    monkeypatch.setenv("WEB_CONCURRENCY", "not a number")
    assert serving_processes() == 1


def test_nothing_is_armed_for_shared_storage_alone(redis_url: str) -> None:
    code = (
        "import seawall._workers as w; from seawall import RateLimit, ConcurrencyLimit;"
        f"RateLimit('5/minute', storage={redis_url!r}); ConcurrencyLimit(5, storage={redis_url!r});"
        "print(json.dumps(sorted(w._armed)));"
        "RateLimit('5/minute'); ConcurrencyLimit(5);"
        "print(json.dumps(sorted(w._armed)))"
    )
    out = subprocess.run([sys.executable, "-c", "import json;" + code], capture_output=True,
                         text=True, check=True).stdout.splitlines()  # fmt: skip
    assert [json.loads(line) for line in out] == [[], ["ConcurrencyLimit", "RateLimit"]]
