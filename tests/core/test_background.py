"""seawall._core.background: writes held until they end, waited for, failures logged."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from seawall._core import background


def test_a_task_is_held_until_it_ends_and_drain_waits_for_it() -> None:
    owner: set[asyncio.Task[Any]] = set()
    done: list[str] = []

    async def write() -> None:
        await asyncio.sleep(0.02)
        done.append("written")

    async def main() -> tuple[int, int, bool]:
        background.spawn(asyncio.get_running_loop(), write(), owner)
        gc.collect()  # asyncio holds tasks weakly: ours must survive this
        before = (background.pending(owner), background.pending())
        ended = await background.drain(1.0)
        return before[0], before[1], ended

    held, everywhere, ended = asyncio.run(main())
    assert (held, everywhere) == (1, 1)
    assert ended
    assert done == ["written"]
    assert background.pending(owner) == 0
    assert background.pending() == 0


def test_drain_says_when_late_and_leaves_the_task_running() -> None:
    async def main() -> tuple[bool, bool, bool]:
        stuck = background.spawn(asyncio.get_running_loop(), asyncio.Event().wait())
        ended = await background.drain(0.05)
        running = not stuck.done()
        stuck.cancel()
        await asyncio.sleep(0)
        return ended, running, await background.drain(0.05)

    ended, running, after = asyncio.run(main())
    assert ended is False
    assert running
    assert after is True


def test_a_failed_write_is_logged_once(logs: list[dict[str, Any]]) -> None:
    async def broken() -> None:
        raise ConnectionError("store gone")

    async def main() -> None:
        background.spawn(asyncio.get_running_loop(), broken())
        await background.drain(1.0)
        await asyncio.sleep(0)  # the done callbacks run on the next turn

    asyncio.run(main())
    failed = [e for e in logs if e["event"] == "seawall.background.failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == "ConnectionError"
    assert "broken" in failed[0]["task"]
