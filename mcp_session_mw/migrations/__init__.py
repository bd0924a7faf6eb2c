"""SQL schema migrations (Alembic), shipped inside the package.

``mcp-session-mw db upgrade`` runs :func:`upgrade_schema`. Each revision is
named by the schema version it produces (``0001`` is version 1), and the
target is always :data:`mcp_session_mw.stores.sql.schema.SCHEMA_VERSION`, the number
:meth:`SQLStore.open` checks: that constant is the one source of truth, and a
test fails if the newest revision here does not match it.

Every table prefix keeps its own Alembic bookkeeping table
(``<prefix>alembic_version``), so several deployments can share a database.
Tables that :meth:`SQLStore.open` created on its own (no Alembic table yet) are
adopted: their recorded ``<prefix>schema_version`` is stamped as the current
revision before upgrading. After every run ``<prefix>schema_version`` is set
from the revision reached, which is what :meth:`SQLStore.open` reads.

Alembic is imported lazily: a missing install raises MissingExtraError.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, MissingExtraError, StoreError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..stores.sql import SQLStore

MIGRATIONS_DIR = Path(__file__).resolve().parent
"""The Alembic script directory (``env.py``, ``versions/``)."""

# Messages tests assert on.
NOT_A_REVISION = "migration revision ids are four-digit schema versions, not {revision!r}"
NO_SUCH_TARGET = "no migration produces schema version {version}"
SCHEMA_AHEAD = (
    "the session tables with prefix {prefix!r} are at schema version {found}, "
    "newer than the target {target}; nothing to do here, upgrade mcp-session-mw instead"
)
MIGRATION_FAILED = "the migration failed: {error}"


def revision_id(version: int) -> str:
    """The Alembic revision that produces schema ``version``."""
    return f"{version:04d}"


def version_of(revision: str) -> int:
    """The schema version Alembic revision ``revision`` produces."""
    if len(revision) != 4 or not revision.isdigit():
        raise ConfigurationError(NOT_A_REVISION.format(revision=revision))
    return int(revision)


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade_schema` did: ``before`` is None for a database with no tables."""

    table_prefix: str
    before: int | None
    after: int

    @property
    def changed(self) -> bool:
        return self.before != self.after


class _QuietPrimaryKeyName(logging.Filter):
    """Drops MySQL's note that it ignores the name of Alembic's version-table primary key.

    asyncmy logs every server note as a warning; this one is harmless and would
    otherwise reach an operator's terminal on every first upgrade.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignored for PRIMARY key" not in record.getMessage()


_QUIET = _QuietPrimaryKeyName()


def _alembic() -> Any:
    try:
        return importlib.import_module("alembic")
    except ImportError as exc:
        raise MissingExtraError("sqlite", "alembic") from exc


def table_prefix() -> str:
    """The prefix of the tables the running migration works on (for revision scripts)."""
    from alembic import context

    prefix: str = context.config.attributes["table_prefix"]
    return prefix


async def upgrade_schema(
    store: SQLStore,
    *,
    target: int | None = None,
    script_location: str | Path | None = None,
) -> UpgradeResult:
    """Bring ``store``'s tables to schema ``target`` (default: the version this release needs).

    ``store`` need not be opened (opening refuses an old schema). The whole run
    holds the same lock :meth:`SQLStore.open` takes to create tables, so an
    application starting meanwhile waits instead of racing it. On PostgreSQL
    and SQLite it is one transaction; MariaDB/MySQL commit DDL as they go.
    ``script_location`` points at another copy of the scripts (tests).
    """
    _alembic()
    from alembic.config import Config
    from alembic.util import CommandError
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import func, select

    from ..stores.sql.schema import SCHEMA_VERSION

    wanted = SCHEMA_VERSION if target is None else target
    config = Config()
    config.set_main_option("script_location", str(script_location or MIGRATIONS_DIR))
    config.attributes["table_prefix"] = store.table_prefix
    config.attributes["target"] = revision_id(wanted)
    dialect = store.engine.dialect.name
    mysql = dialect in ("mysql", "mariadb")
    driver_logger = logging.getLogger(store.engine.dialect.driver)
    driver_logger.addFilter(_QUIET)
    try:
        async with store.engine.connect() as conn:
            if dialect == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif dialect == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(store._advisory_lock_id)))
            elif mysql:
                from ..stores.sql.schema import SCHEMA_LOCK_TIMED_OUT, SCHEMA_LOCK_TIMEOUT

                lock = store._mysql_lock_name
                if await conn.scalar(select(func.get_lock(lock, SCHEMA_LOCK_TIMEOUT))) != 1:
                    raise StoreError(SCHEMA_LOCK_TIMED_OUT)
            try:
                before, after = await conn.run_sync(_run, config)
                await conn.commit()
            finally:
                if mysql:
                    await conn.execute(select(func.release_lock(store._mysql_lock_name)))
                    await conn.commit()
    except CommandError as exc:
        raise ConfigurationError(MIGRATION_FAILED.format(error=exc)) from exc
    except (OSError, asyncio.TimeoutError, sa_exc.SQLAlchemyError) as exc:
        raise store._translate(exc) from exc
    finally:
        driver_logger.removeFilter(_QUIET)
    return UpgradeResult(store.table_prefix, before, after)


def _run(connection: Connection, config: Any) -> tuple[int | None, int]:
    """Run Alembic's ``upgrade`` on ``connection`` (inside the caller's transaction)."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError

    target = config.attributes["target"]
    script = ScriptDirectory.from_config(config)
    try:
        found = script.get_revision(target)
    except RevisionError:
        found = None
    if found is None:
        raise ConfigurationError(NO_SUCH_TARGET.format(version=version_of(target)))
    config.attributes["connection"] = connection
    command.upgrade(config, target)
    before: int | None = config.attributes.get("before")
    after: int = config.attributes["after"]
    return before, after


__all__ = [
    "MIGRATIONS_DIR",
    "UpgradeResult",
    "revision_id",
    "table_prefix",
    "upgrade_schema",
    "version_of",
]
