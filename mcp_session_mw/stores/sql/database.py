"""One store's engine: opening the schema, transactions and their retries, raw connections."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ...errors import StoreError
from .failures import (
    LOCK_CONFLICT_RETRIES,
    RACE_LOST,
    RaceLost,
    driver_errors,
    found_dead,
    is_lock_conflict,
    quietly,
    translate,
    unavailable,
)
from .schema import Tables, check_version, create_schema

with contextlib.suppress(ImportError):  # engine.require_sqlalchemy names the extra
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

STALE_CHECKOUTS = 16
"""Pooled connections found closed that one call discards before it gives up on the pool."""


class Database:
    """The engine of one store and the tables of its prefix.

    Every read and write of the store goes through :meth:`read`, :meth:`write`
    or (the hot paths) :meth:`on_driver`, each of which opens the schema first.
    """

    def __init__(self, engine: AsyncEngine, t: Tables) -> None:
        self.engine = engine
        self.t = t
        self.backend = engine.dialect.name
        self.sqlite = self.backend == "sqlite"
        self.postgres = self.backend == "postgresql"
        self.channel = f"{t.prefix}events"
        """The PostgreSQL ``NOTIFY`` channel of this prefix (see :mod:`.listener`)."""
        # PostgreSQL reads need no transaction: autocommit saves the BEGIN/ROLLBACK trips.
        self.read_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else engine
        )
        self.opened = False
        self._open_lock: anyio.Lock | None = None
        self._driver_errors = driver_errors(engine)
        pool_size = getattr(engine.pool, "size", None)
        self.keep = max(1, pool_size()) if callable(pool_size) else 1
        """Connections the hot path keeps checked out between calls (the pool's size)."""
        self._kept: list[tuple[AsyncConnection, Any]] = []

    async def open(self) -> None:
        """Create the tables if needed and check their schema version. Idempotent."""
        if self.opened:
            return
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self.opened:
                return
            t = self.t
            found = await self.transact(
                self.engine, lambda conn: create_schema(conn, t), write=True
            )
            check_version(t.prefix, found)
            self.opened = True

    async def write(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        await self.open()
        return await self.transact(self.engine, body, write=True)

    async def read(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        await self.open()
        return await self.transact(self.read_engine, body, write=False)

    async def write_upsert(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run an update-else-insert ``body``; when another writer inserted first, go again.

        The second run finds the row and updates it. Portable SQL has no upsert,
        and the dialects' own ones differ in what they report back.
        """
        for _ in range(LOCK_CONFLICT_RETRIES):
            try:
                return await self.write(body)
            except RaceLost:
                continue
        raise StoreError(RACE_LOST.format(times=LOCK_CONFLICT_RETRIES))

    async def transact(
        self,
        engine: AsyncEngine,
        body: Callable[[AsyncConnection], Awaitable[T]],
        *,
        write: bool,
    ) -> T:
        """Run ``body`` in one transaction (commit if ``write``); translate driver errors.

        A deadlock runs it again. So does, once, a connection that turns out to
        be dead before COMMIT was sent (the server restarted while it was
        pooled): the server has rolled that transaction back, and SQLAlchemy
        has marked every pooled connection of that age stale, so the second run
        connects afresh. A connection lost during COMMIT is not retried, because
        that transaction may have committed.
        """
        conflicts = 0
        reconnected = False
        while True:
            committing = False
            try:
                # The kept connections serve transactions too, so those the hot
                # path holds between calls never starve the rest of the store.
                kept = engine is self.engine
                conn, driver = await self._take() if kept else (await engine.connect(), None)
                ended = False
                try:
                    try:
                        if write and self.sqlite:
                            await conn.exec_driver_sql("BEGIN IMMEDIATE")
                        result = await body(conn)
                    except (OSError, asyncio.TimeoutError):
                        # A statement that timed out (or a socket that failed)
                        # leaves the connection in a state nobody knows: the
                        # ROLLBACK of an ordinary return would wait once more.
                        with anyio.CancelScope(shield=True):
                            await quietly(conn.invalidate())
                        raise
                    if write:
                        committing = True
                        try:
                            await conn.commit()
                        except BaseException:
                            # Its transaction state is unknown; the pool does not
                            # roll back on return (see engine.build_engine), so
                            # never reuse it.
                            with anyio.CancelScope(shield=True):
                                await quietly(conn.invalidate())
                            raise
                    elif kept:
                        await conn.rollback()  # ends the read's transaction before reuse
                    ended = True
                finally:
                    if ended and kept:
                        await self._give_back(conn, driver)
                    else:  # rolls back what is open and returns it to the pool
                        with anyio.CancelScope(shield=True):
                            await quietly(conn.close())
                return result
            except (OSError, asyncio.TimeoutError, sa_exc.SQLAlchemyError) as exc:
                if conflicts < LOCK_CONFLICT_RETRIES and is_lock_conflict(exc):
                    conflicts += 1
                    await anyio.sleep(random.uniform(0, 0.01 * conflicts))
                    continue
                if not reconnected and not committing and found_dead(exc):
                    reconnected = True
                    continue
                raise translate(self.backend, exc) from exc

    async def on_driver(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``body`` on the driver's own connection (asyncpg, aiosqlite).

        Only the hot paths do this: their few statements cost less than
        SQLAlchemy's cursor layer around them. The connection comes from the
        ones this store keeps checked out for the hot path (see :meth:`_take`),
        so a call pays no pool checkout. ``body`` ends any transaction it
        starts; after a driver failure the connection is discarded, since its
        state is not known.
        """
        await self.open()
        conflicts = 0
        while True:
            lost = False
            try:
                conn, driver = await self._take()
                try:
                    result = await body(driver)
                except StoreError:
                    await self._give_back(conn, driver)
                    raise  # a refusal of ours; body has ended its transaction
                except BaseException:
                    lost = self.postgres and driver.is_closed()
                    with anyio.CancelScope(shield=True):
                        await quietly(conn.invalidate())
                        await quietly(conn.close())
                    raise
                await self._give_back(conn, driver)
                return result
            except StoreError:
                raise
            except self._driver_errors as exc:
                if conflicts < LOCK_CONFLICT_RETRIES and is_lock_conflict(exc):
                    conflicts += 1
                    await anyio.sleep(random.uniform(0, 0.01 * conflicts))
                    continue
                if lost:
                    raise unavailable(self.backend, exc) from exc
                raise translate(self.backend, exc) from exc

    async def _take(self) -> tuple[AsyncConnection, Any]:
        """A kept connection and its driver connection, else one checked out of the pool.

        A kept asyncpg connection whose server side has gone (asyncpg sees the
        socket close while it is idle) is discarded, as the pool's checkout
        check would; nothing was sent on it.
        """
        for _ in range(STALE_CHECKOUTS):
            if not self._kept:
                break
            conn, driver = self._kept.pop()
            if not (self.postgres and driver.is_closed()):
                return conn, driver
            with anyio.CancelScope(shield=True):
                await quietly(conn.invalidate())
                await quietly(conn.close())
        conn = await self.engine.connect()
        try:
            raw = await conn.get_raw_connection()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await quietly(conn.close())
            raise
        return conn, raw.driver_connection

    async def _give_back(self, conn: AsyncConnection, driver: Any) -> None:
        """Keep the connection for the next hot-path call, up to :attr:`keep`; else pool it."""
        if len(self._kept) < self.keep:
            self._kept.append((conn, driver))
            return
        with anyio.CancelScope(shield=True):
            await conn.close()

    async def release(self) -> None:
        """Return every kept connection to the pool (before the engine is disposed)."""
        kept, self._kept = self._kept, []
        for conn, _ in kept:
            await quietly(conn.close())

    async def notify(self, conn: AsyncConnection, key: str, stream_id: str) -> None:
        """Wake PostgreSQL listeners of this stream once the transaction commits."""
        if self.postgres:
            await conn.execute(sa.select(sa.func.pg_notify(self.channel, f"{key}:{stream_id}")))
