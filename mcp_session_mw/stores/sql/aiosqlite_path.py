"""The SQLite (aiosqlite) hot path: a load, and a whole write transaction as one thread hop."""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import StreamNotFoundError
from ...records import SessionRecord, StreamState
from ..base import note_streams
from .core_path import Batch
from .database import Database
from .failures import session_not_found
from .schema import dump_json, quoted_names, to_record


def aiosqlite_has_queue() -> bool:
    """Whether this aiosqlite has the internals the one-hop append uses (0.22 does)."""
    connection = getattr(importlib.import_module("aiosqlite"), "Connection", None)
    return callable(getattr(connection, "_execute", None)) and isinstance(
        getattr(connection, "_conn", None), property
    )


@dataclass(frozen=True)
class SQLiteStatements:
    """The append statements for aiosqlite, as SQL text (sqlite3 caches them prepared)."""

    returning: bool
    bump: str
    state: str
    live: str
    insert: str
    trim: str
    open: str
    finish: str
    lock_session: str
    set_payload: str
    drop_streams: str
    drop_events: str


class AiosqlitePath:
    """The hot path on aiosqlite's worker thread, through the queue aiosqlite runs its calls on.

    Each statement sent the usual way is a round trip to that thread (three or
    four through SQLAlchemy's cursor layer), and those hand-offs, not SQLite,
    were most of an append's cost. SQLAlchemy's adapter uses the same queue to
    set the isolation level; without it (see :func:`aiosqlite_has_queue`) the
    store takes the Core path.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        n = quoted_names(db.t, db.engine.dialect)
        returning = sqlite3.sqlite_version_info >= (3, 35)
        self._load = (
            f"SELECT {n.session_columns} FROM {n.sessions} WHERE {n.key} = ? AND expires_at > ?"
        )
        live = f"SELECT 1 FROM {n.sessions} WHERE {n.key} = :key AND expires_at > :now"
        where = "session_key = :key AND stream_id = :stream_id"
        self._sql = SQLiteStatements(
            returning=returning,
            bump=(
                f"UPDATE {n.streams} SET last_seq = last_seq + :n, first_seq = CASE"
                " WHEN last_seq + :n - first_seq >= :max THEN last_seq + :n - :max + 1"
                f" ELSE first_seq END WHERE {where} AND EXISTS ({live})"
                + (" RETURNING first_seq, last_seq" if returning else "")
            ),
            state=f"SELECT first_seq, last_seq FROM {n.streams} WHERE {where}",
            live=live,
            insert=(
                f"INSERT INTO {n.events} (session_key, stream_id, seq, event, data)"
                " VALUES (?, ?, ?, ?, ?)"
            ),
            trim=f"DELETE FROM {n.events} WHERE session_key = ? AND stream_id = ? AND seq < ?",
            open=(
                f"INSERT INTO {n.streams} (session_key, stream_id, request_id, owner,"
                " lease_expires, first_seq, last_seq, done)"
                " VALUES (:key, :stream_id, :request_id, :owner, :lease, 1, 0, 0)"
                " ON CONFLICT (session_key, stream_id) DO UPDATE SET"
                " request_id = excluded.request_id, owner = excluded.owner,"
                " lease_expires = excluded.lease_expires, done = 0"
            ),
            finish=f"UPDATE {n.streams} SET done = 1 WHERE {where}",
            lock_session=self._load,  # BEGIN IMMEDIATE has taken the write lock
            set_payload=f"UPDATE {n.sessions} SET payload = ?, version = ? WHERE {n.key} = ?",
            drop_streams=f"DELETE FROM {n.streams} WHERE session_key = ? AND stream_id = ?",
            drop_events=f"DELETE FROM {n.events} WHERE session_key = ? AND stream_id = ?",
        )

    async def load(self, key: str, now: float) -> SessionRecord | None:
        """The per-request load: SQLAlchemy's cursor layer would cost more than the query."""
        load = self._load

        async def fetch(db: Any) -> Any:
            return await db._execute(_fetchone, db._conn, load, (key, now))

        row = await self._db.on_driver(fetch)
        return None if row is None else to_record(tuple(row))

    async def append(self, batch: Batch) -> int:
        """The whole transaction as one call on aiosqlite's worker thread."""
        return await self.write_stream(batch, None, False)

    async def write_stream(self, batch: Batch, open_as: StreamState | None, finish: bool) -> int:
        """Open (or take over), append and finish in one transaction on the worker thread."""
        opening = None
        if open_as is not None:
            request_id = None if open_as.request_id is None else dump_json(open_as.request_id)
            opening = (request_id, open_as.owner, open_as.lease_expires)
        sql = self._sql

        async def write(db: Any) -> int:
            result: int = await db._execute(
                _write_batch,
                db._conn,
                sql,
                batch.key,
                batch.stream_id,
                batch.items,
                batch.max_events,
                batch.now,
                opening,
                finish,
            )
            return result

        return await self._db.on_driver(write)

    async def record_streams(self, key: str, new: list[str], keep: int, now: float) -> list[str]:
        """Note ``new`` and drop the oldest beyond ``keep``: one transaction, one thread hop."""
        sql = self._sql

        async def record(db: Any) -> list[str]:
            dropped: list[str] = await db._execute(
                _record_streams, db._conn, sql, key, new, keep, now
            )
            return dropped

        return await self._db.on_driver(record)


