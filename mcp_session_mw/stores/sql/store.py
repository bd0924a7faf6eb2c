"""``SQLStore``: the store contract on a SQL database, built from its rows, hot path and waits."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, StoreError
from ...records import Page, SessionRecord, StoredEvent, StreamState
from ..base import (
    DEFAULT_UPDATE_RETRIES,
    StateChange,
    Store,
    stored_batch,
)
from ..follower import Position, Slot, Watch, polling
from .aiosqlite_path import AiosqlitePath, aiosqlite_has_queue
from .asyncpg_path import AsyncpgPath
from .core_path import Batch, CorePath, HotPath
from .database import Database
from .engine import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    SCHEMES,
    build_engine,
    check_options,
    parse_url,
    require_sqlalchemy,
)
from .failures import translate
from .listener import Listener, SQLiteWatch
from .locks import LockRows
from .schema import DEFAULT_TABLE_PREFIX, drop_schema, tables
from .sessions import SessionRows
from .streams import StreamRows

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

DEFAULT_POLL_INTERVAL = 0.5
"""Seconds between two polls of every waited stream (SQLite, MariaDB). One query per
500 waited sessions per poll: at 0.05 s, 9,136 idle GET streams on SQLite cost 0.12 of
a core (bench/idle_streams.py); at 0.5 s a notification still arrives within 1 s."""
UNSUPPORTED_DIALECT = "SQLStore supports SQLite, PostgreSQL and MariaDB/MySQL, not {dialect!r}"
BAD_MAX_EVENTS = "max_events must be positive"


def choose_hot_path(
    db: Database, open_stream: Callable[[str, StreamState], Awaitable[StreamState]]
) -> HotPath:
    """The driver's own hot path where there is one (asyncpg, aiosqlite), else Core.

    ``open_stream`` is the store's general open, which asyncpg's path takes
    for a stream that exists already.
    """
    driver = db.engine.dialect.driver
    if db.postgres and driver == "asyncpg":
        return AsyncpgPath(db, open_stream)
    if db.sqlite and driver == "aiosqlite" and aiosqlite_has_queue():
        return AiosqlitePath(db)
    return CorePath(db)


class SQLStore(Store):
    """Sessions and their SSE events in three tables of a SQL database.

    Build it with :meth:`from_url` (or ``create_store(url)``), or hand it an
    :class:`~sqlalchemy.ext.asyncio.AsyncEngine` you own: the store then never
    disposes it and leaves its configuration alone (no WAL pragma, no
    isolation level), so set those up yourself for SQLite or MySQL.

    Tables: ``<prefix>sessions``, ``<prefix>streams``, ``<prefix>events`` and
    ``<prefix>schema_version``; :meth:`open` creates them (safe when several
    processes start at once) and checks the recorded schema version.
    """

    schemes = SCHEMES

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        secret: str | bytes | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        dispose_engine: bool = False,
    ) -> None:
        super().__init__(secret=secret)
        require_sqlalchemy("sqlite")  # no engine without SQLAlchemy, but say which extra
        check_options(table_prefix, poll_interval)
        self.table_prefix = table_prefix
        self.poll_interval = poll_interval
        self._engine = engine
        self._dispose_engine = dispose_engine
        backend = engine.dialect.name
        if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
            raise ConfigurationError(UNSUPPORTED_DIALECT.format(dialect=backend))
        t = tables(table_prefix)
        self._db = Database(engine, t)
        # The schema lock `mcp-session-mw db upgrade` takes as well (see migrations).
        self._advisory_lock_id = t.advisory_lock_id
        self._mysql_lock_name = t.mysql_lock_name
        self._sessions = SessionRows(self._db)
        self._streams = StreamRows(self._db)
        self._locks = LockRows(self._db)
        self._hot = choose_hot_path(self._db, self._open_stream)
        self._listener = (
            Listener(engine, self._db.channel, self._stream_positions)
            if self._db.postgres and engine.dialect.driver == "asyncpg"
            else None
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        secret: str | bytes | None = None,
        engine: AsyncEngine | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        **engine_options: Any,
    ) -> SQLStore:
        """A store for ``url``; ``engine_options`` go to ``create_async_engine``.

        Bare ``sqlite://``, ``postgresql://`` (or ``postgres://``), ``mysql://``
        and ``mariadb://`` pick aiosqlite, asyncpg and asyncmy. With ``engine``
        the URL only chose this class: the caller's engine is used as it is and
        never disposed. ``busy_timeout`` (SQLite) is how long a writer waits for
        the write lock held by another connection or process. ``timeout``
        (PostgreSQL, MySQL/MariaDB) bounds each wait on the server: a pool
        checkout, a connect, one statement; the pool checkout on SQLite too.
        A wait that runs out raises StoreUnavailableError (503 on the wire).
        """
        parsed = parse_url(url)
        check_options(table_prefix, poll_interval)
        if engine is not None:
            return cls(
                engine, table_prefix=table_prefix, secret=secret, poll_interval=poll_interval
            )
        new_engine = build_engine(
            parsed,
            pool_size=pool_size,
            busy_timeout=busy_timeout,
            timeout=timeout,
            engine_options=engine_options,
        )
        return cls(
            new_engine,
            table_prefix=table_prefix,
            secret=secret,
            poll_interval=poll_interval,
            dispose_engine=True,
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # -- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Create the tables if needed and check their schema version. Idempotent."""
        await self._db.open()

    async def close(self) -> None:
        """Close the follower (and its listener) and, when this store built the engine, its
        connections."""
        await self.follower.close()
        await self._db.release()
        self._db.opened = False
        if self._dispose_engine:
            await self._engine.dispose()

    async def drop_schema(self) -> None:
        """Drop this prefix's tables and everything in them (tests, uninstall)."""
        t = self._db.t
        await self._db.release()
        await self._db.transact(self._engine, lambda conn: drop_schema(conn, t), write=True)
        self._db.opened = False

    def _translate(self, exc: BaseException) -> StoreError:
        return translate(self._db.backend, exc)

    # -- sessions -----------------------------------------------------------------

    async def _insert(self, record: SessionRecord) -> None:
        await self._sessions.insert(record, self.now())

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        return await self._hot.load(key, now)

    async def _put(self, record: SessionRecord) -> None:
        await self._sessions.put(record)

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        return await self._sessions.compare_and_swap(record, expected_version, self.now())

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        return await self._sessions.touch(key, now, ttl)

    async def _delete(self, key: str) -> bool:
        return await self._sessions.delete(key, self.now())

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        return await self._sessions.list(limit, cursor, now)

    async def _cleanup(self, now: float) -> int:
        return await self._sessions.cleanup(now)

    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        return await self._locks.try_lock(name, owner, now, ttl)

    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        return await self._locks.unlock(name, owner, now)

    async def update(
        self,
        session_id: str,
        change: StateChange,
        *,
        retries: int = DEFAULT_UPDATE_RETRIES,
    ) -> SessionRecord:
        """Atomically change the session's state (see :meth:`Store.update`).

        A mapping or a plain function is applied under the session row's lock,
        so concurrent writers queue instead of retrying. An async function runs
        without the lock (it may use the store itself) and falls back to the
        compare-and-swap loop; so does a plain function that returns an awaitable.
        """
        if inspect.iscoroutinefunction(change):
            return await super().update(session_id, change, retries=retries)
        stored = await self._sessions.update_locked(self.key(session_id), change, "state", self.now)
        if stored is not None:
            return stored
        return await super().update(session_id, change, retries=retries)

    async def update_meta(self, session_id: str, change: StateChange) -> SessionRecord:
        """Like :meth:`update`, on the middleware's private ``meta`` dict."""
        if inspect.iscoroutinefunction(change):
            return await super().update_meta(session_id, change)
        stored = await self._sessions.update_locked(self.key(session_id), change, "meta", self.now)
        if stored is not None:
            return stored
        return await super().update_meta(session_id, change)

    async def _record_streams_in_meta(
        self, session_id: str, new: list[str], keep: int
    ) -> list[str]:
        """One transaction on the driver's connection where the hot path has one."""
        dropped = await self._hot.record_streams(self.key(session_id), new, keep, self.now())
        if dropped is None:
            return await super()._record_streams_in_meta(session_id, new, keep)
        return dropped

    # -- streams and events -----------------------------------------------------------

    async def _open_stream(self, key: str, state: StreamState) -> StreamState:
        return await self._streams.open(key, state, self.now())

    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None:
        return await self._streams.load(key, stream_id, self.now())

    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None:
        await self._streams.change(
            key, stream_id, {"lease_expires": lease_expires}, self.now(), notify=False
        )

    async def _finish_stream(self, key: str, stream_id: str) -> None:
        await self._streams.change(key, stream_id, {"done": True}, self.now(), notify=True)

    async def _append_event(
        self, key: str, stream_id: str, data: str, event: str | None, max_events: int | None
    ) -> StoredEvent:
        [stored] = await self._append_events(key, stream_id, [(data, event)], max_events)
        return stored

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        if max_events is not None and max_events < 1:
            raise ValueError(BAD_MAX_EVENTS)
        if not items:
            return []
        last_seq = await self._hot.append(Batch(key, stream_id, items, max_events, self.now()))
        return stored_batch(stream_id, last_seq, items)

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        """One round trip on asyncpg (a new stream) and aiosqlite; else the calls in turn."""
        batch = Batch(key, stream_id, items, max_events, self.now())
        last_seq = await self._hot.write_stream(batch, open_as, finish)
        if last_seq is None:
            return await super()._write_stream(key, stream_id, items, open_as, finish, max_events)
        return stored_batch(stream_id, last_seq, items)

    async def _list_streams(self, key: str) -> list[StreamState]:
        return await self._streams.of_session(key, self.now())

    async def _delete_stream(self, key: str, stream_id: str) -> bool:
        return await self._streams.delete(key, stream_id)

    async def _delete_streams(self, key: str, stream_ids: list[str]) -> int:
        return await self._streams.delete_many(key, stream_ids)

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        return await self._streams.read_events(key, stream_id, after_seq, limit, self.now())

    async def _poll_stream(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredEvent], bool]:
        return await self._streams.poll(key, stream_id, after_seq, limit, self.now())

    def _follow_watch(self) -> Watch:
        """PostgreSQL on asyncpg: one LISTEN connection. SQLite: a poll of every waited stream
        after a commit, looked for each ``poll_interval``. MariaDB: that poll each interval."""
        if self._listener is not None:
            return self._listener
        if self._db.sqlite:
            return SQLiteWatch(self._engine, self._stream_positions, lambda: self.poll_interval)
        return polling(self._stream_positions, lambda: self.poll_interval)

    async def _stream_positions(self, slots: Sequence[Slot]) -> dict[Slot, Position]:
        return await self._streams.positions(slots, self.now())
