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
- PostgreSQL and MariaDB/MySQL run READ COMMITTED (the engines this package
  builds ask for it on MySQL, whose default is REPEATABLE READ with gap locks).
  Row locks are always taken in one order — session row, then stream row — so
  the primitives cannot deadlock each other: deleting a session locks its
  row and then its streams; opening a stream share-locks the session row and
  then writes the stream row; an append locks only the stream row and merely
  reads the session row. Deadlocks the server reports anyway are retried.
- An append numbers a whole batch under the stream row's lock (SQLite:
  under the database write lock), so concurrent appenders never collide on a
  seq. It is the hot path and is written per driver, chosen once per store
  (``asyncpg_path``, ``aiosqlite_path``, ``core_path``): one statement on asyncpg
  (a CTE, no transaction around it), one hop to aiosqlite's thread for the
  whole transaction, and a fixed four or five Core statements elsewhere
  (MariaDB/MySQL), whatever the batch size. A single event is a batch of one.
- Engines this package builds skip the pool's pre-ping and its ROLLBACK on
  return (both round trips on every operation). A connection the server closed
  while pooled is caught at checkout on asyncpg, and otherwise by its first
  statement, after which the transaction runs once more on a new connection.
- ``update`` (and ``update_meta``) with a mapping or a plain function locks the
  session row for the read-modify-write instead of retrying compare-and-swaps;
  an async function runs unlocked with the base class's CAS loop, because it
  may await the store itself and would deadlock on its own lock.

Live waits go through the store's one follower (``stores/follower.py``).
PostgreSQL (asyncpg) gets ``LISTEN``/``NOTIFY`` on a channel named after the
table prefix — appends, finishes and re-opens notify ``<key>:<stream>`` — on
one listener connection per store (``listener``), opened while anyone waits,
reopened when it dies (every waiter re-reads in between). SQLite and MariaDB
poll: one query per ``poll_interval`` over every waited stream (``positions``).

Named locks (``try_lock``) are rows of the streams table (``locks``).

Modules: ``engine`` (URLs, drivers, engines), ``schema`` (tables, version,
rows <-> records), ``failures`` (what a driver error means), ``database``
(transactions and retries), ``sessions``, ``streams`` and ``locks`` (the Core
primitives), the three hot paths, ``listener`` and ``store`` (``SQLStore``).
"""

from __future__ import annotations

from .database import STALE_CHECKOUTS
from .engine import (
    BAD_POLL_INTERVAL,
    BAD_TABLE_PREFIX,
    BAD_URL,
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    MAX_PREFIX_LENGTH,
    SQLITE_IN_MEMORY,
    UNSUPPORTED_SCHEME,
)
from .failures import (
    CONNECTION_CLEANUP_FAILED,
    LOCK_CONFLICT_RETRIES,
    RACE_LOST,
    STORE_FAILED,
    STORE_UNAVAILABLE,
)
from .listener import LISTEN_CHECK, LISTEN_CLEANUP_FAILED, MSG_LISTENER_LOST
from .locks import LOCK_STREAM_ID
from .schema import (
    CORRUPT_RECORD,
    DEFAULT_TABLE_PREFIX,
    MAX_STREAM_ID_LENGTH,
    SCHEMA_LOCK_TIMED_OUT,
    SCHEMA_LOCK_TIMEOUT,
    SCHEMA_TOO_NEW,
    SCHEMA_TOO_OLD,
    SCHEMA_VERSION,
)
from .sessions import CLEANUP_BATCH
from .store import BAD_MAX_EVENTS, UNSUPPORTED_DIALECT, SQLStore

__all__ = [
    "BAD_MAX_EVENTS",
    "BAD_POLL_INTERVAL",
    "BAD_TABLE_PREFIX",
    "BAD_URL",
    "CLEANUP_BATCH",
    "CONNECTION_CLEANUP_FAILED",
    "CORRUPT_RECORD",
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_TABLE_PREFIX",
    "DEFAULT_TIMEOUT",
    "LISTEN_CHECK",
    "LISTEN_CLEANUP_FAILED",
    "LOCK_CONFLICT_RETRIES",
    "LOCK_STREAM_ID",
    "MAX_PREFIX_LENGTH",
    "MAX_STREAM_ID_LENGTH",
    "MSG_LISTENER_LOST",
    "RACE_LOST",
    "SCHEMA_LOCK_TIMED_OUT",
    "SCHEMA_LOCK_TIMEOUT",
    "SCHEMA_TOO_NEW",
    "SCHEMA_TOO_OLD",
    "SCHEMA_VERSION",
    "SQLITE_IN_MEMORY",
    "STALE_CHECKOUTS",
    "STORE_FAILED",
    "STORE_UNAVAILABLE",
    "UNSUPPORTED_DIALECT",
    "UNSUPPORTED_SCHEME",
    "SQLStore",
]
