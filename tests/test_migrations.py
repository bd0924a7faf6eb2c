"""Alembic migrations of the SQL store, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mcp_session_mw import ConfigurationError, SessionRecord, create_store
from mcp_session_mw.cli import EXIT_OK, EXIT_USAGE
from mcp_session_mw.migrations import (
    MIGRATIONS_DIR,
    SCHEMA_AHEAD,
    UpgradeResult,
    revision_id,
    upgrade_schema,
    version_of,
)
from mcp_session_mw.stores.sql import SCHEMA_TOO_OLD, SCHEMA_VERSION, SQLStore, schema
from mcp_session_mw.stores.sql.schema import tables

from .services import MARIADB_URL, POSTGRES_URL, need_service

pytestmark = pytest.mark.anyio

FAKE_V2 = '''"""A schema version 2 that exists only in this test."""

from __future__ import annotations

from alembic import op

from mcp_session_mw.migrations import table_prefix

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = table_prefix()
    op.create_index(f"ix_{prefix}sessions_last_accessed", f"{prefix}sessions", ["last_accessed"])


def downgrade() -> None:
    prefix = table_prefix()
    op.drop_index(f"ix_{prefix}sessions_last_accessed", table_name=f"{prefix}sessions")
'''


@dataclass(frozen=True)
class Database:
    url: str
    prefix: str

    def store(self) -> SQLStore:
        store = create_store(self.url, table_prefix=self.prefix)
        assert isinstance(store, SQLStore)
        return store


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty namespace (own table prefix) on one SQL backend; dropped afterwards."""
    kind: str = request.param
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
    else:
        need_service(kind)
        url = POSTGRES_URL if kind == "postgresql" else MARIADB_URL
    db = Database(url, f"mig{uuid.uuid4().hex[:10]}_")
    try:
        yield db
    finally:
        store = db.store()
        try:
            await store.drop_schema()
        finally:
            await store.close()


async def upgrade(db: Database, script_location: Path | None = None) -> UpgradeResult:
    store = db.store()
    try:
        return await upgrade_schema(store, script_location=script_location)
    finally:
        await store.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_session_mw.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


async def versions(db: Database) -> tuple[str | None, int | None]:
    """(Alembic's revision, the recorded schema version) of ``db``'s namespace."""
    store = db.store()
    try:
        async with store.engine.connect() as conn:

            def read(sync: sa.Connection) -> tuple[str | None, int | None]:
                inspector = sa.inspect(sync)
                revision = None
                if inspector.has_table(f"{db.prefix}alembic_version"):
                    table = sa.table(f"{db.prefix}alembic_version", sa.column("version_num"))
                    revision = sync.scalar(sa.select(table.c.version_num))
                version = None
                if inspector.has_table(f"{db.prefix}schema_version"):
                    table = sa.table(f"{db.prefix}schema_version", sa.column("version"))
                    version = sync.scalar(sa.select(table.c.version))
                return revision, version

            return await conn.run_sync(read)
    finally:
        await store.close()


async def schema_differences(db: Database) -> list[Any]:
    """What Alembic's autogenerate sees between the migrated tables and SQLStore's own."""
    store = db.store()
    metadata = tables(db.prefix).metadata
    names = {t.name for t in metadata.tables.values()}

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        return type_ != "table" or name in names

    try:
        async with store.engine.connect() as conn:

            def compare(sync: sa.Connection) -> list[Any]:
                context = MigrationContext.configure(
                    sync, opts={"include_name": include_name, "compare_type": True}
                )
                return list(compare_metadata(context, metadata))

            return await conn.run_sync(compare)
    finally:
        await store.close()


async def set_recorded_version(db: Database, version: int) -> None:
    store = db.store()
    try:
        async with store.engine.begin() as conn:
            table = sa.table(f"{db.prefix}schema_version", sa.column("id"), sa.column("version"))
            await conn.execute(sa.update(table).where(table.c.id == 1).values(version=version))
    finally:
        await store.close()


def new_record() -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
        ttl=60,
        state={"kept": True},
    )


# -- one source of truth --------------------------------------------------------------


def test_revisions_are_consecutive_schema_versions_ending_at_the_store_version() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [revision_id(SCHEMA_VERSION)]
    chain = list(script.walk_revisions())  # newest first
    assert [version_of(r.revision) for r in chain] == list(range(SCHEMA_VERSION, 0, -1))
    for newer, older in itertools.pairwise(chain):
        assert newer.down_revision == older.revision
    assert chain[-1].down_revision is None


