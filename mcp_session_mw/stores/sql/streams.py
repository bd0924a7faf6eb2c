"""Stream rows and event reads on every driver: open, load, renew, finish, delete, read, poll."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import SessionNotFoundError, StreamNotFoundError
from ...records import StoredEvent, StreamState
from .database import Database
from .failures import RaceLost
from .schema import dump_json, load_json

with contextlib.suppress(ImportError):  # engine.require_sqlalchemy names the extra
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


POSITIONS_BATCH = 500
"""Sessions looked up by one query of :meth:`StreamRows.positions`."""


def _stream_is(table: sa.Table, key: str, stream_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.session_key == key, table.c.stream_id == stream_id)


class StreamRows:
    """The stream primitives of :class:`SQLStore` but the append (see :mod:`.core_path`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def open(self, key: str, state: StreamState, now: float) -> StreamState:
        db, t = self._db, self._db.t
        streams = t.streams
        request_id = None if state.request_id is None else dump_json(state.request_id)

        async def open_stream(conn: AsyncConnection) -> StreamState:
            # Share-lock the session row: a concurrent delete waits for us and
            # then removes this stream too, instead of leaving it orphaned.
            live = await conn.scalar(
                sa.select(t.sessions.c.key).where(t.live(key, now)).with_for_update(read=True)
            )
            if live is None:
                raise SessionNotFoundError("session not found")
            where = _stream_is(streams, key, state.stream_id)
            existing = (
                await conn.execute(
                    sa.select(streams.c.first_seq, streams.c.last_seq)
                    .where(where)
                    .with_for_update()
                )
            ).first()
            if existing is None:
                first_seq, last_seq = 1, 0
                try:
                    await conn.execute(
                        sa.insert(streams).values(
                            session_key=key,
                            stream_id=state.stream_id,
                            request_id=request_id,
                            owner=state.owner,
                            lease_expires=state.lease_expires,
                            first_seq=first_seq,
                            last_seq=last_seq,
                            done=False,
                        )
                    )
                except sa_exc.IntegrityError as exc:
                    raise RaceLost from exc
            else:
                first_seq, last_seq = int(existing[0]), int(existing[1])
                await conn.execute(
                    sa.update(streams)
                    .where(where)
                    .values(
                        request_id=request_id,
                        owner=state.owner,
                        lease_expires=state.lease_expires,
                        done=False,
                    )
                )
            await db.notify(conn, key, state.stream_id)
            return StreamState(
                stream_id=state.stream_id,
                request_id=state.request_id,
                owner=state.owner,
                lease_expires=state.lease_expires,
                first_seq=first_seq,
                last_seq=last_seq,
                done=False,
            )

        return await db.write_upsert(open_stream)

    async def load(self, key: str, stream_id: str, now: float) -> StreamState | None:
        t = self._db.t
        streams = t.streams
        query = (
            sa.select(
                streams.c.request_id,
                streams.c.owner,
                streams.c.lease_expires,
                streams.c.first_seq,
                streams.c.last_seq,
                streams.c.done,
            )
            .join(t.sessions, t.sessions.c.key == streams.c.session_key)
            .where(_stream_is(streams, key, stream_id), t.live(key, now))
        )

        async def load(conn: AsyncConnection) -> StreamState | None:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            request_id, owner, lease_expires, first_seq, last_seq, done = row
            return StreamState(
                stream_id=stream_id,
                request_id=None if request_id is None else load_json(request_id),
                owner=owner,
                lease_expires=float(lease_expires),
                first_seq=int(first_seq),
                last_seq=int(last_seq),
                done=bool(done),
            )

        return await self._db.read(load)

    async def of_session(self, key: str, now: float) -> list[StreamState]:
        """Every stream of the live session under ``key``, ordered by stream id."""
        streams = self._db.t.streams
        query = (
            sa.select(streams.c.stream_id)
            .join(self._db.t.sessions, self._db.t.sessions.c.key == streams.c.session_key)
            .where(streams.c.session_key == key, self._db.t.live(key, now))
            .order_by(streams.c.stream_id)
        )

        async def stream_ids(conn: AsyncConnection) -> list[str]:
            return [str(row[0]) for row in (await conn.execute(query)).all()]

        states = [await self.load(key, sid, now) for sid in await self._db.read(stream_ids)]
        return [state for state in states if state is not None]

    async def change(
        self, key: str, stream_id: str, values: dict[str, Any], now: float, *, notify: bool
    ) -> None:
        """Set ``values`` on a stream of a live session (renew, finish)."""
        db, t = self._db, self._db.t
        streams = t.streams

        async def change(conn: AsyncConnection) -> None:
            live = await conn.scalar(sa.select(t.sessions.c.key).where(t.live(key, now)))
            if live is None:
                raise SessionNotFoundError("session not found")
            result = await conn.execute(
                sa.update(streams).where(_stream_is(streams, key, stream_id)).values(values)
            )
            if result.rowcount == 0:
                raise StreamNotFoundError("stream not found")
            if notify:
                await db.notify(conn, key, stream_id)

        await db.write(change)

    async def delete(self, key: str, stream_id: str) -> bool:
        db, t = self._db, self._db.t
        streams, events = t.streams, t.events

        async def delete_stream(conn: AsyncConnection) -> bool:
            # Stream row first (it is the lock appenders take), then its events:
            # an append that got the lock before us has committed its rows by now.
            removed = await conn.execute(
                sa.delete(streams).where(_stream_is(streams, key, stream_id))
            )
            await conn.execute(sa.delete(events).where(_stream_is(events, key, stream_id)))
            if removed.rowcount > 0:
                await db.notify(conn, key, stream_id)  # waiters see "gone" and return
            return removed.rowcount > 0

        return await db.write(delete_stream)

    async def delete_many(self, key: str, stream_ids: list[str]) -> int:
        db, t = self._db, self._db.t
        streams, events = t.streams, t.events

        async def delete_streams(conn: AsyncConnection) -> int:
            # As in delete: stream rows first, then their events. On PostgreSQL
            # the rows found are notified (delivered at commit).
            chosen = sa.and_(streams.c.session_key == key, streams.c.stream_id.in_(stream_ids))
            found = (
                sa.func.pg_notify(db.channel, sa.literal(f"{key}:") + streams.c.stream_id)
                if db.postgres
                else streams.c.stream_id
            )
            existing = (await conn.execute(sa.select(found).where(chosen))).all()
            await conn.execute(sa.delete(streams).where(chosen))
            await conn.execute(
                sa.delete(events).where(
                    events.c.session_key == key, events.c.stream_id.in_(stream_ids)
                )
            )
            return len(existing)

        return await db.write(delete_streams)

    def _events_query(
        self, key: str, stream_id: str, after_seq: int, limit: int, now: float
    ) -> sa.Select[Any]:
        t = self._db.t
        events = t.events
        alive = sa.select(t.sessions.c.key).where(t.live(key, now)).exists()
        return (
            sa.select(events.c.seq, events.c.event, events.c.data)
            .where(_stream_is(events, key, stream_id), events.c.seq > after_seq, alive)
            .order_by(events.c.seq)
            .limit(limit)
        )

    async def read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int, now: float
    ) -> list[StoredEvent]:
        query = self._events_query(key, stream_id, after_seq, limit, now)

        async def read(conn: AsyncConnection) -> list[StoredEvent]:
            rows = (await conn.execute(query)).all()
            return [StoredEvent(stream_id, int(seq), data, event) for seq, event, data in rows]

        return await self._db.read(read)

    async def poll(
        self, key: str, stream_id: str, after_seq: int, limit: int, now: float
    ) -> tuple[list[StoredEvent], bool]:
        """New events, and whether the stream is finished or gone (nothing more will come)."""
        t = self._db.t
        streams = t.streams
        state_query = (
            sa.select(streams.c.last_seq, streams.c.done)
            .join(t.sessions, t.sessions.c.key == streams.c.session_key)
            .where(_stream_is(streams, key, stream_id), t.live(key, now))
        )

        async def poll(conn: AsyncConnection) -> tuple[list[StoredEvent], bool]:
            row = (await conn.execute(state_query)).first()
            if row is None:
                return [], True
            last_seq, done = int(row[0]), bool(row[1])
            if last_seq <= after_seq:
                return [], done
            rows = (
                await conn.execute(self._events_query(key, stream_id, after_seq, limit, now))
            ).all()
            found = [StoredEvent(stream_id, int(seq), data, event) for seq, event, data in rows]
            return found, done and not found

        return await self._db.read(poll)

    async def positions(
        self, slots: Sequence[tuple[str, str]], now: float
    ) -> dict[tuple[str, str], tuple[int, bool]]:
        """``(last_seq, done)`` of each live stream of ``slots``; one query per batch of sessions.

        Rows are picked by session key and stream id separately (an index range
        on every dialect, where pairs would not be); the few extra streams of
        the same sessions are dropped here.
        """
        t = self._db.t
        streams = t.streams
        wanted = set(slots)
        keys = sorted({key for key, _ in wanted})
        stream_ids = sorted({stream_id for _, stream_id in wanted})
        found: dict[tuple[str, str], tuple[int, bool]] = {}
        for start in range(0, len(keys), POSITIONS_BATCH):
            query = (
                sa.select(
                    streams.c.session_key, streams.c.stream_id, streams.c.last_seq, streams.c.done
                )
                .join(t.sessions, t.sessions.c.key == streams.c.session_key)
                .where(
                    streams.c.session_key.in_(keys[start : start + POSITIONS_BATCH]),
                    streams.c.stream_id.in_(stream_ids),
                    t.sessions.c.expires_at > now,
                )
            )

            async def look(conn: AsyncConnection, query: Any = query) -> list[Any]:
                return list((await conn.execute(query)).all())

            for key, stream_id, last_seq, done in await self._db.read(look):
                if (key, stream_id) in wanted:
                    found[key, stream_id] = (int(last_seq), bool(done))
        return found
