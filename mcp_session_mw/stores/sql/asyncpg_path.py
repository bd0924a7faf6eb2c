"""The PostgreSQL (asyncpg) hot path: a load, an append, a new stream, one statement each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ...errors import StreamNotFoundError
from ...records import SessionRecord, StreamState
from ..base import note_streams
from .core_path import Batch
from .database import Database
from .failures import session_not_found
from .schema import dump_json, quoted_names, to_record


class AsyncpgPath:
    """The hot path on asyncpg's own connection: its statements, built once per store."""

    def __init__(
        self, db: Database, open_stream: Callable[[str, StreamState], Awaitable[StreamState]]
    ) -> None:
        self._db = db
        self._open_stream = open_stream
        """The store's general open (Core), for a stream :meth:`write_stream` finds there."""
        n = quoted_names(db.t, db.engine.dialect)
        sessions, streams, events, key_column = n.sessions, n.streams, n.events, n.key
        # $1 key, $2 stream id, $3 now, $4 batch size, $5 max_events (NULL: no
        # limit), $6 data[], $7 event[], $8 channel, $9 payload, $10 finish.
        # Data-modifying CTEs all run; rows the trim would drop at once are
        # never inserted.
        self._append = f"""
WITH bumped AS (
    UPDATE {streams} AS st
    SET last_seq = st.last_seq + $4::bigint,
        done = st.done OR $10::boolean,
        first_seq = CASE
            WHEN st.last_seq + $4::bigint - st.first_seq >= $5::bigint
            THEN st.last_seq + $4::bigint - $5::bigint + 1
            ELSE st.first_seq
        END
    WHERE st.session_key = $1 AND st.stream_id = $2
      AND EXISTS (SELECT FROM {sessions} AS se WHERE se.{key_column} = $1 AND se.expires_at > $3)
    RETURNING st.first_seq, st.last_seq
), added AS (
    INSERT INTO {events} (session_key, stream_id, seq, event, data)
    SELECT $1, $2, b.last_seq - $4::bigint + i.ord, i.event, i.data
    FROM bumped AS b, unnest($6::text[], $7::text[]) WITH ORDINALITY AS i (data, event, ord)
    WHERE b.last_seq - $4::bigint + i.ord >= b.first_seq
), trimmed AS (
    DELETE FROM {events} AS e
    WHERE e.session_key = $1 AND e.stream_id = $2
      AND e.seq < (SELECT first_seq FROM bumped)
)
SELECT b.last_seq,
       b.first_seq,
       b.last_seq IS NOT NULL OR EXISTS (
           SELECT FROM {sessions} AS se WHERE se.{key_column} = $1 AND se.expires_at > $3
       ),
       b.last_seq - $4::bigint <> (
           SELECT last_seq FROM {streams} WHERE session_key = $1 AND stream_id = $2
       ),
       CASE WHEN b.last_seq IS NOT NULL THEN pg_notify($8, $9) END
FROM (VALUES (1)) AS one (x) LEFT JOIN bumped AS b ON true
"""
        self._trim = f"DELETE FROM {events} WHERE session_key = $1 AND stream_id = $2 AND seq < $3"
        self._load = (
            f"SELECT {n.session_columns} FROM {sessions}"
            f" WHERE {key_column} = $1 AND expires_at > $2"
        )
        # A new stream opened with its first events (and maybe finished): $1-$9
        # as above, $10 finish, $11 request id, $12 owner, $13 lease. The session
        # row is share-locked like open_stream does, so a concurrent delete
        # waits and then removes this stream too. A stream that exists already
        # inserts nothing (first column NULL); the caller takes the long way.
        self._open = f"""
WITH live AS (
    SELECT FROM {sessions} WHERE {key_column} = $1 AND expires_at > $3 FOR SHARE
), opened AS (
    INSERT INTO {streams} AS st
        (session_key, stream_id, request_id, owner, lease_expires, first_seq, last_seq, done)
    SELECT $1, $2, $11, $12, $13,
           CASE WHEN $4::bigint > $5::bigint THEN $4::bigint - $5::bigint + 1 ELSE 1 END,
           $4::bigint, $10::boolean
    FROM live
    ON CONFLICT (session_key, stream_id) DO NOTHING
    RETURNING st.first_seq, st.last_seq
), added AS (
    INSERT INTO {events} (session_key, stream_id, seq, event, data)
    SELECT $1, $2, i.ord, i.event, i.data
    FROM opened AS o, unnest($6::text[], $7::text[]) WITH ORDINALITY AS i (data, event, ord)
    WHERE i.ord >= o.first_seq
)
SELECT (SELECT last_seq FROM opened),
       EXISTS (SELECT FROM live),
       CASE WHEN EXISTS (SELECT FROM opened) THEN pg_notify($8, $9) END
"""

        self._lock_session = f"{self._load} FOR UPDATE"
        self._set_payload = (
            f"UPDATE {sessions} SET payload = $2, version = $3 WHERE {key_column} = $1"
        )
        # Stream rows first (the lock appenders take), then their events, in two
        # statements: an append that held a row's lock has committed its events
        # by the time the second statement takes its snapshot.
        self._drop_streams = f"""
WITH gone AS (
    DELETE FROM {streams} WHERE session_key = $1 AND stream_id = ANY($2::text[])
    RETURNING stream_id
)
SELECT count(pg_notify($3, $1 || ':' || stream_id)) FROM gone
"""
        self._drop_events = (
            f"DELETE FROM {events} WHERE session_key = $1 AND stream_id = ANY($2::text[])"
        )

    async def load(self, key: str, now: float) -> SessionRecord | None:
        """The per-request load: SQLAlchemy's cursor layer would cost more than the query."""
        load = self._load

        async def fetch(pg: Any) -> Any:
            return await pg.fetchrow(load, key, now)

        row = await self._db.on_driver(fetch)
        return None if row is None else to_record(tuple(row))

    async def append(self, batch: Batch, *, finish: bool = False) -> int:
        """The whole batch in one statement, outside any transaction: one round trip.

        A single statement is atomic on its own. The UPDATE of the stream row
        takes its lock and hands out the seqs, so concurrent batches queue on it
        and never share a seq; the session row is only read. All parts of the
        statement read one snapshot, taken before the lock was granted; when a
        concurrent batch committed in between (the last column says so), a
        second statement finishes the trim.
        """
        sql = self._append
        args = self._batch_args(batch, finish)

        async def append(pg: Any) -> Any:
            return await pg.fetchrow(sql, *args)

        last_seq, first_seq, live, raced, _ = await self._db.on_driver(append)
        key, stream_id, max_events = batch.key, batch.stream_id, batch.max_events
        if last_seq is None:
            raise StreamNotFoundError("stream not found") if live else session_not_found()
        if raced and max_events is not None and first_seq > 1:
            # Another batch committed between this statement's snapshot and its
            # lock on the stream row, so the trim could not see that batch's rows.
            # Trimming is idempotent: finish it with a fresh snapshot.
            trim = self._trim

            async def finish_trim(pg: Any) -> Any:
                return await pg.execute(trim, key, stream_id, first_seq)

            await self._db.on_driver(finish_trim)
        return int(last_seq)

    async def write_stream(
        self, batch: Batch, open_as: StreamState | None, finish: bool
    ) -> int | None:
        """A new stream with its events in one round trip; None: make the calls in turn."""
        if not batch.items and open_as is not None:
            return None
        if open_as is not None:
            opened = await self._open_new(batch, open_as, finish)
            if opened is not None:
                return opened
            await self._open_stream(batch.key, open_as)
        return await self.append(batch, finish=finish)

    async def _open_new(self, batch: Batch, open_as: StreamState, finish: bool) -> int | None:
        """A new stream with its first events in one statement; None if the stream exists."""
        sql = self._open
        request_id = None if open_as.request_id is None else dump_json(open_as.request_id)
        args = (
            *self._batch_args(batch, finish),
            request_id,
            open_as.owner,
            open_as.lease_expires,
        )

        async def write(pg: Any) -> Any:
            return await pg.fetchrow(sql, *args)

        last_seq, live, _ = await self._db.on_driver(write)
        if not live:
            raise session_not_found()
        return None if last_seq is None else int(last_seq)

    async def record_streams(self, key: str, new: list[str], keep: int, now: float) -> list[str]:
        """One transaction: lock the session row, note ``new``, drop the oldest beyond ``keep``."""
        lock, set_payload = self._lock_session, self._set_payload
        drop_streams, drop_events, channel = self._drop_streams, self._drop_events, self._db.channel

        async def record(pg: Any) -> list[str]:
            async with pg.transaction():
                row = await pg.fetchrow(lock, key, now)
                if row is None:
                    raise session_not_found()
                current = to_record(tuple(row))
                meta, dropped = note_streams(current.meta, new, keep)
                if meta != current.meta:
                    stored = current.evolve(meta=meta, version=current.version + 1)
                    await pg.execute(set_payload, key, stored.payload(), stored.version)
                if dropped:
                    await pg.fetchval(drop_streams, key, dropped, channel)
                    await pg.execute(drop_events, key, dropped)
            return dropped

        return await self._db.on_driver(record)

    def _batch_args(self, batch: Batch, finish: bool) -> tuple[Any, ...]:
        """Parameters $1 to $10 of the append and open statements."""
        key, stream_id, items = batch.key, batch.stream_id, batch.items
        return (
            key,
            stream_id,
            batch.now,
            len(items),
            batch.max_events,
            [data for data, _ in items],
            [event for _, event in items],
            self._db.channel,
            f"{key}:{stream_id}",
            finish,
        )
