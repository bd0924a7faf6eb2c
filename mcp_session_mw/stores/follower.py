"""One shared follower per store: live waits register here, one task watches the store.

A live wait (:meth:`Store.wait_events`) costs nothing while nothing happens:
it registers a :class:`Waiter` for its stream (session key, stream id) and
sleeps on an in-process event. What wakes it is the store's one *watch*, a
small hook each backend plugs in that learns which streams moved and calls
:meth:`Follower.wake` for them:

- push channels (PostgreSQL ``LISTEN``, Redis pub/sub) hold one connection and
  wake the slot named by each message;
- polling backends run one query per interval over every waited stream
  (:func:`polling`), however many waiters there are;
- the memory store has no watch: its writers wake the slot directly.

The watch runs as one task, started by the first waiter, ended once nobody has
waited for ``LINGER`` seconds (so its connection goes too) or when the store
closes. A watch that fails (connection killed, store down) is started again
after a pause that doubles up to ``MAX_RETRY_DELAY``; every waiter is woken
first, so each re-reads its stream and nothing sent in the gap is missed.

The watch task is an asyncio task: the backends that need one (SQLAlchemy
async, redis.asyncio) run on asyncio only. The memory store starts none, so it
keeps working on any anyio backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Protocol

import anyio

logger = logging.getLogger("mcp_session_mw")

Slot = tuple[str, str]
"""What a waiter waits on: (session key, stream id)."""
Position = tuple[int, bool]
"""Where a stream stands: (last seq, done)."""

LINGER = 1.0
"""Seconds the watch outlives its last waiter: a follower between two waits keeps it."""
RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 5.0
MSG_WATCH_FAILED = "the %s follower lost its watch (%s); waiters re-read, retrying in %.1fs"


class Watch(Protocol):
    async def __call__(self, follower: Follower) -> None:
        """Watch the store while :meth:`Follower.wanted`; wake the slots that move.

        Return once nobody wants it; raise when the connection is lost (the
        follower wakes every waiter and starts it again).
        """


class Waiter:
    """One registered live wait: its slot, the last seq it has seen, its event."""

    __slots__ = ("event", "seen", "slot")

    def __init__(self, slot: Slot, seen: int) -> None:
        self.slot = slot
        self.seen = seen
        self.event = anyio.Event()

    async def wait(self, timeout: float) -> bool:
        """Sleep until woken or ``timeout`` seconds pass; True if woken."""
        with anyio.move_on_after(timeout):
            await self.event.wait()
        return self.event.is_set()


class Follower:
    """The waiters of one store and its one watch task (see the module docstring)."""

    def __init__(self, watch: Watch | None = None, *, name: str = "store") -> None:
        self._watch = watch
        self._name = name
        self._waiters: dict[Slot, dict[Waiter, None]] = {}
        self._count = 0
        self._last_left = 0.0
        self._task: asyncio.Task[None] | None = None
        self.starts = 0
        """How many times the watch was started (first start and every restart)."""

    # -- waiters -------------------------------------------------------------------

    @contextlib.contextmanager
    def watching(self, slot: Slot, seen: int) -> Iterator[Waiter]:
        """Register a waiter for ``slot`` for the block; read the stream inside it.

        Registering before the read means a change between the read and the
        wait still wakes it.
        """
        waiter = Waiter(slot, seen)
        self._waiters.setdefault(slot, {})[waiter] = None
        self._count += 1
        self._start()
        try:
            yield waiter
        finally:
            self._count -= 1
            self._last_left = time.monotonic()
            waiters = self._waiters.get(slot)
            if waiters is not None:
                waiters.pop(waiter, None)
                if not waiters:
                    del self._waiters[slot]

    @property
    def waiting(self) -> int:
        """How many waiters are registered."""
        return self._count

    def waited(self) -> dict[Slot, int]:
        """Every waited slot with the lowest seq its waiters have seen."""
        return {slot: min(w.seen for w in waiters) for slot, waiters in self._waiters.items()}

    def wanted(self) -> bool:
        """True while someone waits, or did less than ``LINGER`` seconds ago."""
        return self._count > 0 or time.monotonic() - self._last_left < LINGER

    def wake(self, slot: Slot) -> None:
        """Wake every waiter of ``slot`` (its stream moved, was finished or is gone)."""
        for waiter in self._waiters.get(slot, ()):
            waiter.event.set()

    def wake_session(self, key: str) -> None:
        """Wake the waiters of every stream of the session ``key`` (a look at each waited slot)."""
        for slot in [slot for slot in self._waiters if slot[0] == key]:
            self.wake(slot)

    def wake_all(self) -> None:
        """Wake every waiter: each re-reads its stream (after a lost watch, at close)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.event.set()

    # -- the watch task --------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the watch task runs (on the running event loop)."""
        task = self._task
        return task is not None and not task.done() and _same_loop(task)

    def _start(self) -> None:
        if self._watch is None or self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._watch is not None
        delay = RETRY_DELAY
        while self.wanted():
            self.starts += 1
            began = time.monotonic()
            try:
                await self._watch(self)
            except Exception as exc:  # a lost connection or a store that is down
                if time.monotonic() - began > MAX_RETRY_DELAY:
                    delay = RETRY_DELAY  # it had been up a while: a fresh failure
                logger.warning(MSG_WATCH_FAILED, self._name, _describe(exc), delay)
                self.wake_all()
                await anyio.sleep(delay)
                delay = min(2 * delay, MAX_RETRY_DELAY)

    async def close(self) -> None:
        """Stop the watch (its connection closes with it) and wake every waiter."""
        task, self._task = self._task, None
        if task is not None and not task.done() and _same_loop(task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.wake_all()


def polling(
    positions: Callable[[Sequence[Slot]], Awaitable[Mapping[Slot, Position]]],
    interval: Callable[[], float],
) -> Watch:
    """A watch for backends without a push channel: one look at every waited stream per interval.

    ``positions`` answers, in one round trip where it can, where each of the
    given streams stands; a stream it leaves out is gone. Waiters of a stream
    that is gone, done or past what they have seen are woken.
    """

    async def watch(follower: Follower) -> None:
        while follower.wanted():
            await wake_moved(follower, positions)
            await anyio.sleep(interval())

    return watch


async def wake_moved(
    follower: Follower,
    positions: Callable[[Sequence[Slot]], Awaitable[Mapping[Slot, Position]]],
) -> None:
    """One look at every waited stream; wake those gone, done or past what their waiters saw."""
    waited = follower.waited()
    if not waited:
        return
    found = await positions(list(waited))
    for slot, seen in waited.items():
        position = found.get(slot)
        if position is None or position[0] > seen or position[1]:
            follower.wake(slot)


def _same_loop(task: asyncio.Task[None]) -> bool:
    try:
        return task.get_loop() is asyncio.get_running_loop()
    except RuntimeError:
        return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
