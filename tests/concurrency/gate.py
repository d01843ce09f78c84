"""Twin apps that hold requests until the test lets them go, and count concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any


class Gate:
    """Holds ``/hold`` requests until :meth:`open`; tracks the most seen at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.entered = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def open(self) -> None:
        self.event.set()

    def wait_entered(self, n: int, timeout: float = 5.0) -> None:
        """Block until *n* requests are inside the app."""
        deadline = time.monotonic() + timeout
        while self.now < n:
            if time.monotonic() > deadline:
                msg = f"only {self.now} of {n} requests reached the app"
                raise AssertionError(msg)
            time.sleep(0.002)

    def asgi(self) -> Any:
        gate = self

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            assert scope["type"] == "http"
            path = scope["path"]
            if path == "/hold":
                gate.enter()
                try:
                    while not gate.event.is_set():
                        await asyncio.sleep(0.002)
                finally:
                    gate.leave()
            elif path == "/boom":
                raise RuntimeError("boom")
            elif path == "/disconnect":
                # Wait for the client to go away, then return without answering.
                while (await receive())["type"] != "http.disconnect":
                    pass
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})

        return app

    def wsgi(self) -> Callable[..., Any]:
        gate = self

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            path = environ["PATH_INFO"]
            if path == "/hold":
                gate.enter()
                try:
                    gate.event.wait(10)
                finally:
                    gate.leave()
            elif path == "/boom":
                raise RuntimeError("boom")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        return app
