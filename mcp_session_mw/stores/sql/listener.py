"""The follower's watch on PostgreSQL (asyncpg): one ``LISTEN`` connection per store."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ..follower import Follower, Position, Slot, wake_moved
from .failures import quietly

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

LISTEN_CHECK = 0.5
"""Seconds between two looks, while listening, at whether anyone still waits."""
LISTEN_RECHECK = 5.0
"""Seconds between two polls of every waited stream while listening: a notification
that never arrives (a pooler in transaction mode, a lost one) costs a wait at most this."""

CLOSE_TIMEOUT = 5.0
"""Seconds the listener's connection may take to close (it is given back even if cancelled)."""
LISTEN_CLEANUP_FAILED = "ignored while closing the PostgreSQL listener: %r"
MSG_LISTENER_LOST = "the PostgreSQL listener connection was lost"


class Listener:
    """Appends, finishes and re-opens notify ``<key>:<stream>`` on ``channel``; this wakes them.

    The store's :class:`~mcp_session_mw.stores.follower.Follower` runs it while
    anyone waits: it holds one connection of the engine (whatever the number
    of waiters), wakes the waiters of each notified stream, and raises when the
    connection is lost, so the follower wakes every waiter (each re-reads its
    stream: nothing committed in the gap is missed) and starts it again. Once
    ``LISTEN`` is in place it wakes every waiter once too, for the same reason:
    a waiter may have read before the listener was up. Every
    ``LISTEN_RECHECK`` seconds it also polls where the waited streams stand
    (``positions``, one query per batch of sessions), so a notification that
    never comes delays a wait, never ends it.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        channel: str,
        positions: Callable[[Sequence[Slot]], Awaitable[Mapping[Slot, Position]]],
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._positions = positions
        self.listening = False

    async def __call__(self, follower: Follower) -> None:
        lost = anyio.Event()

        def on_notify(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            follower.wake((payload[:64], payload[65:]))

        def on_lost(_connection: Any) -> None:
            lost.set()

        conn = await self._engine.connect()
        driver: Any = None
        try:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            await driver.add_listener(self._channel, on_notify)
            driver.add_termination_listener(on_lost)
            self.listening = True
            follower.wake_all()
            recheck_at = time.monotonic() + LISTEN_RECHECK
            while follower.wanted():
                with anyio.move_on_after(LISTEN_CHECK):
                    await lost.wait()
                if lost.is_set() or driver.is_closed():
                    raise ConnectionError(MSG_LISTENER_LOST)
                if time.monotonic() >= recheck_at:
                    await wake_moved(follower, self._positions)
                    recheck_at = time.monotonic() + LISTEN_RECHECK
        finally:
            self.listening = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                await _close(conn, driver, self._channel, on_notify, on_lost)


async def _close(conn: Any, driver: Any, channel: str, on_notify: Any, on_lost: Any) -> None:
    if driver is not None and not driver.is_closed():
        await quietly(driver.remove_listener(channel, on_notify), LISTEN_CLEANUP_FAILED)
        driver.remove_termination_listener(on_lost)
        await quietly(conn.close(), LISTEN_CLEANUP_FAILED)
    else:
        await quietly(conn.invalidate(), LISTEN_CLEANUP_FAILED)
        await quietly(conn.close(), LISTEN_CLEANUP_FAILED)


class SQLiteWatch:
    """The follower's watch on SQLite: a poll of every waited stream, only after a commit.

    ``PRAGMA data_version`` on one connection held for the watch changes when
    any other connection (of this process or another) has committed, and is
    one cheap statement; the poll of every waited stream (``positions``, one
    query per 500 sessions) runs only then. Idle, 10,000 waited streams cost
    two pragmas a second instead of forty queries returning 10,000 rows each.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        positions: Callable[[Sequence[Slot]], Awaitable[Mapping[Slot, Position]]],
        interval: Callable[[], float],
    ) -> None:
        self._engine = engine
        self._positions = positions
        self._interval = interval

    async def __call__(self, follower: Follower) -> None:
        async with self._engine.connect() as conn:
            seen: Any = None
            while follower.wanted():
                version = (await conn.exec_driver_sql("PRAGMA data_version")).scalar()
                await conn.rollback()  # no snapshot kept open between two looks
                if version != seen:  # a waiter registers before its own read: none is missed
                    seen = version
                    await wake_moved(follower, self._positions)
                await anyio.sleep(self._interval())
