"""Alembic environment: runs on the connection :func:`upgrade_schema` hands over.

Never run by hand with the ``alembic`` tool: the table prefix, the target and
the connection (already inside the caller's transaction, holding the schema
lock) come from ``config.attributes``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from mcp_session_mw.errors import ConfigurationError
from mcp_session_mw.migrations import SCHEMA_AHEAD, revision_id, version_of


def _recorded_version(connection: sa.Connection, prefix: str) -> int | None:
    """The version ``SQLStore.open`` wrote, or None when the tables do not exist yet."""
    if not sa.inspect(connection).has_table(f"{prefix}schema_version"):
        return None
    table = sa.table(f"{prefix}schema_version", sa.column("id"), sa.column("version"))
    found = connection.scalar(sa.select(table.c.version).where(table.c.id == 1))
    return None if found is None else int(found)


def _record_version(connection: sa.Connection, prefix: str, version: int) -> None:
    table = sa.table(f"{prefix}schema_version", sa.column("id"), sa.column("version"))
    updated = connection.execute(sa.update(table).where(table.c.id == 1).values(version=version))
    if updated.rowcount == 0:
        connection.execute(sa.insert(table).values(id=1, version=version))


def run() -> None:
    config = context.config
    connection: sa.Connection = config.attributes["connection"]
    prefix: str = config.attributes["table_prefix"]
    target = version_of(config.attributes["target"])
    context.configure(connection=connection, version_table=f"{prefix}alembic_version")
    migration = context.get_context()
    with context.begin_transaction():
        current = migration.get_current_revision()
        recorded = _recorded_version(connection, prefix)
        # The larger of the two: a newer release may have moved either one on.
        known = [v for v in (None if current is None else version_of(current), recorded) if v]
        before = max(known) if known else None
        if before is not None and before > target:
            raise ConfigurationError(
                SCHEMA_AHEAD.format(prefix=prefix, found=before, target=target)
            )
        if current is None and recorded is not None:
            # Tables SQLStore.open created by itself: adopt them at their version.
            migration.stamp(context.script, revision_id(recorded))
        context.run_migrations()
        reached = migration.get_current_revision()
        after = version_of(reached) if reached is not None else 0
        if reached is not None:
            _record_version(connection, prefix, after)
    config.attributes["before"] = before
    config.attributes["after"] = after


run()
