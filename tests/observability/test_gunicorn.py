"""Metrics under a real gunicorn with two pre-forked workers and PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.observability.conftest import free_port

pytestmark = pytest.mark.server

APP = """
import os, time
from seawall import Seawall, Metrics, LoadShedding
from seawall._observe.sampler import StaticSignals

def app(environ, start_response):
    # Slow enough that concurrent requests need both (sync) workers.
    time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]

# Built in the master (--preload), before the workers fork.
metrics = Metrics()
assert metrics.registry.multiprocess
application = Seawall(app, layers=[metrics, LoadShedding(signals=StaticSignals())])
"""


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[str]:
    """gunicorn -w 2 --preload on a spare port, its multiprocess directory empty."""
    (tmp_path / "mpapp.py").write_text(APP)
    mpdir = tmp_path / "prom"
    mpdir.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(mpdir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "mpapp:application", "-b", f"127.0.0.1:{port}",
         "-w", "2", "--preload", "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                # /metrics is answered by the layer and counts as no request.
                httpx.get(base + "/metrics", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            out = proc.stdout.read1().decode() if proc.stdout else ""  # type: ignore[attr-defined]
            pytest.fail(f"gunicorn did not start: {out}")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_metrics_are_summed_over_gunicorn_workers(gunicorn: str) -> None:
    """Every scrape, whichever worker answers it, reports every worker's requests."""
    n = 60

    def get(_: int) -> str:
        response = httpx.get(gunicorn + "/", timeout=10)
        assert response.status_code == 200
        return response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        pids = set(pool.map(get, range(n)))
    assert len(pids) == 2, pids  # both workers served requests

    answered_by: set[str] = set()
    for _ in range(8):
        text = httpx.get(gunicorn + "/metrics", timeout=10).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        [total] = [
            s.value
            for s in families["seawall_http_requests"].samples
            if s.name == "seawall_http_requests_total" and s.labels["status"] == "200"
        ]
        assert total == n
        counts = [
            s.value
            for s in families["seawall_http_request_duration_seconds"].samples
            if s.name == "seawall_http_request_duration_seconds_count"
        ]
        assert sum(counts) == n
        assert [s.value for s in families["seawall_http_requests_in_flight"].samples] == [0]
        # The layer figures are the answering worker's own, labelled with its pid.
        admitted = [
            s
            for s in families["seawall_layer_stat"].samples
            if s.labels["layer"] == "shedding" and s.labels["stat"] == "admitted"
        ]
        assert len(admitted) == 1
        answered_by.add(admitted[0].labels["pid"])
    assert answered_by <= pids
