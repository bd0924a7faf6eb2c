"""Live waits: woken by PostgreSQL ``LISTEN``/``NOTIFY`` on asyncpg, else polling."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from ...records import StoredEvent
from .failures import describe, logger, quietly

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

LISTEN_RETRY_DELAY = 5.0
"""Seconds between attempts to (re)open the PostgreSQL listener after a failure."""
LISTEN_RECHECK_INTERVAL = 1.0
"""While listening, re-read at least this often anyway, in case a notification is lost."""

LISTEN_FAILED = "cannot LISTEN on PostgreSQL channel %r (%s); live waits poll every %.3fs"
LISTEN_CLEANUP_FAILED = "ignored while closing the PostgreSQL listener: %r"
LISTEN_LOST = "the PostgreSQL listener connection for channel %r was lost; polling until it is back"

Poll = Callable[[], Awaitable[tuple[list[StoredEvent], bool]]]
"""New events, and whether the stream is finished or gone (nothing more will come)."""


class Listener:
    """The waits of one store, and (asyncpg only) its one ``LISTEN`` connection.

    Appends, finishes and re-opens notify ``<key>:<stream>`` on ``channel``;
    the connection is opened on the first wait and wakes the waiters of that
    stream. If it cannot be set up or dies, waits poll every
    ``poll_interval`` seconds until it is back. Without ``can_listen`` they
    always poll.
    """

    def __init__(
        self, engine: AsyncEngine, channel: str, poll_interval: float, *, can_listen: bool
    ) -> None:
        self._engine = engine
        self._channel = channel
        self.poll_interval = poll_interval
        self._can_listen = can_listen
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self.listening = False
        self._retry_at = 0.0
        self._lock: anyio.Lock | None = None
        self.waiters: dict[tuple[str, str], set[anyio.Event]] = {}

    async def wait(self, slot: tuple[str, str], poll: Poll, timeout: float) -> list[StoredEvent]:
        """What ``poll`` finds first within ``timeout`` seconds; ``[]`` once it says finished."""
        deadline = time.monotonic() + timeout
        while True:
            pushed = await self._ensure()
            wake = anyio.Event()
            if pushed:  # register before reading, so a NOTIFY in between is not missed
                self.waiters.setdefault(slot, set()).add(wake)
            try:
                events, finished = await poll()
                remaining = deadline - time.monotonic()
                if events or finished or remaining <= 0:
                    return events
                if pushed and self.listening:
                    with anyio.move_on_after(
                        min(remaining, max(self.poll_interval, LISTEN_RECHECK_INTERVAL))
                    ):
                        await wake.wait()
                else:
                    await anyio.sleep(min(self.poll_interval, remaining))
            finally:
                if pushed:
                    waiters = self.waiters.get(slot)
                    if waiters is not None:
                        waiters.discard(wake)
                        if not waiters:
                            del self.waiters[slot]

    async def close(self) -> None:
        """Close the connection and wake every wait (each then reads once more and returns)."""
        await self._drop()
        self.listening = False
        self._wake_all()

    async def _ensure(self) -> bool:
        """True when a LISTEN connection is up (opening it on first use); False means poll."""
        if not self._can_listen:
            return False
        if self.listening:
            return True
        if time.monotonic() < self._retry_at:
            return False
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self.listening:
                return True
            await self._drop()
            try:
                conn = await self._engine.connect()
            except Exception as exc:  # any failure here only means "poll for now"
                return self._failed(exc)
            try:
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection
                await driver.add_listener(self._channel, self._on_notify)
                driver.add_termination_listener(self._on_lost)
            except Exception as exc:
                await quietly(conn.invalidate(), LISTEN_CLEANUP_FAILED)
                await quietly(conn.close(), LISTEN_CLEANUP_FAILED)
                return self._failed(exc)
            self._conn, self._driver, self.listening = conn, driver, True
            return True

    def _failed(self, exc: BaseException) -> bool:
        logger.warning(LISTEN_FAILED, self._channel, describe(exc), self.poll_interval)
        self._retry_at = time.monotonic() + LISTEN_RETRY_DELAY
        return False

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        for waiter in self.waiters.get((payload[:64], payload[65:]), ()):
            waiter.set()

    def _on_lost(self, _connection: Any) -> None:
        if self.listening:
            logger.warning(LISTEN_LOST, self._channel)
        self.listening = False
        self._wake_all()

    def _wake_all(self) -> None:
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.set()

    async def _drop(self) -> None:
        conn, driver = self._conn, self._driver
        self._conn = self._driver = None
        self.listening = False
        if conn is None:
            return
        if driver is not None and not driver.is_closed():
            await quietly(
                driver.remove_listener(self._channel, self._on_notify), LISTEN_CLEANUP_FAILED
            )
            driver.remove_termination_listener(self._on_lost)
            await quietly(conn.close(), LISTEN_CLEANUP_FAILED)
        else:
            await quietly(conn.invalidate(), LISTEN_CLEANUP_FAILED)
            await quietly(conn.close(), LISTEN_CLEANUP_FAILED)