def _record_streams(
    conn: sqlite3.Connection,
    sql: SQLiteStatements,
    key: str,
    new: list[str],
    keep: int,
    now: float,
) -> list[str]:
    """On aiosqlite's thread: BEGIN IMMEDIATE, read the session, note, drop, COMMIT."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(sql.lock_session, (key, now)).fetchone()
        if row is None:
            raise session_not_found()
        current = to_record(tuple(row))
        meta, dropped = note_streams(current.meta, new, keep)
        if meta != current.meta:
            stored = current.evolve(meta=meta, version=current.version + 1)
            conn.execute(sql.set_payload, (stored.payload(), stored.version, key))
        if dropped:
            pairs = [(key, stream_id) for stream_id in dropped]
            conn.executemany(sql.drop_streams, pairs)
            conn.executemany(sql.drop_events, pairs)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return dropped


def _fetchone(
    conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
    return row


def _write_batch(
    conn: sqlite3.Connection,
    sql: SQLiteStatements,
    key: str,
    stream_id: str,
    items: Sequence[tuple[str, str | None]],
    max_events: int | None,
    now: float,
    open_as: tuple[str | None, str, float] | None = None,
    finish: bool = False,
) -> int:
    """Write a batch on aiosqlite's thread: BEGIN IMMEDIATE, UPDATE, INSERTs, trim, COMMIT.

    Returns the new last seq. The UPDATE checks the session is live, hands out
    the seqs and moves first_seq, all under the write lock BEGIN IMMEDIATE took.
    With ``open_as`` (request id JSON, owner, lease) the stream is opened (or
    taken over) first, and with ``finish`` marked done last, in the same
    transaction.
    """
    count = len(items)
    bump = {"n": count, "max": max_events, "key": key, "stream_id": stream_id, "now": now}
    conn.execute("BEGIN IMMEDIATE")
    try:
        if open_as is not None:
            if not conn.execute(sql.live, bump).fetchall():
                raise session_not_found()
            request_id, owner, lease = open_as
            conn.execute(
                sql.open,
                {**bump, "request_id": request_id, "owner": owner, "lease": lease},
            )
        if count == 0:
            if not conn.execute(sql.state, bump).fetchall():
                live = conn.execute(sql.live, bump).fetchall()
                raise StreamNotFoundError("stream not found") if live else session_not_found()
            last_seq = 0
            if finish:
                conn.execute(sql.finish, bump)
            conn.commit()
            return last_seq
        if sql.returning:
            rows = conn.execute(sql.bump, bump).fetchall()
        elif conn.execute(sql.bump, bump).rowcount == 1:  # SQLite before 3.35: read it back
            rows = conn.execute(sql.state, bump).fetchall()
        else:
            rows = []
        if not rows:
            live = conn.execute(sql.live, bump).fetchall()
            raise StreamNotFoundError("stream not found") if live else session_not_found()
        first_seq, last_seq = int(rows[0][0]), int(rows[0][1])
        start = last_seq - count + 1
        # Items the trim would remove at once are never written.
        conn.executemany(
            sql.insert,
            [
                (key, stream_id, start + offset, event, data)
                for offset, (data, event) in enumerate(items)
                if start + offset >= first_seq
            ],
        )
        if max_events is not None and 1 < first_seq == last_seq - max_events + 1:
            # The stream is full, so the UPDATE may have moved first_seq.
            conn.execute(sql.trim, (key, stream_id, first_seq))
        if finish:
            conn.execute(sql.finish, bump)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return last_seq
