"""The four tables of one prefix, their creation and version check, and rows <-> records."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, StoreError
from ...records import JSONValue, SessionRecord

with contextlib.suppress(ImportError):  # engine.require_sqlalchemy names the extra
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql as sa_mysql

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

SCHEMA_VERSION = 1
"""The schema this release reads and writes; stored in ``<prefix>schema_version``.

The one source of truth for the version number: ``mcp-session-mw db upgrade``
migrates to the Alembic revision named after it (``mcp_session_mw/migrations``).
"""

DEFAULT_TABLE_PREFIX = "mcp_session_"
MAX_STREAM_ID_LENGTH = 128
SCHEMA_LOCK_TIMEOUT = 60
"""Seconds ``open`` waits for another process that is creating the schema (MySQL)."""

# Messages tests assert on.
SCHEMA_TOO_NEW = (
    "the session tables with prefix {prefix!r} are at schema version {found}, newer than "
    "this mcp-session-mw supports ({supported}); upgrade mcp-session-mw"
)
SCHEMA_TOO_OLD = (
    "the session tables with prefix {prefix!r} are at schema version {found}, older than "
    "this mcp-session-mw needs ({supported}); run `mcp-session-mw db upgrade`"
)
SCHEMA_LOCK_TIMED_OUT = "timed out waiting for another process to create the session tables"
CORRUPT_RECORD = "a stored session record cannot be read"


@dataclass(frozen=True)
class Tables:
    prefix: str
    metadata: sa.MetaData
    schema_version: sa.Table
    sessions: sa.Table
    streams: sa.Table
    events: sa.Table
    advisory_lock_id: int
    """PostgreSQL's transaction lock around creating (or migrating) this prefix's tables."""
    mysql_lock_name: str
    """MariaDB/MySQL's named lock for the same."""

    def session_columns(self) -> tuple[sa.ColumnElement[Any], ...]:
        """The columns :func:`to_record` reads, in its order."""
        c = self.sessions.c
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

    def live(self, key: str, now: float) -> sa.ColumnElement[bool]:
        """The session row of ``key``, if it has not expired at ``now``."""
        c = self.sessions.c
        return sa.and_(c.key == key, c.expires_at > now)


@lru_cache(maxsize=64)
def tables(prefix: str) -> Tables:
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
    digest = hashlib.sha256(f"mcp-session-mw:{prefix}".encode()).digest()
    return Tables(
        prefix=prefix,
        metadata=metadata,
        schema_version=schema_version,
        sessions=sessions,
        streams=streams,
        events=events,
        advisory_lock_id=int.from_bytes(digest[:8], "big", signed=True),
        mysql_lock_name=f"mcp-session-mw:{prefix}",
    )


async def create_schema(conn: AsyncConnection, t: Tables) -> int:
    """Create missing tables under a lock and return the recorded schema version.

    The lock makes concurrent first starts safe: PostgreSQL takes a
    transaction-scoped advisory lock, MySQL a named lock (its DDL commits on
    its own), SQLite already holds the write lock (BEGIN IMMEDIATE).
    """
    version = t.schema_version
    dialect = conn.dialect.name
    mysql = dialect in ("mysql", "mariadb")
    if dialect == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(t.advisory_lock_id)))
    elif mysql:
        got = await conn.scalar(sa.select(sa.func.get_lock(t.mysql_lock_name, SCHEMA_LOCK_TIMEOUT)))
        if got != 1:
            raise StoreError(SCHEMA_LOCK_TIMED_OUT)
    try:
        await conn.run_sync(t.metadata.create_all, checkfirst=True)
        found = await conn.scalar(sa.select(version.c.version).where(version.c.id == 1))
        if found is None:
            await conn.execute(sa.insert(version).values(id=1, version=SCHEMA_VERSION))
            found = SCHEMA_VERSION
    finally:
        if mysql:
            await conn.execute(sa.select(sa.func.release_lock(t.mysql_lock_name)))
    return int(found)


def check_version(prefix: str, found: int) -> None:
    """Refuse tables at a schema version other than :data:`SCHEMA_VERSION`."""
    if found > SCHEMA_VERSION:
        raise ConfigurationError(
            SCHEMA_TOO_NEW.format(prefix=prefix, found=found, supported=SCHEMA_VERSION)
        )
    if found < SCHEMA_VERSION:
        raise ConfigurationError(
            SCHEMA_TOO_OLD.format(prefix=prefix, found=found, supported=SCHEMA_VERSION)
        )


async def drop_schema(conn: AsyncConnection, t: Tables) -> None:
    """Drop the prefix's tables and the Alembic bookkeeping ``db upgrade`` keeps beside them."""
    await conn.run_sync(t.metadata.drop_all, checkfirst=True)
    alembic_version = sa.Table(f"{t.prefix}alembic_version", sa.MetaData())
    await conn.run_sync(alembic_version.drop, checkfirst=True)


def to_record(row: Sequence[Any]) -> SessionRecord:
    """The record of a row of :meth:`Tables.session_columns`."""
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


def row_values(record: SessionRecord) -> dict[str, Any]:
    """The sessions row of ``record`` but its key."""
    return {
        "principal": record.principal,
        "created_at": record.created_at,
        "last_accessed": record.last_accessed,
        "expires_at": record.expires_at,
        "ttl": record.ttl,
        "version": record.version,
        "payload": record.payload(),
    }


def dump_json(value: JSONValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load_json(text: str) -> JSONValue:
    return json.loads(text)


@dataclass(frozen=True)
class QuotedNames:
    """Table and column names quoted for one dialect, for the hot paths' hand-written SQL."""

    sessions: str
    streams: str
    events: str
    key: str
    session_columns: str
    """The columns of :meth:`Tables.session_columns`, comma-separated."""


def quoted_names(t: Tables, dialect: sa.Dialect) -> QuotedNames:
    quote = dialect.identifier_preparer
    return QuotedNames(
        sessions=quote.format_table(t.sessions),
        streams=quote.format_table(t.streams),
        events=quote.format_table(t.events),
        key=quote.quote("key"),
        session_columns=", ".join(quote.quote(column.name) for column in t.session_columns()),
    )
