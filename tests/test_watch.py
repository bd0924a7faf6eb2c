"""The process's one clock for durable responses (mcp_session_mw.watch)."""

from __future__ import annotations

import anyio
import pytest

from mcp_session_mw.watch import TICK, StreamWatcher

pytestmark = pytest.mark.anyio


class Recorder:
    """A response that records when it is ticked."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._ticked = anyio.Event()

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self._ticked.set()
        self._ticked = anyio.Event()

    async def ticked(self, times: int) -> None:
        while len(self.ticks) < times:
            await self._ticked.wait()


async def test_what_is_registered_is_ticked_until_it_is_discarded() -> None:
    watcher = StreamWatcher()
    early, late = Recorder(), Recorder()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            watcher.add(early)
            await early.ticked(2)
            assert early.ticks == sorted(early.ticks)
            watcher.discard(early)
            watcher.add(late)
            seen = len(early.ticks)
            await late.ticked(3)
            assert len(early.ticks) == seen
            watcher.discard(late)
            assert len(watcher) == 0
            tg.cancel_scope.cancel()


async def test_an_idle_watcher_wakes_for_the_next_response() -> None:
    watcher = StreamWatcher()
    response = Recorder()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            watcher.add(response)
            await response.ticked(1)
            watcher.discard(response)
            await anyio.sleep(3 * TICK)  # idle: asleep until something is added
            assert len(response.ticks) <= 2  # at most the look already under way
            ticked = len(response.ticks)
            watcher.add(response)
            await response.ticked(ticked + 1)
            tg.cancel_scope.cancel()
