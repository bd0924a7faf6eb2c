"""SQLAlchemy 2 async store: SQLite (the embedded default), PostgreSQL, MariaDB/MySQL.

Core, not the ORM: every primitive is one short transaction of a few statements
written out by hand, because the concurrency rules below depend on exactly which
statements run and which rows they lock.

Concurrency rules (why it is safe with many processes on one database):

- SQLite runs in WAL mode, so readers never wait for the writer. Every write
  transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front
  and queues on SQLite's busy handler, instead of starting as a reader and
  failing with ``SQLITE_BUSY`` when it tries to upgrade. Reads run outside any
  transaction, one statement each.
- PostgreSQL and MariaDB/MySQL run READ COMMITTED (the engines this module
  builds ask for it on MySQL, whose default is REPEATABLE READ with gap locks).
  Row locks are always taken in one order — session row, then stream row — so
  the primitives cannot deadlock each other: ``_delete`` locks the session row
  and then its streams; ``_open_stream`` share-locks the session row and then
  writes the stream row; ``_append_events`` locks only the stream row and merely
  reads the session row. Deadlocks the server reports anyway are retried.
- ``_append_events`` numbers a whole batch under the stream row's lock (SQLite:
  under the database write lock), so concurrent appenders never collide on a
  seq. It is the hot path and is written per driver: one statement on asyncpg
  (a CTE, no transaction around it), one hop to aiosqlite's thread for the
  whole transaction, and a fixed four or five Core statements elsewhere
  (MariaDB/MySQL), whatever the batch size. ``_append_event`` is a batch of one.
- Engines this module builds skip the pool's pre-ping and its ROLLBACK on
  return (both round trips on every operation). A connection the server closed
  while pooled is caught at checkout on asyncpg, and otherwise by its first
  statement, after which the transaction runs once more on a new connection.
- ``update`` (and ``update_meta``) with a mapping or a plain function locks the
  session row for the read-modify-write instead of retrying compare-and-swaps;
  an async function runs unlocked with the base class's CAS loop, because it
  may await the store itself and would deadlock on its own lock.

Live waits: PostgreSQL (asyncpg) gets ``LISTEN``/``NOTIFY`` on a channel named
after the table prefix — appends, finishes and re-opens notify ``<key>:<stream>``
and a per-store listener connection (opened on the first wait) wakes the
waiters. If the listener cannot be set up or dies, waits poll every
``poll_interval`` seconds until it is back. SQLite and MariaDB always poll.

Named locks (``try_lock``) are rows of the streams table: a stream row already
is a lease (``owner``, ``lease_expires``), so locks need no table of their own
and no schema change. A lock's row sits under the digest of ``lock <name>``,
which no session id hashes to (ids have no space), under stream id ``lock``;
with no session row above it, no stream or session operation ever sees it.
Taking a lock is one write transaction: take over the row if its lease ran
out, else insert it; a concurrent insert of the same row fails on the primary
key, so exactly one of two racing processes gets the lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import logging
import random
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ..errors import (
    ConfigurationError,
    MissingExtraError,
    SessionExistsError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    StreamNotFoundError,
)
from ..records import JSONValue, Page, SessionRecord, StoredEvent, StreamState, merge_state
from .base import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_UPDATE_RETRIES,
    StateChange,
    Store,
    check_state,
    stored_batch,
)

_IMPORT_ERROR: ImportError | None = None
try:
    import sqlalchemy as sa
    from sqlalchemy import event as sa_event
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects import mysql as sa_mysql
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.util import await_only
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    _IMPORT_ERROR = _exc

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
"""The schema this release reads and writes; stored in ``<prefix>schema_version``.

The one source of truth for the version number: ``mcp-session-mw db upgrade``
migrates to the Alembic revision named after it (``mcp_session_mw/migrations``).
"""

DEFAULT_TABLE_PREFIX = "mcp_session_"
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 5
DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for the write lock before giving up."""
DEFAULT_CONNECT_TIMEOUT = 10.0
SCHEMA_LOCK_TIMEOUT = 60
"""Seconds ``open`` waits for another process that is creating the schema (MySQL)."""
LISTEN_RETRY_DELAY = 5.0
"""Seconds between attempts to (re)open the PostgreSQL listener after a failure."""
LISTEN_RECHECK_INTERVAL = 1.0
"""While listening, re-read at least this often anyway, in case a notification is lost."""
CLEANUP_BATCH = 500
LOCK_CONFLICT_RETRIES = 3
STALE_CHECKOUTS = 16
"""Pooled connections found closed that one call discards before it gives up on the pool."""
MAX_PREFIX_LENGTH = 40
MAX_STREAM_ID_LENGTH = 128
LOCK_STREAM_ID = "lock"
"""Stream id of a named lock's row (see the module docstring)."""

# Messages tests assert on.
UNSUPPORTED_SCHEME = "SQLStore does not serve {scheme!r} URLs; use one of: {known}"
UNSUPPORTED_DIALECT = "SQLStore supports SQLite, PostgreSQL and MariaDB/MySQL, not {dialect!r}"
BAD_URL = "not a usable database URL: {url!r}"
BAD_TABLE_PREFIX = (
    "table_prefix must be 1 to {max} letters, digits or underscores, "
    "not starting with a digit; got {prefix!r}"
)
SQLITE_IN_MEMORY = (
    "an in-memory SQLite database lives and dies with one connection; "
    "give a file path, or use memory:// for an in-process store"
)
SCHEMA_TOO_NEW = (
    "the session tables with prefix {prefix!r} are at schema version {found}, newer than "
    "this mcp-session-mw supports ({supported}); upgrade mcp-session-mw"
)
SCHEMA_TOO_OLD = (
    "the session tables with prefix {prefix!r} are at schema version {found}, older than "
    "this mcp-session-mw needs ({supported}); run `mcp-session-mw db upgrade`"
)
SCHEMA_LOCK_TIMED_OUT = "timed out waiting for another process to create the session tables"
STORE_UNAVAILABLE = "the {backend} database cannot be reached: {error}"
STORE_FAILED = "the {backend} database failed the operation: {error}"
RACE_LOST = "another writer kept inserting the same row first ({times} times)"
BAD_POLL_INTERVAL = "poll_interval must be a positive number of seconds"
CORRUPT_RECORD = "a stored session record cannot be read"
BAD_MAX_EVENTS = "max_events must be positive"
LISTEN_FAILED = "cannot LISTEN on PostgreSQL channel %r (%s); live waits poll every %.3fs"
LISTEN_CLEANUP_FAILED = "ignored while closing the PostgreSQL listener: %r"
CONNECTION_CLEANUP_FAILED = "ignored while discarding a broken database connection: %r"
LISTEN_LOST = "the PostgreSQL listener connection for channel %r was lost; polling until it is back"

# Bare schemes pick the default async driver.
_DEFAULT_DRIVER = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}
# SQLAlchemy scheme -> (driver module, extra that installs it).
_DRIVERS = {
    "sqlite+aiosqlite": ("aiosqlite", "sqlite"),
    "postgresql+asyncpg": ("asyncpg", "postgres"),
    "mysql+asyncmy": ("asyncmy", "mysql"),
    "mariadb+asyncmy": ("asyncmy", "mysql"),
    "mysql+aiomysql": ("aiomysql", "mysql"),
    "mariadb+aiomysql": ("aiomysql", "mysql"),
}
_PREFIX_RE = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_PREFIX_LENGTH - 1}}}")

