"""Session rows: create, replace, swap, touch, delete, list, expire, update under a row lock."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import SessionExistsError, SessionNotFoundError
from ...records import JSONValue, Page, SessionRecord, merge_state
from ..base import StateChange, check_state
from .database import Database
from .failures import RaceLost, UserCodeError
from .schema import row_values, to_record

with contextlib.suppress(ImportError):  # engine.require_sqlalchemy names the extra
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

CLEANUP_BATCH = 500


class SessionRows:
    """The session primitives of :class:`SQLStore`, each one short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, record: SessionRecord, now: float) -> None:
        t = self._db.t
        sessions, streams, events = t.sessions, t.streams, t.events

        async def insert(conn: AsyncConnection) -> None:
            # An expired session under this key gives way, with its events. If a
            # live one holds the key the INSERT fails and all of this rolls back.
            await conn.execute(
                sa.delete(sessions).where(
                    sessions.c.key == record.key, sessions.c.expires_at <= now
                )
            )
            await conn.execute(sa.delete(streams).where(streams.c.session_key == record.key))
            await conn.execute(sa.delete(events).where(events.c.session_key == record.key))
            try:
                await conn.execute(sa.insert(sessions).values(key=record.key, **row_values(record)))
            except sa_exc.IntegrityError as exc:
                raise SessionExistsError("session already exists") from exc

        await self._db.write(insert)

    async def put(self, record: SessionRecord) -> None:
        sessions = self._db.t.sessions

        async def put(conn: AsyncConnection) -> None:
            result = await conn.execute(
                sa.update(sessions).where(sessions.c.key == record.key).values(row_values(record))
            )
            if result.rowcount == 0:
                try:
                    await conn.execute(
                        sa.insert(sessions).values(key=record.key, **row_values(record))
                    )
                except sa_exc.IntegrityError as exc:  # inserted meanwhile: write again
                    raise RaceLost from exc

        await self._db.write_upsert(put)

    async def compare_and_swap(
        self, record: SessionRecord, expected_version: int, now: float
    ) -> bool:
        sessions = self._db.t.sessions

        async def swap(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.update(sessions)
                .where(
                    sessions.c.key == record.key,
                    sessions.c.version == expected_version,
                    sessions.c.expires_at > now,
                )
                .values(row_values(record))
            )
            return result.rowcount == 1

        return await self._db.write(swap)

    async def touch(self, key: str, now: float, ttl: float | None) -> bool:
        t = self._db.t
        sessions = t.sessions
        values: dict[str, Any] = {"last_accessed": now}
        if ttl is None:
            values["expires_at"] = now + sessions.c.ttl
        else:
            values["expires_at"] = now + ttl
            values["ttl"] = ttl

        async def touch(conn: AsyncConnection) -> bool:
            result = await conn.execute(sa.update(sessions).where(t.live(key, now)).values(values))
            return result.rowcount == 1

        return await self._db.write(touch)

    async def delete(self, key: str, now: float) -> bool:
        t = self._db.t
        sessions, streams, events = t.sessions, t.streams, t.events

        async def delete(conn: AsyncConnection) -> bool:
            live = await conn.execute(sa.delete(sessions).where(t.live(key, now)))
            await conn.execute(sa.delete(sessions).where(sessions.c.key == key))
            # Streams before events: an append holding a stream row's lock
            # commits its event first, so the events DELETE below sees it.
            if self._db.postgres:  # live waits on its streams see "gone" and return
                stream_id = streams.c.stream_id
                wake = sa.func.pg_notify(self._db.channel, sa.literal(f"{key}:") + stream_id)
                await conn.execute(sa.select(wake).where(streams.c.session_key == key))
            await conn.execute(sa.delete(streams).where(streams.c.session_key == key))
            await conn.execute(sa.delete(events).where(events.c.session_key == key))
            return live.rowcount > 0

        return await self._db.write(delete)

    async def list(self, limit: int, cursor: str | None, now: float) -> Page:
        t = self._db.t
        c = t.sessions.c
        query = sa.select(*t.session_columns()).where(c.expires_at > now)
        if cursor is not None:
            query = query.where(c.key > cursor)
        query = query.order_by(c.key).limit(limit + 1)

        async def page(conn: AsyncConnection) -> Page:
            rows = (await conn.execute(query)).all()
            records = [to_record(row) for row in rows[:limit]]
            more = len(rows) > limit
            return Page(records, records[-1].key if more else None)

        return await self._db.read(page)

    async def cleanup(self, now: float) -> int:
        t = self._db.t
        sessions, streams, events = t.sessions, t.streams, t.events

        async def batch(conn: AsyncConnection) -> tuple[int, int]:
            # Locking the expired rows keeps a concurrent create of the same key
            # (which replaces an expired row) from losing its new events to us.
            keys = list(
                await conn.scalars(
                    sa.select(sessions.c.key)
                    .where(sessions.c.expires_at <= now)
                    .order_by(sessions.c.key)
                    .limit(CLEANUP_BATCH)
                    .with_for_update()
                )
            )
            if not keys:
                return 0, 0
            await conn.execute(sa.delete(streams).where(streams.c.session_key.in_(keys)))
            await conn.execute(sa.delete(events).where(events.c.session_key.in_(keys)))
            removed = await conn.execute(
                sa.delete(sessions).where(sessions.c.key.in_(keys), sessions.c.expires_at <= now)
            )
            return len(keys), removed.rowcount

        total = 0
        while True:
            found, removed = await self._db.write(batch)
            total += removed
            if found < CLEANUP_BATCH or removed == 0:
                return total

    async def update_locked(
        self, key: str, change: StateChange, field: str, clock: Callable[[], float]
    ) -> SessionRecord | None:
        """Read-modify-write under the row lock; None when ``change`` turned out to be async.

        ``clock`` is the store's: the compare-and-swap that finishes an
        awaitable outcome reads the time again once it has come.
        """
        t = self._db.t
        sessions = t.sessions
        now = clock()

        async def modify(
            conn: AsyncConnection,
        ) -> tuple[SessionRecord, SessionRecord | None, Awaitable[Any] | None]:
            result = await conn.execute(
                sa.select(*t.session_columns()).where(t.live(key, now)).with_for_update()
            )
            row = result.first()
            if row is None:
                raise SessionNotFoundError("session not found")
            current = to_record(row)
            old: dict[str, JSONValue] = getattr(current, field)
            if isinstance(change, Mapping):
                new = check_state(merge_state(old, change))
            else:
                try:
                    outcome: Any = change(dict(old))
                except Exception as exc:
                    raise UserCodeError(exc) from exc
                if inspect.isawaitable(outcome):
                    return current, None, outcome  # finish outside the lock
                new = check_state(outcome)
            stored = current.evolve(**{field: new}, version=current.version + 1)
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.key == key)
                .values(payload=stored.payload(), version=stored.version)
            )
            return current, stored, None

        try:
            current, stored, pending = await self._db.write(modify)
        except UserCodeError as exc:
            raise exc.error from None
        if stored is not None:
            return stored
        assert pending is not None
        new = check_state(await pending)
        stored = current.evolve(**{field: new}, version=current.version + 1)
        if await self.compare_and_swap(stored, current.version, clock()):
            return stored
        return None
