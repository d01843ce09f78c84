"""One async deadline for every Python seawall supports.

``asyncio.timeout`` on Python 3.11+. On 3.10, which has none, a small
equivalent: it cancels the task at the deadline and turns that cancellation
into the builtin ``TimeoutError``, as 3.11 does (3.10's ``asyncio.TimeoutError``
is another class, which an ``except TimeoutError`` would miss). A
cancellation from elsewhere stays a cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

__all__ = ["timeout"]

if sys.version_info >= (3, 11):
    timeout = asyncio.timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def timeout(seconds: float) -> AsyncIterator[None]:
        """Cancel the running task after *seconds*; raise ``TimeoutError`` if that happened."""
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if task is not None:
                task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()
