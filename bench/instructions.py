"""
Instructions per request, counted by callgrind: a figure that machine noise does not move.

    python bench/instructions.py                      # the engine and each layer, ASGI and WSGI
    python bench/instructions.py wsgi "[Timing()]"    # one stack

Each figure is (instructions for N requests) - (instructions for none), over N,
for a tiny app under the given layers (an expression evaluated after
``from seawall import *``; ``None`` is the bare app). Needs valgrind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 2000

CASES = [
    "None",
    "[]",
    "[Timing()]",
    "[ErrorCapture()]",
    "[Timing(), ErrorCapture()]",
    "[RateLimit('1000000/minute')]",
    "[Validation()]",
    "[CircuitBreaker(per='route', failure_rate_threshold=0.5)]",
    "[Timing(), ErrorCapture(), RateLimit('1000000/minute'), Validation(),"
    " CircuitBreaker(per='route', failure_rate_threshold=0.5)]",
]


def target() -> None:
    sys.path.insert(0, str(HERE))
    from _harness import time_asgi, time_wsgi

    import seawall
    import seawall._workers

    # RateLimit and ConcurrencyLimit start a one-shot timer that counts the
    # server's worker processes two seconds in (psutil): under valgrind it
    # could land inside the counted requests and add ~4k a request at random.
    seawall._workers.DELAY = 1e9

    namespace: dict[str, object] = {}
    # The cases name layers bare.
    exec("from seawall import *", namespace)

    def tiny(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]

    async def atiny(scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
            }
        )
        await send({"type": "http.response.body", "body": b"hello"})

    iface, expr, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    layers = eval(expr, namespace)  # the benchmark's own case list
    inner = atiny if iface == "asgi" else tiny
    app = inner if layers is None else seawall.Seawall(inner, layers=layers)
    run = time_asgi if iface == "asgi" else time_wsgi
    # Past the first PROBES requests, which also look for a proxy set-up
    # that does not match (seawall._core.client): the steady state.
    from seawall._core.client import PROBES

    run(app, PROBES + 300)
    if n:
        run(app, n)


def count(iface: str, expr: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/cg.out",
                sys.executable,
                __file__,
                "--target",
                iface,
                expr,
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(out.stderr[-2000:])
    return int(found.group(1))


def per_request(iface: str, expr: str) -> float:
    return (count(iface, expr, N) - count(iface, expr, 0)) / N


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--target":
        target()
        return
    cases = (
        [(sys.argv[1], sys.argv[2])]
        if len(sys.argv) == 3
        else [(iface, expr) for expr in CASES for iface in ("wsgi", "asgi")]
    )
    print(f"instructions per request (callgrind, {N} requests, tiny app)")
    for iface, expr in cases:
        print(f"  {iface}  {per_request(iface, expr) / 1000:7.1f}k  {expr}", flush=True)


if __name__ == "__main__":
    main()
