"""The hot path's interface, and its SQLAlchemy Core form for MariaDB/MySQL and other drivers."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import StreamNotFoundError
from ...records import SessionRecord, StreamState
from .database import Database
from .failures import session_not_found
from .schema import to_record

with contextlib.suppress(ImportError):  # engine.require_sqlalchemy names the extra
    import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class Batch:
    """Events to append to one stream at ``now``, keeping at most ``max_events``."""

    key: str
    stream_id: str
    items: Sequence[tuple[str, str | None]]
    max_events: int | None
    now: float


class HotPath(Protocol):
    """What runs on every request, written per driver and chosen once per store.

    ``load`` reads a live session, ``append`` numbers and stores a batch of
    events (returning the new last seq), ``write_stream`` does what
    :meth:`Store._write_stream` does in fewer round trips (opening the stream
    as ``open_as`` first, finishing it after), or returns None when the store
    should make the calls in turn.
    """

    async def load(self, key: str, now: float) -> SessionRecord | None: ...

    async def append(self, batch: Batch) -> int: ...

    async def write_stream(
        self, batch: Batch, open_as: StreamState | None, finish: bool
    ) -> int | None: ...

    async def record_streams(
        self, key: str, new: list[str], keep: int, now: float
    ) -> list[str] | None:
        """:meth:`Store.record_streams` with the list in ``meta``, in one transaction.

        Notes ``new`` under the session row's lock, removes the streams beyond
        the newest ``keep`` with their events, and returns their ids; None
        when the store should take the general way (update_meta, then delete).
        """
        ...


class CorePath:
    """MariaDB/MySQL (and any other driver): Core statements, built once per store."""

    def __init__(self, db: Database) -> None:
        self._db = db
        t = db.t
        p_key: sa.BindParameter[str] = sa.bindparam("p_key")
        p_stream: sa.BindParameter[str] = sa.bindparam("p_stream")
        self._live = sa.select(t.sessions.c.key).where(
            t.sessions.c.key == p_key, t.sessions.c.expires_at > sa.bindparam("p_now")
        )
        # The session is read by a subquery, which FOR UPDATE does not lock.
        self._lock = (
            sa.select(t.streams.c.first_seq, t.streams.c.last_seq, self._live.scalar_subquery())
            .where(t.streams.c.session_key == p_key, t.streams.c.stream_id == p_stream)
            .with_for_update()
        )
        self._insert = sa.insert(t.events)
        self._bump = (
            sa.update(t.streams)
            .where(t.streams.c.session_key == p_key, t.streams.c.stream_id == p_stream)
            .values(first_seq=sa.bindparam("p_first"), last_seq=sa.bindparam("p_last"))
        )
        self._trim = sa.delete(t.events).where(
            t.events.c.session_key == p_key,
            t.events.c.stream_id == p_stream,
            t.events.c.seq < sa.bindparam("p_first"),
        )

    async def load(self, key: str, now: float) -> SessionRecord | None:
        t = self._db.t

        async def get(conn: AsyncConnection) -> SessionRecord | None:
            result = await conn.execute(sa.select(*t.session_columns()).where(t.live(key, now)))
            row = result.first()
            return None if row is None else to_record(row)

        return await self._db.read(get)

    async def append(self, batch: Batch) -> int:
        """A fixed four or five statements per batch, whatever its size.

        The stream row's lock numbers the events; the session row is read in
        the same statement but not locked (session-then-stream lock order).
        """
        key, stream_id, items, max_events = (
            batch.key,
            batch.stream_id,
            batch.items,
            batch.max_events,
        )
        params = {"p_key": key, "p_stream": stream_id, "p_now": batch.now}
        db = self._db

        async def append(conn: AsyncConnection) -> int:
            row = (await conn.execute(self._lock, params)).first()
            if row is None:
                live = await conn.scalar(self._live, params)
                raise StreamNotFoundError("stream not found") if live else session_not_found()
            if row[2] is None:
                raise session_not_found()
            first_seq, last_seq = int(row[0]), int(row[1])
            start, last_seq = last_seq + 1, last_seq + len(items)
            if max_events is not None and last_seq - first_seq + 1 > max_events:
                first_seq = last_seq - max_events + 1
                trim = True
            else:
                trim = False
            kept: list[dict[str, Any]] = [
                {
                    "session_key": key,
                    "stream_id": stream_id,
                    "seq": start + offset,
                    "event": event,
                    "data": data,
                }
                for offset, (data, event) in enumerate(items)
                if start + offset >= first_seq
            ]
            if kept:
                await conn.execute(self._insert, kept)
            ids = {"p_key": key, "p_stream": stream_id}
            await conn.execute(self._bump, {**ids, "p_first": first_seq, "p_last": last_seq})
            if trim:
                await conn.execute(self._trim, {**ids, "p_first": first_seq})
            await db.notify(conn, key, stream_id)
            return last_seq

        return await db.write(append)

    async def write_stream(
        self, batch: Batch, open_as: StreamState | None, finish: bool
    ) -> int | None:
        """Core has no shorter way: the store makes the calls in turn."""
        return None

    async def record_streams(
        self, key: str, new: list[str], keep: int, now: float
    ) -> list[str] | None:
        """The general way (update_meta's row-locked update, then one delete)."""
        return None
