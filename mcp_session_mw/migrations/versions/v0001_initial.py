"""Schema version 1: sessions, streams, events and the schema version row.

Written out in full, never derived from the store's live table definitions:
this revision must keep creating exactly version 1 whatever later releases do.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from mcp_session_mw.migrations import table_prefix

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BOTH = ("mysql", "mariadb")
_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}


def _key() -> sa.types.TypeEngine[Any]:
    # Hex digests: ASCII with binary collation on MySQL keeps the index small.
    return sa.CHAR(64).with_variant(mysql.CHAR(64, charset="ascii", collation="ascii_bin"), *_BOTH)


def _ident() -> sa.types.TypeEngine[Any]:
    # Stream ids compare case-sensitively.
    return sa.String(128).with_variant(
        mysql.VARCHAR(128, charset="utf8mb4", collation="utf8mb4_bin"), *_BOTH
    )


def _long_text() -> sa.types.TypeEngine[Any]:
    # MySQL TEXT stops at 64 KiB.
    return sa.Text().with_variant(mysql.LONGTEXT(charset="utf8mb4"), *_BOTH)


def upgrade() -> None:
    prefix = table_prefix()
    op.create_table(
        f"{prefix}schema_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        **_OPTIONS,
    )
    op.create_table(
        f"{prefix}sessions",
        sa.Column("key", _key(), primary_key=True),
        sa.Column("principal", sa.Text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_accessed", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("ttl", sa.Double, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("payload", _long_text(), nullable=False),
        **_OPTIONS,
    )
    op.create_index(f"ix_{prefix}sessions_expires_at", f"{prefix}sessions", ["expires_at"])
    op.create_table(
        f"{prefix}streams",
        sa.Column("session_key", _key(), primary_key=True),
        sa.Column("stream_id", _ident(), primary_key=True),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("lease_expires", sa.Double, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        **_OPTIONS,
    )
    op.create_table(
        f"{prefix}events",
        sa.Column("session_key", _key(), primary_key=True),
        sa.Column("stream_id", _ident(), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event", sa.Text, nullable=True),
        sa.Column("data", _long_text(), nullable=False),
        **_OPTIONS,
    )


def downgrade() -> None:
    prefix = table_prefix()
    op.drop_table(f"{prefix}events")
    op.drop_table(f"{prefix}streams")
    op.drop_index(f"ix_{prefix}sessions_expires_at", table_name=f"{prefix}sessions")
    op.drop_table(f"{prefix}sessions")
    op.drop_table(f"{prefix}schema_version")