# Server states that mean "cannot reach it right now" rather than "it said no".
_PG_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300"}  # + every class 08 state
_MYSQL_UNAVAILABLE = {1040, 1053, 1927, 2002, 2003, 2005, 2006, 2013, 2055}
_PG_LOCK_CONFLICT = {"40001", "40P01"}
_MYSQL_LOCK_CONFLICT = {1020, 1213}


class _RaceLost(Exception):
    """A concurrent writer inserted the row this transaction meant to insert; run it again."""


class _LockTaken(Exception):
    """Another process inserted the lock row first."""


class _UserCodeError(Exception):
    """Carries an exception raised by the caller's update function out unchanged."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True)
class _Tables:
    metadata: sa.MetaData
    schema_version: sa.Table
    sessions: sa.Table
    streams: sa.Table
    events: sa.Table


@dataclass(frozen=True)
class _SQLiteAppend:
    """The append statements for aiosqlite, as SQL text (sqlite3 caches them prepared)."""

    returning: bool
    bump: str
    state: str
    live: str
    insert: str
    trim: str
    open: str
    finish: str


@dataclass(frozen=True)
class _AppendSQL:
    """The append path of one store, built once: asyncpg or aiosqlite text, else Core."""

    postgres: str | None
    postgres_trim: str | None
    postgres_open: str | None
    load: str | None
    sqlite: _SQLiteAppend | None
    lock: sa.Select[Any]
    live: sa.Select[Any]
    insert: sa.Insert
    bump: sa.Update
    trim: sa.Delete


def _sqlite_append(
    conn: sqlite3.Connection,
    sql: _SQLiteAppend,
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
                raise _session_not_found()
            request_id, owner, lease = open_as
            conn.execute(
                sql.open,
                {**bump, "request_id": request_id, "owner": owner, "lease": lease},
            )
        if count == 0:
            if not conn.execute(sql.state, bump).fetchall():
                live = conn.execute(sql.live, bump).fetchall()
                raise StreamNotFoundError("stream not found") if live else _session_not_found()
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
            raise StreamNotFoundError("stream not found") if live else _session_not_found()
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


def _sqlite_fetchone(
    conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
    return row


def _session_not_found() -> SessionNotFoundError:
    return SessionNotFoundError("session not found")


@lru_cache(maxsize=64)
def _tables(prefix: str) -> _Tables:
    """The tables of one prefix; shared by every store on it, so compiled SQL is cached once."""
    both = ("mysql", "mariadb")
    # Keys are hex digests: ASCII and binary collation keep the index small.
    key_type = sa.CHAR(64).with_variant(
        sa_mysql.CHAR(64, charset="ascii", collation="ascii_bin"), *both
    )
    # Stream ids must compare case-sensitively ("a" and "A" are two streams).
    ident_type = sa.String(MAX_STREAM_ID_LENGTH).with_variant(
        sa_mysql.VARCHAR(MAX_STREAM_ID_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"), *both
    )
    # MySQL TEXT stops at 64 KiB; session state and tool results can be bigger.
    long_text = sa.Text().with_variant(sa_mysql.LONGTEXT(charset="utf8mb4"), *both)
    table_options: dict[str, Any] = {
        "mysql_engine": "InnoDB",
        "mysql_charset": "utf8mb4",
        "mariadb_engine": "InnoDB",
        "mariadb_charset": "utf8mb4",
    }
    metadata = sa.MetaData()
    schema_version = sa.Table(
        f"{prefix}schema_version",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        **table_options,
    )
    sessions = sa.Table(
        f"{prefix}sessions",
        metadata,
        sa.Column("key", key_type, primary_key=True),
        sa.Column("principal", sa.Text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_accessed", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("ttl", sa.Double, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("payload", long_text, nullable=False),
        sa.Index(f"ix_{prefix}sessions_expires_at", "expires_at"),
        **table_options,
    )
    streams = sa.Table(
        f"{prefix}streams",
        metadata,
        sa.Column("session_key", key_type, primary_key=True),
        sa.Column("stream_id", ident_type, primary_key=True),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("lease_expires", sa.Double, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        **table_options,
    )
    events = sa.Table(
        f"{prefix}events",
        metadata,
        sa.Column("session_key", key_type, primary_key=True),
        sa.Column("stream_id", ident_type, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event", sa.Text, nullable=True),
        sa.Column("data", long_text, nullable=False),
        **table_options,
    )
    return _Tables(metadata, schema_version, sessions, streams, events)


def _require(extra: str, module: str) -> None:
    """Import ``module`` or raise MissingExtraError naming the extra that installs it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, module) from exc


def _parse_url(url: str) -> URL:
    """Map a bare scheme to its default async driver and check that driver is installed."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(BAD_URL.format(url=url))
    scheme, rest = url.split("://", 1)
    scheme = _DEFAULT_DRIVER.get(scheme.lower(), scheme.lower())
    driver = _DRIVERS.get(scheme)
    if driver is None:
        known = ", ".join(sorted({*_DEFAULT_DRIVER, *_DRIVERS}))
        raise ConfigurationError(UNSUPPORTED_SCHEME.format(scheme=scheme, known=known))
    module, extra = driver
    if _IMPORT_ERROR is not None:
        raise MissingExtraError(extra, "sqlalchemy") from _IMPORT_ERROR
    _require(extra, "greenlet")  # SQLAlchemy's asyncio layer runs on it
    _require(extra, module)
    try:
        return sa.make_url(f"{scheme}://{rest}")
    except sa_exc.ArgumentError as exc:
        raise ConfigurationError(BAD_URL.format(url=url)) from exc


def _check_options(table_prefix: str, poll_interval: float) -> None:
    if not isinstance(table_prefix, str) or not _PREFIX_RE.fullmatch(table_prefix):
        raise ConfigurationError(
            BAD_TABLE_PREFIX.format(max=MAX_PREFIX_LENGTH, prefix=table_prefix)
        )
    if not poll_interval > 0:
        raise ConfigurationError(BAD_POLL_INTERVAL)


def _sqlite_on_connect(busy_timeout: float) -> Callable[[Any, Any], None]:
    """The connect hook: WAL lets readers and one writer work at once across processes.

    ``synchronous=NORMAL`` is safe with WAL: a crash of the process loses
    nothing, a power cut may lose the last commits but never corrupts the file.
    """

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            _enter_wal(cursor, busy_timeout)
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


def _enter_wal(cursor: Any, busy_timeout: float) -> None:
    """Switch the file to WAL, waiting out connections that race to do the same.

    The switch upgrades a read lock to an exclusive one. When several
    connections to a fresh file try it at once, SQLite refuses all but one at
    once ("database is locked") without calling the busy handler, since
    waiting could deadlock. The mode is kept in the file, so a retry after the
    winner commits finds it done. This hook runs in SQLAlchemy's greenlet on
    the event loop, so it waits with ``await_only`` rather than blocking it.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        await_only(asyncio.sleep(pause * (0.5 + random.random())))
        pause = min(pause * 2, 0.2)


