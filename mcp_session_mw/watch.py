"""One task per process that keeps time for every durable response in flight.

A durable response has a few duties on a clock: open its stream in the store
if the app sends nothing for a while, renew its lease while it runs, end the
client's connection after ``max_stream_seconds``. Most responses (a tool's
answer) end long before any of them is due, so a task or timer of their own
would be pure cost. Instead each registers here, and one task looks at all of
them every ``TICK`` seconds, starting the duties that are due. It sleeps when
nothing is registered.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

OPEN_DELAY = 0.05
"""Seconds a response may send nothing before its stream is opened in the store alone."""
TICK = OPEN_DELAY / 2
"""Seconds between two looks at the responses in flight: a duty starts at most this late."""


class Timed(Protocol):
    def tick(self, now: float) -> None:
        """Start whatever duty is due at ``now`` (``time.monotonic()``); never block."""


class StreamWatcher:
    """Calls :meth:`Timed.tick` on every registered response, every ``TICK`` seconds."""

    def __init__(self) -> None:
        self._watched: dict[Timed, None] = {}
        self._wake: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._watched)

    def add(self, response: Timed) -> None:
        self._watched[response] = None
        if self._wake is not None:
            self._wake.set()

    def discard(self, response: Timed) -> None:
        self._watched.pop(response, None)

    async def run(self) -> None:
        while True:
            if not self._watched:
                self._wake = anyio.Event()
                await self._wake.wait()
                self._wake = None
            await anyio.sleep(TICK)
            look(list(self._watched))


def look(responses: list[Timed]) -> None:
    now = time.monotonic()
    for response in responses:
        response.tick(now)