def test_revision_ids_are_four_digit_versions() -> None:
    assert revision_id(1) == "0001"
    assert version_of("0012") == 12
    for bad in ("1", "abcd", "00001", "ae1027a6acf"):
        with pytest.raises(ConfigurationError):
            version_of(bad)


# -- on every SQL backend ----------------------------------------------------------------


async def test_cli_upgrades_a_fresh_database_the_store_accepts(database: Database) -> None:
    done = await anyio.to_thread.run_sync(
        run_cli, "db", "upgrade", "--store", database.url, "--table-prefix", database.prefix
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert f"schema version none -> {SCHEMA_VERSION}" in done.stdout
    assert done.stderr == ""  # no driver chatter (MySQL's note on the version table's key)
    assert await versions(database) == (revision_id(SCHEMA_VERSION), SCHEMA_VERSION)
    assert await schema_differences(database) == []
    store = database.store()
    async with store:
        await store.create("after-migration", new_record())
        loaded = await store.load("after-migration")
        assert loaded is not None
        assert loaded.state == {"kept": True}
    again = await anyio.to_thread.run_sync(
        run_cli, "db", "upgrade", "--store", database.url, "--table-prefix", database.prefix
    )
    assert again.returncode == EXIT_OK, again.stderr
    assert "already at schema version" in again.stdout


async def test_tables_the_store_created_are_adopted(database: Database) -> None:
    store = database.store()
    async with store:  # SQLStore.open creates the tables on its own, without Alembic
        await store.create("before-upgrade", new_record())
    assert await versions(database) == (None, SCHEMA_VERSION)
    result = await upgrade(database)
    assert (result.before, result.after, result.changed) == (SCHEMA_VERSION, SCHEMA_VERSION, False)
    assert await versions(database) == (revision_id(SCHEMA_VERSION), SCHEMA_VERSION)
    async with database.store() as reopened:
        assert await reopened.load("before-upgrade") is not None


async def test_behind_schema_is_refused_until_upgraded(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Version 1 in the database, then a release that needs version 2.
    await upgrade(database)
    async with database.store() as store:
        await store.create("survivor", new_record())
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "v0002_fake.py").write_text(FAKE_V2)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)

    behind = database.store()
    with pytest.raises(ConfigurationError) as refused:
        await behind.open()
    await behind.close()
    assert str(refused.value) == SCHEMA_TOO_OLD.format(prefix=database.prefix, found=1, supported=2)
    assert "mcp-session-mw db upgrade" in str(refused.value)

    result = await upgrade(database, script_location=scripts)
    assert (result.before, result.after) == (1, 2)
    assert await versions(database) == ("0002", 2)
    upgraded = database.store()
    async with upgraded:
        loaded = await upgraded.load("survivor")
        assert loaded is not None
        assert loaded.state == {"kept": True}
        async with upgraded.engine.connect() as conn:
            indexes = await conn.run_sync(
                lambda sync: sa.inspect(sync).get_indexes(f"{database.prefix}sessions")
            )
    assert f"ix_{database.prefix}sessions_last_accessed" in {i["name"] for i in indexes}


async def test_newer_schema_is_left_alone(database: Database) -> None:
    await upgrade(database)
    await set_recorded_version(database, SCHEMA_VERSION + 1)
    done = await anyio.to_thread.run_sync(
        run_cli, "db", "upgrade", "--store", database.url, "--table-prefix", database.prefix
    )
    assert done.returncode == EXIT_USAGE
    expected = SCHEMA_AHEAD.format(
        prefix=database.prefix, found=SCHEMA_VERSION + 1, target=SCHEMA_VERSION
    )
    assert expected in done.stderr
    assert await versions(database) == (revision_id(SCHEMA_VERSION), SCHEMA_VERSION + 1)


async def test_upgrade_racing_store_startups(database: Database) -> None:
    """Upgrades and first opens at once: the shared schema lock keeps them from colliding."""
    stores = [database.store() for _ in range(4)]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(upgrade_schema, stores[0])
            tg.start_soon(stores[1].open)
            tg.start_soon(upgrade_schema, stores[2])
            tg.start_soon(stores[3].open)
    finally:
        for store in stores:
            await store.close()
    assert await versions(database) == (revision_id(SCHEMA_VERSION), SCHEMA_VERSION)
    assert await schema_differences(database) == []