def _drop_closed_asyncpg(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Refuse a pooled asyncpg connection whose server side has gone; the pool reconnects.

    asyncpg sees the socket close even while the connection sits idle in the
    pool, so this costs no round trip, unlike a pre-ping.
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sa_exc.DisconnectionError("the PostgreSQL connection was closed while pooled")


def _aiosqlite_has_queue() -> bool:
    """Whether this aiosqlite has the internals the one-hop append uses (0.22 does)."""
    connection = getattr(importlib.import_module("aiosqlite"), "Connection", None)
    return callable(getattr(connection, "_execute", None)) and isinstance(
        getattr(connection, "_conn", None), property
    )


def _driver_errors(engine: AsyncEngine) -> tuple[type[BaseException], ...]:
    """What the append path may see: SQLAlchemy's errors plus the raw driver's own."""
    errors: list[type[BaseException]] = [
        OSError,
        asyncio.TimeoutError,
        sa_exc.SQLAlchemyError,
        sqlite3.Error,
    ]
    if engine.dialect.driver == "asyncpg":
        asyncpg: Any = importlib.import_module("asyncpg")
        errors += [asyncpg.PostgresError, asyncpg.InterfaceError]
    return tuple(errors)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wrapped, and what those were raised from."""
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in chain):
            continue
        chain.append(current)
        todo.append(current.__cause__)
        if isinstance(current, sa_exc.DBAPIError):
            orig = current.orig
            todo.append(orig if isinstance(orig, BaseException) else None)
    return chain


def _mysql_errno(exc: BaseException) -> int | None:
    module = type(exc).__module__
    if module.startswith(("asyncmy", "aiomysql", "pymysql")) and exc.args:
        code = exc.args[0]
        return code if isinstance(code, int) else None
    return None


def _is_unavailable(exc: BaseException) -> bool:
    """True when the server could not be reached or went away (an outage, not a refusal)."""
    for cause in _causes(exc):
        if isinstance(cause, (OSError, asyncio.TimeoutError, sa_exc.TimeoutError)):
            return True  # sa_exc.TimeoutError: every pooled connection stayed busy
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _PG_UNAVAILABLE):
            return True
        if _mysql_errno(cause) in _MYSQL_UNAVAILABLE:
            return True
        if isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause):
            return True  # the busy timeout ran out: the writer ahead of us is stuck
    return False


def _found_dead(exc: BaseException) -> bool:
    """True when a pooled connection turned out to be closed by the server (not a refusal)."""
    return any(
        isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
        for cause in _causes(exc)
    )


def _is_lock_conflict(exc: BaseException) -> bool:
    """True for a deadlock or serialization failure, which is worth running again."""
    for cause in _causes(exc):
        if getattr(cause, "sqlstate", None) in _PG_LOCK_CONFLICT:
            return True
        if _mysql_errno(cause) in _MYSQL_LOCK_CONFLICT:
            return True
    return False


def _describe(exc: BaseException) -> str:
    """The driver's own message, never SQLAlchemy's (which quotes the SQL parameters)."""
    detail = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    text = str(detail).strip().splitlines()
    message = text[0] if text else type(detail).__name__
    return message[:300]


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

    schemes = tuple(sorted({*_DEFAULT_DRIVER, *_DRIVERS}))

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
        if _IMPORT_ERROR is not None:  # pragma: no cover - no engine without SQLAlchemy
            raise MissingExtraError("sqlite", "sqlalchemy") from _IMPORT_ERROR
        _check_options(table_prefix, poll_interval)
        self.table_prefix = table_prefix
        self.poll_interval = poll_interval
        self._engine = engine
        self._dispose_engine = dispose_engine
        self._backend = engine.dialect.name
        if self._backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
            raise ConfigurationError(UNSUPPORTED_DIALECT.format(dialect=self._backend))
        self._sqlite = self._backend == "sqlite"
        self._postgres = self._backend == "postgresql"
        self._mysql = self._backend in ("mysql", "mariadb")
        # PostgreSQL reads need no transaction: autocommit saves the BEGIN/ROLLBACK trips.
        self._read_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgres else engine
        )
        self._t = _tables(table_prefix)
        digest = hashlib.sha256(f"mcp-session-mw:{table_prefix}".encode()).digest()
        self._advisory_lock_id = int.from_bytes(digest[:8], "big", signed=True)
        self._mysql_lock_name = f"mcp-session-mw:{table_prefix}"
        self._channel = f"{table_prefix}events"
        self._opened = False
        self._open_lock: anyio.Lock | None = None
        # PostgreSQL listener state; see _ensure_listener.
        self._can_listen = self._postgres and engine.dialect.driver == "asyncpg"
        self._listen_conn: AsyncConnection | None = None
        self._listen_driver: Any = None
        self._listening = False
        self._listen_retry_at = 0.0
        self._listen_lock: anyio.Lock | None = None
        self._waiters: dict[tuple[str, str], set[anyio.Event]] = {}
        self._append_sql = self._append_statements(engine)
        self._driver_errors = _driver_errors(engine)

    def _append_statements(self, engine: AsyncEngine) -> _AppendSQL:
        """Build the append path's statements once per store, not once per call."""
        t = self._t
        quote = engine.dialect.identifier_preparer
        sessions, streams, events = (
            quote.format_table(table) for table in (t.sessions, t.streams, t.events)
        )
        key_column = quote.quote("key")
        driver = engine.dialect.driver
        postgres = postgres_trim = postgres_open = sqlite = load = None
        columns = ", ".join(
            quote.quote(name)
            for name in (
                "key",
                "principal",
                "created_at",
                "last_accessed",
                "expires_at",
                "ttl",
                "version",
                "payload",
            )
        )
        if self._postgres and driver == "asyncpg":
            # $1 key, $2 stream id, $3 now, $4 batch size, $5 max_events (NULL: no
            # limit), $6 data[], $7 event[], $8 channel, $9 payload, $10 finish.
            # Data-modifying CTEs all run; rows the trim would drop at once are
            # never inserted.
            postgres = f"""
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
            postgres_trim = (
                f"DELETE FROM {events} WHERE session_key = $1 AND stream_id = $2 AND seq < $3"
            )
            load = f"SELECT {columns} FROM {sessions} WHERE {key_column} = $1 AND expires_at > $2"
            # A new stream opened with its first events (and maybe finished): $1-$9
            # as above, $10 finish, $11 request id, $12 owner, $13 lease. The session
            # row is share-locked like open_stream does, so a concurrent delete
            # waits and then removes this stream too. A stream that exists already
            # inserts nothing (first column NULL); the caller takes the long way.
            postgres_open = f"""
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
        elif self._sqlite and driver == "aiosqlite" and _aiosqlite_has_queue():
            returning = sqlite3.sqlite_version_info >= (3, 35)
            load = f"SELECT {columns} FROM {sessions} WHERE {key_column} = ? AND expires_at > ?"
            live = f"SELECT 1 FROM {sessions} WHERE {key_column} = :key AND expires_at > :now"
            where = "session_key = :key AND stream_id = :stream_id"
            sqlite = _SQLiteAppend(
                returning=returning,
                bump=(
                    f"UPDATE {streams} SET last_seq = last_seq + :n, first_seq = CASE"
                    " WHEN last_seq + :n - first_seq >= :max THEN last_seq + :n - :max + 1"
                    f" ELSE first_seq END WHERE {where} AND EXISTS ({live})"
                    + (" RETURNING first_seq, last_seq" if returning else "")
                ),
                state=f"SELECT first_seq, last_seq FROM {streams} WHERE {where}",
                live=live,
                insert=(
                    f"INSERT INTO {events} (session_key, stream_id, seq, event, data)"
                    " VALUES (?, ?, ?, ?, ?)"
                ),
                trim=f"DELETE FROM {events} WHERE session_key = ? AND stream_id = ? AND seq < ?",
                open=(
                    f"INSERT INTO {streams} (session_key, stream_id, request_id, owner,"
                    " lease_expires, first_seq, last_seq, done)"
                    " VALUES (:key, :stream_id, :request_id, :owner, :lease, 1, 0, 0)"
                    " ON CONFLICT (session_key, stream_id) DO UPDATE SET"
                    " request_id = excluded.request_id, owner = excluded.owner,"
                    " lease_expires = excluded.lease_expires, done = 0"
                ),
                finish=f"UPDATE {streams} SET done = 1 WHERE {where}",
            )
        p_key: sa.BindParameter[str] = sa.bindparam("p_key")
        p_stream: sa.BindParameter[str] = sa.bindparam("p_stream")
        live_query = sa.select(t.sessions.c.key).where(
            t.sessions.c.key == p_key, t.sessions.c.expires_at > sa.bindparam("p_now")
        )
        return _AppendSQL(
            postgres=postgres,
            postgres_trim=postgres_trim,
            postgres_open=postgres_open,
            load=load,
            sqlite=sqlite,
            # The session is read by a subquery, which FOR UPDATE does not lock.
            lock=sa.select(
                t.streams.c.first_seq, t.streams.c.last_seq, live_query.scalar_subquery()
            )
            .where(t.streams.c.session_key == p_key, t.streams.c.stream_id == p_stream)
            .with_for_update(),
            live=live_query,
            insert=sa.insert(t.events),
            bump=sa.update(t.streams)
            .where(t.streams.c.session_key == p_key, t.streams.c.stream_id == p_stream)
            .values(first_seq=sa.bindparam("p_first"), last_seq=sa.bindparam("p_last")),
            trim=sa.delete(t.events).where(
                t.events.c.session_key == p_key,
                t.events.c.stream_id == p_stream,
                t.events.c.seq < sa.bindparam("p_first"),
            ),
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
        **engine_options: Any,
    ) -> SQLStore:
        """A store for ``url``; ``engine_options`` go to ``create_async_engine``.

        Bare ``sqlite://``, ``postgresql://`` (or ``postgres://``), ``mysql://``
        and ``mariadb://`` pick aiosqlite, asyncpg and asyncmy. With ``engine``
        the URL only chose this class: the caller's engine is used as it is and
        never disposed. ``busy_timeout`` (SQLite) is how long a writer waits for
        the write lock held by another connection or process.
        """
        parsed = _parse_url(url)
        _check_options(table_prefix, poll_interval)
        if engine is not None:
            return cls(
                engine, table_prefix=table_prefix, secret=secret, poll_interval=poll_interval
            )
        backend = parsed.get_backend_name()
        options = dict(engine_options)
        # No ping per checkout (up to three round trips on asyncpg): a dead pooled
        # connection is noticed at checkout without one (asyncpg, see
        # _drop_closed_asyncpg) or by its first statement, and _transact runs the
        # transaction again once when nothing of it can have committed.
        options.setdefault("pool_pre_ping", False)
        # Every transaction ends in COMMIT or ROLLBACK before its connection goes
        # back (a failed COMMIT invalidates it), so the pool's own ROLLBACK on
        # return would be one more round trip (a thread hop on SQLite) for nothing.
        options.setdefault("pool_reset_on_return", None)
        if "poolclass" not in options:  # a pool of the caller's choice may not take sizes
            options.setdefault("pool_size", pool_size)
            options.setdefault("max_overflow", DEFAULT_MAX_OVERFLOW)
        connect_args = dict(options.pop("connect_args", {}))
        if backend == "sqlite":
            database = parsed.database or ""
            if (
                database in ("", ":memory:")
                or "mode=memory" in database
                or parsed.query.get("mode") == "memory"
            ):
                raise ConfigurationError(SQLITE_IN_MEMORY)
            connect_args.setdefault("timeout", busy_timeout)  # sqlite3's busy handler
        elif backend == "postgresql":
            connect_args.setdefault("timeout", DEFAULT_CONNECT_TIMEOUT)
        else:
            options.setdefault("isolation_level", "READ COMMITTED")
        options["connect_args"] = connect_args
        try:
            new_engine = create_async_engine(parsed, **options)
        except (TypeError, sa_exc.ArgumentError) as exc:
            raise ConfigurationError(f"cannot build a {backend} engine: {exc}") from exc
        if backend == "sqlite":
            sa_event.listen(new_engine.sync_engine, "connect", _sqlite_on_connect(busy_timeout))
        elif new_engine.dialect.driver == "asyncpg":
            sa_event.listen(new_engine.sync_engine, "checkout", _drop_closed_asyncpg)
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
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            found = await self._transact(self._engine, self._create_schema, write=True)
            if found > SCHEMA_VERSION:
                raise ConfigurationError(
                    SCHEMA_TOO_NEW.format(
                        prefix=self.table_prefix, found=found, supported=SCHEMA_VERSION
                    )
                )
            if found < SCHEMA_VERSION:
                raise ConfigurationError(
                    SCHEMA_TOO_OLD.format(
                        prefix=self.table_prefix, found=found, supported=SCHEMA_VERSION
                    )
                )
            self._opened = True

    async def close(self) -> None:
        """Close the listener and, when this store built the engine, its connections."""
        await self._drop_listener()
        self._listening = False
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()
        self._opened = False
        if self._dispose_engine:
            await self._engine.dispose()

    async def drop_schema(self) -> None:
        """Drop this prefix's tables and everything in them (tests, uninstall)."""

        async def drop(conn: AsyncConnection) -> None:
            await conn.run_sync(self._t.metadata.drop_all, checkfirst=True)
            # `mcp-session-mw db upgrade` keeps Alembic's bookkeeping next to the tables.
            alembic_version = sa.Table(f"{self.table_prefix}alembic_version", sa.MetaData())
            await conn.run_sync(alembic_version.drop, checkfirst=True)

        await self._transact(self._engine, drop, write=True)
        self._opened = False

    async def _create_schema(self, conn: AsyncConnection) -> int:
        """Create missing tables under a lock and return the recorded schema version.

        The lock makes concurrent first starts safe: PostgreSQL takes a
        transaction-scoped advisory lock, MySQL a named lock (its DDL commits on
        its own), SQLite already holds the write lock (BEGIN IMMEDIATE).
        """
        version = self._t.schema_version
        if self._postgres:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(self._advisory_lock_id)))
        elif self._mysql:
            got = await conn.scalar(
                sa.select(sa.func.get_lock(self._mysql_lock_name, SCHEMA_LOCK_TIMEOUT))
            )
            if got != 1:
                raise StoreError(SCHEMA_LOCK_TIMED_OUT)
        try:
            await conn.run_sync(self._t.metadata.create_all, checkfirst=True)
            found = await conn.scalar(sa.select(version.c.version).where(version.c.id == 1))
            if found is None:
                await conn.execute(sa.insert(version).values(id=1, version=SCHEMA_VERSION))
                found = SCHEMA_VERSION
        finally:
            if self._mysql:
                await conn.execute(sa.select(sa.func.release_lock(self._mysql_lock_name)))
        return int(found)

    # -- transactions -------------------------------------------------------------

    async def _write(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        await self.open()
        return await self._transact(self._engine, body, write=True)

    async def _read(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        await self.open()
        return await self._transact(self._read_engine, body, write=False)

    async def _write_upsert(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run an update-else-insert ``body``; when another writer inserted first, go again.

        The second run finds the row and updates it. Portable SQL has no upsert,
        and the dialects' own ones differ in what they report back.
        """
        for _ in range(LOCK_CONFLICT_RETRIES):
            try:
                return await self._write(body)
            except _RaceLost:
                continue
        raise StoreError(RACE_LOST.format(times=LOCK_CONFLICT_RETRIES))

    async def _transact(
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
                async with engine.connect() as conn:
                    if write and self._sqlite:
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    result = await body(conn)
                    if write:
                        committing = True
                        try:
                            await conn.commit()
                        except BaseException:
                            # Its transaction state is unknown; the pool does not
                            # roll back on return (see from_url), so never reuse it.
                            with anyio.CancelScope(shield=True):
                                await _quietly(conn.invalidate())
                            raise
                    return result
            except (OSError, asyncio.TimeoutError, sa_exc.SQLAlchemyError) as exc:
                if conflicts < LOCK_CONFLICT_RETRIES and _is_lock_conflict(exc):
                    conflicts += 1
                    await anyio.sleep(random.uniform(0, 0.01 * conflicts))
                    continue
                if not reconnected and not committing and _found_dead(exc):
                    reconnected = True
                    continue
                raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> StoreError:
        if _is_unavailable(exc):
            return StoreUnavailableError(
                STORE_UNAVAILABLE.format(backend=self._backend, error=_describe(exc))
            )
        return StoreError(STORE_FAILED.format(backend=self._backend, error=_describe(exc)))

    # -- row helpers ------------------------------------------------------------------

    def _session_columns(self) -> tuple[sa.ColumnElement[Any], ...]:
        c = self._t.sessions.c
        return (
            c.key,
            c.principal,
            c.created_at,
            c.last_accessed,
            c.expires_at,
            c.ttl,
            c.version,
            c.payload,
        )

    @staticmethod
    def _to_record(row: Sequence[Any]) -> SessionRecord:
        key, principal, created_at, last_accessed, expires_at, ttl, version, payload = row
        try:
            return SessionRecord.from_payload(
                key=key,
                payload=payload,
                principal=principal,
                created_at=created_at,
                last_accessed=last_accessed,
                expires_at=expires_at,
                ttl=ttl,
                version=version,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(CORRUPT_RECORD) from exc

    @staticmethod
    def _values(record: SessionRecord) -> dict[str, Any]:
        return {
            "principal": record.principal,
            "created_at": record.created_at,
            "last_accessed": record.last_accessed,
            "expires_at": record.expires_at,
            "ttl": record.ttl,
            "version": record.version,
            "payload": record.payload(),
        }

    def _live(self, key: str, now: float) -> sa.ColumnElement[bool]:
        c = self._t.sessions.c
        return sa.and_(c.key == key, c.expires_at > now)

    async def _is_live(self, conn: AsyncConnection, key: str, now: float) -> bool:
        found = await conn.scalar(sa.select(self._t.sessions.c.key).where(self._live(key, now)))
        return found is not None

    def _stream_is(self, table: sa.Table, key: str, stream_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(table.c.session_key == key, table.c.stream_id == stream_id)

    async def _notify(self, conn: AsyncConnection, key: str, stream_id: str) -> None:
        """Wake PostgreSQL listeners of this stream once the transaction commits."""
        if self._postgres:
            await conn.execute(sa.select(sa.func.pg_notify(self._channel, f"{key}:{stream_id}")))

    # -- sessions -----------------------------------------------------------------

    async def _insert(self, record: SessionRecord) -> None:
        sessions, streams, events = self._t.sessions, self._t.streams, self._t.events
        now = self.now()

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
                await conn.execute(
                    sa.insert(sessions).values(key=record.key, **self._values(record))
                )
            except sa_exc.IntegrityError as exc:
                raise SessionExistsError("session already exists") from exc

        await self._write(insert)

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        load = self._append_sql.load
        if load is not None and (self._postgres or self._append_sql.sqlite is not None):
            # The per-request load on the driver's own connection: SQLAlchemy's
            # cursor layer costs more than the query.
            postgres = self._postgres

            async def fetch(driver: Any) -> Any:
                if postgres:
                    return await driver.fetchrow(load, key, now)
                return await driver._execute(_sqlite_fetchone, driver._conn, load, (key, now))

            row = await self._on_driver(fetch)
            return None if row is None else self._to_record(tuple(row))

        async def get(conn: AsyncConnection) -> SessionRecord | None:
            result = await conn.execute(
                sa.select(*self._session_columns()).where(self._live(key, now))
            )
            row = result.first()
            return None if row is None else self._to_record(row)

        return await self._read(get)

    async def _put(self, record: SessionRecord) -> None:
        sessions = self._t.sessions

        async def put(conn: AsyncConnection) -> None:
            result = await conn.execute(
                sa.update(sessions).where(sessions.c.key == record.key).values(self._values(record))
            )
            if result.rowcount == 0:
                try:
                    await conn.execute(
                        sa.insert(sessions).values(key=record.key, **self._values(record))
                    )
                except sa_exc.IntegrityError as exc:  # inserted meanwhile: write again
                    raise _RaceLost from exc

        await self._write_upsert(put)

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        sessions = self._t.sessions
        now = self.now()

        async def swap(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.update(sessions)
                .where(
                    sessions.c.key == record.key,
                    sessions.c.version == expected_version,
                    sessions.c.expires_at > now,
                )
                .values(self._values(record))
            )
            return result.rowcount == 1

        return await self._write(swap)

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        sessions = self._t.sessions
        values: dict[str, Any] = {"last_accessed": now}
        if ttl is None:
            values["expires_at"] = now + sessions.c.ttl
        else:
            values["expires_at"] = now + ttl
            values["ttl"] = ttl

        async def touch(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.update(sessions).where(self._live(key, now)).values(values)
            )
            return result.rowcount == 1

        return await self._write(touch)

    async def _delete(self, key: str) -> bool:
        sessions, streams, events = self._t.sessions, self._t.streams, self._t.events
        now = self.now()

        async def delete(conn: AsyncConnection) -> bool:
            live = await conn.execute(sa.delete(sessions).where(self._live(key, now)))
            await conn.execute(sa.delete(sessions).where(sessions.c.key == key))
            # Streams before events: an append holding a stream row's lock
            # commits its event first, so the events DELETE below sees it.
            await conn.execute(sa.delete(streams).where(streams.c.session_key == key))
            await conn.execute(sa.delete(events).where(events.c.session_key == key))
            return live.rowcount > 0

        return await self._write(delete)

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        c = self._t.sessions.c
        query = sa.select(*self._session_columns()).where(c.expires_at > now)
        if cursor is not None:
            query = query.where(c.key > cursor)
        query = query.order_by(c.key).limit(limit + 1)

        async def page(conn: AsyncConnection) -> Page:
            rows = (await conn.execute(query)).all()
            records = [self._to_record(row) for row in rows[:limit]]
            more = len(rows) > limit
            return Page(records, records[-1].key if more else None)

        return await self._read(page)

    async def _cleanup(self, now: float) -> int:
        sessions, streams, events = self._t.sessions, self._t.streams, self._t.events

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
            found, removed = await self._write(batch)
            total += removed
            if found < CLEANUP_BATCH or removed == 0:
                return total

    # -- named locks ----------------------------------------------------------------

    @staticmethod
    def _lock_key(name: str) -> str:
        """The row's digest; not keyed by ``secret``, so stores with other secrets agree."""
        return hashlib.sha256(f"lock {name}".encode()).hexdigest()

    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        streams = self._t.streams
        mine = self._stream_is(streams, self._lock_key(name), LOCK_STREAM_ID)

        async def take(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.update(streams)
                .where(mine, streams.c.lease_expires <= now)
                .values(owner=owner, lease_expires=now + ttl)
            )
            if result.rowcount == 1:
                return True
            if await conn.scalar(sa.select(streams.c.owner).where(mine)) is not None:
                return False  # a running lease
            try:
                await conn.execute(
                    sa.insert(streams).values(
                        session_key=self._lock_key(name),
                        stream_id=LOCK_STREAM_ID,
                        request_id=None,
                        owner=owner,
                        lease_expires=now + ttl,
                        first_seq=0,
                        last_seq=0,
                        done=False,
                    )
                )
            except sa_exc.IntegrityError as exc:
                raise _LockTaken from exc
            return True

        try:
            return await self._write(take)
        except _LockTaken:
            return False

    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        streams = self._t.streams
        mine = self._stream_is(streams, self._lock_key(name), LOCK_STREAM_ID)

        async def release(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.delete(streams).where(
                    mine, streams.c.owner == owner, streams.c.lease_expires > now
                )
            )
            return result.rowcount == 1

        return await self._write(release)

    # -- update with a row lock ------------------------------------------------------

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
        stored = await self._update_locked(session_id, change, "state")
        if stored is not None:
            return stored
        return await super().update(session_id, change, retries=retries)

    async def update_meta(self, session_id: str, change: StateChange) -> SessionRecord:
        """Like :meth:`update`, on the middleware's private ``meta`` dict."""
        if inspect.iscoroutinefunction(change):
            return await super().update_meta(session_id, change)
        stored = await self._update_locked(session_id, change, "meta")
        if stored is not None:
            return stored
        return await super().update_meta(session_id, change)

    async def _update_locked(
        self, session_id: str, change: StateChange, field: str
    ) -> SessionRecord | None:
        """Read-modify-write under the row lock; None when ``change`` turned out to be async."""
        key = self.key(session_id)
        sessions = self._t.sessions
        now = self.now()

        async def modify(
            conn: AsyncConnection,
        ) -> tuple[SessionRecord, SessionRecord | None, Awaitable[Any] | None]:
            result = await conn.execute(
                sa.select(*self._session_columns()).where(self._live(key, now)).with_for_update()
            )
            row = result.first()
            if row is None:
                raise SessionNotFoundError("session not found")
            current = self._to_record(row)
            old: dict[str, JSONValue] = getattr(current, field)
            if isinstance(change, Mapping):
                new = check_state(merge_state(old, change))
            else:
                try:
                    outcome: Any = change(dict(old))
                except Exception as exc:
                    raise _UserCodeError(exc) from exc
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
            current, stored, pending = await self._write(modify)
        except _UserCodeError as exc:
            raise exc.error from None
        if stored is not None:
            return stored
        assert pending is not None
        new = check_state(await pending)
        stored = current.evolve(**{field: new}, version=current.version + 1)
        if await self._compare_and_swap(stored, current.version):
            return stored
        return None

    # -- streams and events -----------------------------------------------------------

    async def _open_stream(self, key: str, state: StreamState) -> StreamState:
        streams = self._t.streams
        now = self.now()
        request_id = None if state.request_id is None else _dump_json(state.request_id)

        async def open_stream(conn: AsyncConnection) -> StreamState:
            # Share-lock the session row: a concurrent delete waits for us and
            # then removes this stream too, instead of leaving it orphaned.
            live = await conn.scalar(
                sa.select(self._t.sessions.c.key)
                .where(self._live(key, now))
                .with_for_update(read=True)
            )
            if live is None:
                raise SessionNotFoundError("session not found")
            where = self._stream_is(streams, key, state.stream_id)
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
                    raise _RaceLost from exc
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
            await self._notify(conn, key, state.stream_id)
            return StreamState(
                stream_id=state.stream_id,
                request_id=state.request_id,
                owner=state.owner,
                lease_expires=state.lease_expires,
                first_seq=first_seq,
                last_seq=last_seq,
                done=False,
            )

        return await self._write_upsert(open_stream)

    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None:
        streams = self._t.streams
        now = self.now()
        query = (
            sa.select(
                streams.c.request_id,
                streams.c.owner,
                streams.c.lease_expires,
                streams.c.first_seq,
                streams.c.last_seq,
                streams.c.done,
            )
            .join(self._t.sessions, self._t.sessions.c.key == streams.c.session_key)
            .where(self._stream_is(streams, key, stream_id), self._live(key, now))
        )

        async def load(conn: AsyncConnection) -> StreamState | None:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            request_id, owner, lease_expires, first_seq, last_seq, done = row
            return StreamState(
                stream_id=stream_id,
                request_id=None if request_id is None else _load_json(request_id),
                owner=owner,
                lease_expires=float(lease_expires),
                first_seq=int(first_seq),
                last_seq=int(last_seq),
                done=bool(done),
            )

        return await self._read(load)

    async def _change_stream(
        self, key: str, stream_id: str, values: dict[str, Any], *, notify: bool
    ) -> None:
        streams = self._t.streams
        now = self.now()

        async def change(conn: AsyncConnection) -> None:
            if not await self._is_live(conn, key, now):
                raise SessionNotFoundError("session not found")
            result = await conn.execute(
                sa.update(streams).where(self._stream_is(streams, key, stream_id)).values(values)
            )
            if result.rowcount == 0:
                raise StreamNotFoundError("stream not found")
            if notify:
                await self._notify(conn, key, stream_id)

        await self._write(change)

    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None:
        await self._change_stream(key, stream_id, {"lease_expires": lease_expires}, notify=False)

    async def _finish_stream(self, key: str, stream_id: str) -> None:
        await self._change_stream(key, stream_id, {"done": True}, notify=True)

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
        now = self.now()
        if self._append_sql.postgres is not None:
            last_seq = await self._append_asyncpg(key, stream_id, items, max_events, now)
        elif self._append_sql.sqlite is not None:
            last_seq = await self._append_aiosqlite(key, stream_id, items, max_events, now)
        else:
            last_seq = await self._append_core(key, stream_id, items, max_events, now)
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
        now = self.now()
        if self._append_sql.sqlite is not None:
            opening = None
            if open_as is not None:
                request_id = None if open_as.request_id is None else _dump_json(open_as.request_id)
                opening = (request_id, open_as.owner, open_as.lease_expires)
            sqlite = self._append_sql.sqlite

            async def write(db: Any) -> int:
                result: int = await db._execute(
                    _sqlite_append,
                    db._conn,
                    sqlite,
                    key,
                    stream_id,
                    items,
                    max_events,
                    now,
                    opening,
                    finish,
                )
                return result

            last_seq = await self._on_driver(write)
        elif self._append_sql.postgres is not None and (items or open_as is None):
            opened: int | None = None
            if open_as is not None:
                opened = await self._open_asyncpg(
                    key, stream_id, items, open_as, finish, max_events, now
                )
            if opened is not None:
                last_seq = opened
            else:
                if open_as is not None:
                    await self._open_stream(key, open_as)
                last_seq = await self._append_asyncpg(
                    key, stream_id, items, max_events, now, finish=finish
                )
        else:
            return await super()._write_stream(key, stream_id, items, open_as, finish, max_events)
        return stored_batch(stream_id, last_seq, items)

    async def _open_asyncpg(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState,
        finish: bool,
        max_events: int | None,
        now: float,
    ) -> int | None:
        """A new stream with its first events in one statement; None if the stream exists."""
        sql = self._append_sql.postgres_open
        assert sql is not None
        request_id = None if open_as.request_id is None else _dump_json(open_as.request_id)
        args = (
            key,
            stream_id,
            now,
            len(items),
            max_events,
            [data for data, _ in items],
            [event for _, event in items],
            self._channel,
            f"{key}:{stream_id}",
            finish,
            request_id,
            open_as.owner,
            open_as.lease_expires,
        )

        async def write(pg: Any) -> Any:
            return await pg.fetchrow(sql, *args)

        last_seq, live, _ = await self._on_driver(write)
        if not live:
            raise _session_not_found()
        return None if last_seq is None else int(last_seq)

    async def _append_asyncpg(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
        now: float,
        *,
        finish: bool = False,
    ) -> int:
        """The whole batch in one statement, outside any transaction: one round trip.

        A single statement is atomic on its own. The UPDATE of the stream row
        takes its lock and hands out the seqs, so concurrent batches queue on it
        and never share a seq; the session row is only read. All parts of the
        statement read one snapshot, taken before the lock was granted; when a
        concurrent batch committed in between (the last column says so), a
        second statement finishes the trim.
        """
        sql = self._append_sql.postgres
        assert sql is not None
        args = (
            key,
            stream_id,
            now,
            len(items),
            max_events,
            [data for data, _ in items],
            [event for _, event in items],
            self._channel,
            f"{key}:{stream_id}",
            finish,
        )

        async def append(pg: Any) -> Any:
            return await pg.fetchrow(sql, *args)

        last_seq, first_seq, live, raced, _ = await self._on_driver(append)
        if last_seq is None:
            raise StreamNotFoundError("stream not found") if live else _session_not_found()
        if raced and max_events is not None and first_seq > 1:
            # Another batch committed between this statement's snapshot and its
            # lock on the stream row, so the trim could not see that batch's rows.
            # Trimming is idempotent: finish it with a fresh snapshot.
            trim = self._append_sql.postgres_trim

            async def finish_trim(pg: Any) -> Any:
                return await pg.execute(trim, key, stream_id, first_seq)

            await self._on_driver(finish_trim)
        return int(last_seq)

    async def _append_aiosqlite(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
        now: float,
    ) -> int:
        """The whole transaction as one call on aiosqlite's worker thread.

        Each statement sent the usual way is a round trip to that thread (three
        or four through SQLAlchemy's cursor layer), and those hand-offs, not
        SQLite, were most of an append's cost. This uses the queue aiosqlite
        runs its own calls through, as SQLAlchemy's adapter does to set the
        isolation level; the store falls back to the Core path without it.
        """
        sql = self._append_sql.sqlite
        assert sql is not None

        async def append(db: Any) -> int:
            result: int = await db._execute(
                _sqlite_append, db._conn, sql, key, stream_id, items, max_events, now
            )
            return result

        return await self._on_driver(append)

    async def _append_core(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
        now: float,
    ) -> int:
        """MariaDB/MySQL (and any other driver): a fixed four or five statements per batch.

        The stream row's lock numbers the events; the session row is read in
        the same statement but not locked (session-then-stream lock order).
        """
        sql = self._append_sql
        params = {"p_key": key, "p_stream": stream_id, "p_now": now}

        async def append(conn: AsyncConnection) -> int:
            row = (await conn.execute(sql.lock, params)).first()
            if row is None:
                live = await conn.scalar(sql.live, params)
                raise StreamNotFoundError("stream not found") if live else _session_not_found()
            if row[2] is None:
                raise _session_not_found()
            first_seq, last_seq = int(row[0]), int(row[1])
            start, last_seq = last_seq + 1, last_seq + len(items)
            if max_events is not None and last_seq - first_seq + 1 > max_events:
                first_seq = last_seq - max_events + 1
                trim = True
            else:
                trim = False
            kept = [
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
                await conn.execute(sql.insert, kept)
            ids = {"p_key": key, "p_stream": stream_id}
            await conn.execute(sql.bump, {**ids, "p_first": first_seq, "p_last": last_seq})
            if trim:
                await conn.execute(sql.trim, {**ids, "p_first": first_seq})
            await self._notify(conn, key, stream_id)
            return last_seq

        return await self._write(append)

    async def _on_driver(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``body`` on the driver's own connection (asyncpg, aiosqlite) from the pool.

        Only the append path does this: its few statements cost less than
        SQLAlchemy's cursor layer around them. ``body`` ends any transaction it
        starts; after a driver failure the connection is discarded, since its
        state is not known.
        """
        await self.open()
        conflicts = stale = 0
        while True:
            lost = False
            try:
                async with self._engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    if self._postgres and driver.is_closed() and stale < STALE_CHECKOUTS:
                        # Closed while pooled (an engine without our checkout
                        # check): nothing was sent on it, take another.
                        stale += 1
                        await conn.invalidate()
                        continue
                    try:
                        return await body(driver)
                    except StoreError:
                        raise  # a refusal of ours; body has ended its transaction
                    except BaseException:
                        lost = self._postgres and driver.is_closed()
                        with anyio.CancelScope(shield=True):
                            await _quietly(conn.invalidate())
                        raise
            except StoreError:
                raise
            except self._driver_errors as exc:
                if conflicts < LOCK_CONFLICT_RETRIES and _is_lock_conflict(exc):
                    conflicts += 1
                    await anyio.sleep(random.uniform(0, 0.01 * conflicts))
                    continue
                if lost:
                    raise StoreUnavailableError(
                        STORE_UNAVAILABLE.format(backend=self._backend, error=_describe(exc))
                    ) from exc
                raise self._translate(exc) from exc

    async def _delete_stream(self, key: str, stream_id: str) -> bool:
        streams, events = self._t.streams, self._t.events

        async def delete_stream(conn: AsyncConnection) -> bool:
            # Stream row first (it is the lock appenders take), then its events:
            # an append that got the lock before us has committed its rows by now.
            removed = await conn.execute(
                sa.delete(streams).where(self._stream_is(streams, key, stream_id))
            )
            await conn.execute(sa.delete(events).where(self._stream_is(events, key, stream_id)))
            if removed.rowcount > 0:
                await self._notify(conn, key, stream_id)  # waiters see "gone" and return
            return removed.rowcount > 0

        return await self._write(delete_stream)

    async def _delete_streams(self, key: str, stream_ids: list[str]) -> int:
        streams, events = self._t.streams, self._t.events

        async def delete_streams(conn: AsyncConnection) -> int:
            # As in _delete_stream: stream rows first, then their events. On
            # PostgreSQL the rows found are notified (delivered at commit).
            chosen = sa.and_(streams.c.session_key == key, streams.c.stream_id.in_(stream_ids))
            found = (
                sa.func.pg_notify(self._channel, sa.literal(f"{key}:") + streams.c.stream_id)
                if self._postgres
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

        return await self._write(delete_streams)

    def _events_query(
        self, key: str, stream_id: str, after_seq: int, limit: int, now: float
    ) -> sa.Select[Any]:
        events = self._t.events
        alive = sa.select(self._t.sessions.c.key).where(self._live(key, now)).exists()
        return (
            sa.select(events.c.seq, events.c.event, events.c.data)
            .where(self._stream_is(events, key, stream_id), events.c.seq > after_seq, alive)
            .order_by(events.c.seq)
            .limit(limit)
        )

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        query = self._events_query(key, stream_id, after_seq, limit, self.now())

        async def read(conn: AsyncConnection) -> list[StoredEvent]:
            rows = (await conn.execute(query)).all()
            return [StoredEvent(stream_id, int(seq), data, event) for seq, event, data in rows]

        return await self._read(read)

    # -- live waits ---------------------------------------------------------------------

    async def wait_events(
        self,
        session_id: str,
        stream_id: str,
        after_seq: int,
        timeout: float,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Events after ``after_seq``, waiting up to ``timeout`` seconds for one.

        Returns ``[]`` at once when the stream is finished (or gone) and has
        nothing newer, as the memory store does. On PostgreSQL a notification
        wakes the wait; otherwise it polls every ``poll_interval`` seconds.
        """
        key = self.key(session_id)
        slot = (key, stream_id)
        deadline = time.monotonic() + timeout
        while True:
            pushed = await self._ensure_listener()
            wake = anyio.Event()
            if pushed:  # register before reading, so a NOTIFY in between is not missed
                self._waiters.setdefault(slot, set()).add(wake)
            try:
                events, finished = await self._poll_stream(key, stream_id, after_seq, limit)
                remaining = deadline - time.monotonic()
                if events or finished or remaining <= 0:
                    return events
                if pushed and self._listening:
                    with anyio.move_on_after(
                        min(remaining, max(self.poll_interval, LISTEN_RECHECK_INTERVAL))
                    ):
                        await wake.wait()
                else:
                    await anyio.sleep(min(self.poll_interval, remaining))
            finally:
                if pushed:
                    waiters = self._waiters.get(slot)
                    if waiters is not None:
                        waiters.discard(wake)
                        if not waiters:
                            del self._waiters[slot]

    async def _poll_stream(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredEvent], bool]:
        """New events, and whether the stream is finished or gone (nothing more will come)."""
        streams = self._t.streams
        now = self.now()
        state_query = (
            sa.select(streams.c.last_seq, streams.c.done)
            .join(self._t.sessions, self._t.sessions.c.key == streams.c.session_key)
            .where(self._stream_is(streams, key, stream_id), self._live(key, now))
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

        return await self._read(poll)

    async def _ensure_listener(self) -> bool:
        """True when a LISTEN connection is up (opening it on first use); False means poll."""
        if not self._can_listen:
            return False
        if self._listening:
            return True
        if time.monotonic() < self._listen_retry_at:
            return False
        if self._listen_lock is None:
            self._listen_lock = anyio.Lock()
        async with self._listen_lock:
            if self._listening:
                return True
            await self._drop_listener()
            try:
                conn = await self._engine.connect()
            except Exception as exc:  # any failure here only means "poll for now"
                return self._listen_failed(exc)
            try:
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection
                await driver.add_listener(self._channel, self._on_notify)
                driver.add_termination_listener(self._on_listener_lost)
            except Exception as exc:
                await _quietly(conn.invalidate(), LISTEN_CLEANUP_FAILED)
                await _quietly(conn.close(), LISTEN_CLEANUP_FAILED)
                return self._listen_failed(exc)
            self._listen_conn, self._listen_driver, self._listening = conn, driver, True
            return True

    def _listen_failed(self, exc: BaseException) -> bool:
        logger.warning(LISTEN_FAILED, self._channel, _describe(exc), self.poll_interval)
        self._listen_retry_at = time.monotonic() + LISTEN_RETRY_DELAY
        return False

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        for waiter in self._waiters.get((payload[:64], payload[65:]), ()):
            waiter.set()

    def _on_listener_lost(self, _connection: Any) -> None:
        if self._listening:
            logger.warning(LISTEN_LOST, self._channel)
        self._listening = False
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    async def _drop_listener(self) -> None:
        conn, driver = self._listen_conn, self._listen_driver
        self._listen_conn = self._listen_driver = None
        self._listening = False
        if conn is None:
            return
        if driver is not None and not driver.is_closed():
            await _quietly(
                driver.remove_listener(self._channel, self._on_notify), LISTEN_CLEANUP_FAILED
            )
            driver.remove_termination_listener(self._on_listener_lost)
            await _quietly(conn.close(), LISTEN_CLEANUP_FAILED)
        else:
            await _quietly(conn.invalidate(), LISTEN_CLEANUP_FAILED)
            await _quietly(conn.close(), LISTEN_CLEANUP_FAILED)


async def _quietly(step: Awaitable[Any], message: str = CONNECTION_CLEANUP_FAILED) -> None:
    """Run a best-effort cleanup step whose failure changes nothing for the caller."""
    try:
        await step
    except Exception as exc:  # driver errors of a connection that is already broken
        logger.debug(message, exc)


def _dump_json(value: JSONValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load_json(text: str) -> JSONValue:
    return json.loads(text)


__all__ = ["DEFAULT_TABLE_PREFIX", "SCHEMA_VERSION", "SQLStore"]
