"""What only the SQL store has: schema versions, URLs and drivers, outages, processes, LISTEN."""

from __future__ import annotations

import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from anyio.abc import SocketStream, TaskGroup
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from mcp_session_mw import (
    ConfigurationError,
    MissingExtraError,
    SessionNotFoundError,
    SessionRecord,
    StoreError,
    StoreUnavailableError,
    StreamNotFoundError,
    StreamState,
)
from mcp_session_mw.stores import Store, create_store
from mcp_session_mw.stores.sql import (
    SCHEMA_TOO_NEW,
    SCHEMA_TOO_OLD,
    SCHEMA_VERSION,
    SQLITE_IN_MEMORY,
    SQLStore,
)
from mcp_session_mw.stores.sql.core_path import CorePath
from mcp_session_mw.stores.sql.engine import enter_wal

from ..backends import BACKENDS, Backend
from ..conftest import StoreFactory
from ..services import MARIADB_URL, POSTGRES_URL, need_service, unavailable

pytestmark = pytest.mark.anyio

SQL_BACKENDS = ("sqlite", "postgresql", "mariadb")


@pytest.fixture(
    params=[
        pytest.param(b, id=b.name, marks=getattr(pytest.mark, b.name))
        for b in BACKENDS
        if b.name in SQL_BACKENDS
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Narrows the shared backend table (and so ``store``) to the SQL entries."""
    spec: Backend = request.param
    spec.check_available()
    return spec


def new_record(ttl: float = 60.0, **state: object) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state=dict(state),
    )


def as_sql(store: Store) -> SQLStore:
    assert isinstance(store, SQLStore)
    return store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


# -- schema versions -------------------------------------------------------------


async def set_schema_version(store: SQLStore, version: int) -> None:
    table = f"{store.table_prefix}schema_version"
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(f"UPDATE {table} SET version = :v WHERE id = 1"), {"v": version})


async def test_schema_version_is_recorded(store: Store) -> None:
    sql_store = as_sql(store)
    table = f"{sql_store.table_prefix}schema_version"
    async with sql_store.engine.connect() as conn:
        rows = (await conn.execute(sa.text(f"SELECT id, version FROM {table}"))).all()
    assert [tuple(row) for row in rows] == [(1, SCHEMA_VERSION)]


async def test_open_is_idempotent_and_concurrent(store_factory: StoreFactory) -> None:
    """Many stores opening one fresh prefix at once all succeed and agree on one version row."""
    stores = []

    async def open_one() -> None:
        stores.append(await store_factory())

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(open_one)
    first = as_sql(stores[0])
    await first.open()
    table = f"{first.table_prefix}schema_version"
    async with first.engine.connect() as conn:
        assert await conn.scalar(sa.text(f"SELECT COUNT(*) FROM {table}")) == 1


@pytest.mark.parametrize(
    ("offset", "template"),
    [pytest.param(1, SCHEMA_TOO_NEW, id="newer"), pytest.param(-1, SCHEMA_TOO_OLD, id="older")],
)
async def test_recorded_schema_version_is_checked(store: Store, offset: int, template: str) -> None:
    sql_store = as_sql(store)
    found = SCHEMA_VERSION + offset
    await set_schema_version(sql_store, found)
    # A second store on the caller's engine: it must not dispose it on close.
    other = SQLStore(sql_store.engine, table_prefix=sql_store.table_prefix)
    try:
        with pytest.raises(ConfigurationError) as info:
            await other.open()
        expected = template.format(
            prefix=sql_store.table_prefix, found=found, supported=SCHEMA_VERSION
        )
        assert str(info.value) == expected
        if offset < 0:
            assert "mcp-session-mw db upgrade" in str(info.value)
        else:
            assert "newer than this mcp-session-mw supports" in str(info.value)
        with pytest.raises(ConfigurationError):  # no operation runs on a refused schema
            await other.load("anything")
    finally:
        await other.close()
        await set_schema_version(sql_store, SCHEMA_VERSION)


# -- URLs, drivers, configuration ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "drivername"),
    [
        pytest.param("sqlite:///{tmp}/a.db", "sqlite+aiosqlite", marks=pytest.mark.sqlite),
        pytest.param(
            "sqlite+aiosqlite:///{tmp}/a.db", "sqlite+aiosqlite", marks=pytest.mark.sqlite
        ),
        pytest.param(
            "postgresql://u@127.0.0.1/db", "postgresql+asyncpg", marks=pytest.mark.postgresql
        ),
        pytest.param(
            "postgres://u@127.0.0.1/db", "postgresql+asyncpg", marks=pytest.mark.postgresql
        ),
        pytest.param(
            "postgresql+asyncpg://u@127.0.0.1/db",
            "postgresql+asyncpg",
            marks=pytest.mark.postgresql,
        ),
        pytest.param("mysql://u@127.0.0.1/db", "mysql+asyncmy", marks=pytest.mark.mariadb),
        pytest.param("mariadb://u@127.0.0.1/db", "mariadb+asyncmy", marks=pytest.mark.mariadb),
        pytest.param("mysql+asyncmy://u@127.0.0.1/db", "mysql+asyncmy", marks=pytest.mark.mariadb),
    ],
)
async def test_create_store_maps_schemes_to_async_drivers(
    url: str, drivername: str, tmp_path: Path
) -> None:
    store = create_store(url.format(tmp=tmp_path), table_prefix="t_map_")
    try:
        assert isinstance(store, SQLStore)
        assert store.engine.url.drivername == drivername
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "extra", "module"),
    [
        pytest.param("sqlite:///x.db", "sqlite", "aiosqlite", marks=pytest.mark.sqlite),
        pytest.param(
            "postgresql://u@127.0.0.1/db", "postgres", "asyncpg", marks=pytest.mark.postgresql
        ),
        pytest.param("mysql://u@127.0.0.1/db", "mysql", "asyncmy", marks=pytest.mark.mariadb),
        pytest.param(
            "mysql+aiomysql://u@127.0.0.1/db", "mysql", "aiomysql", marks=pytest.mark.mariadb
        ),
    ],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, extra: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import module` sees when absent
    with pytest.raises(MissingExtraError) as info:
        create_store(url)
    assert (info.value.extra, info.value.module) == (extra, module)
    assert f"pip install 'mcp-session-mw[{extra}]'" in str(info.value)


@pytest.mark.sqlite
async def test_missing_sqlalchemy_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['sqlalchemy'] = None\n"
        "from mcp_session_mw import MissingExtraError, create_store\n"
        "try:\n"
        "    create_store('sqlite:///never.db')\n"
        "except MissingExtraError as exc:\n"
        "    print(exc.extra, exc.module)\n"
    )
    result = await anyio.run_process([sys.executable, "-c", code], check=True)
    assert result.stdout.decode().split() == ["sqlite", "sqlalchemy"]


@pytest.mark.sqlite
@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("sqlite+pysqlite:///x.db", {}, "does not serve 'sqlite+pysqlite'"),
        ("sqlite://", {}, SQLITE_IN_MEMORY),
        ("sqlite:///:memory:", {}, SQLITE_IN_MEMORY),
        ("sqlite:///x.db", {"table_prefix": "bad-prefix"}, "table_prefix"),
        ("sqlite:///x.db", {"table_prefix": "p" * 41}, "table_prefix"),
        ("sqlite:///x.db", {"poll_interval": 0}, "poll_interval"),
        ("not a url", {}, "not a usable database URL"),
    ],
)
def test_bad_configuration_is_refused(url: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SQLStore.from_url(url, **options)  # type: ignore[arg-type]
    assert message in str(info.value)


@pytest.mark.sqlite
async def test_caller_owned_engine_is_never_disposed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
    engine = create_async_engine(url)
    try:
        store = SQLStore.from_url(url, engine=engine, table_prefix=new_prefix())
        assert store.engine is engine
        await store.open()
        await store.create("mine", new_record(a=1))
        await store.drop_schema()
        await store.close()
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedin() >= 1, "close() disposed an engine the caller owns"
    finally:
        await engine.dispose()


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [
        pytest.param("postgresql+asyncpg", marks=pytest.mark.postgresql),
        pytest.param("mysql+asyncmy", marks=pytest.mark.mariadb),
    ],
)
async def test_unreachable_server_is_store_unavailable(scheme: str) -> None:
    store = create_store(f"{scheme}://root@127.0.0.1:{free_port()}/test", table_prefix=new_prefix())
    try:
        with pytest.raises(StoreUnavailableError) as info:
            await store.open()
        assert info.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError):
            await store.load("anything")
    finally:
        await store.close()


@pytest.mark.sqlite
async def test_unopenable_sqlite_file_is_a_store_error_not_an_outage(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", table_prefix="t_x_")
    try:
        with pytest.raises(StoreError) as info:
            await store.open()
        assert not isinstance(info.value, StoreUnavailableError)
        assert info.value.__cause__ is not None
    finally:
        await store.close()


@pytest.mark.sqlite
async def test_stores_racing_to_open_fresh_sqlite_files_all_open(tmp_path: Path) -> None:
    """Connections racing to switch a new file to WAL wait for each other instead of failing.

    SQLite refuses the losers of that race at once, without its busy handler.
    Before the connect hook retried, about one round in fifteen failed.
    """
    for round_no in range(30):
        url = f"sqlite:///{tmp_path / f'race-{round_no}.db'}"
        stores = [create_store(url, table_prefix="t_race_") for _ in range(8)]
        try:
            async with anyio.create_task_group() as tg:
                for racing in stores:
                    tg.start_soon(racing.open)
        finally:
            for racing in stores:
                await racing.close()


class _LockedCursor:
    """Answers the WAL switch with SQLite's lock refusal ``refusals`` times, then accepts it."""

    def __init__(self, refusals: int, message: str = "database is locked") -> None:
        self.refusals = refusals
        self.message = message
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(statement)
        if self.refusals > 0:
            self.refusals -= 1
            raise sqlite3.OperationalError(self.message)


async def test_wal_switch_retries_a_lock_refusal() -> None:
    cursor = _LockedCursor(refusals=3)
    await greenlet_spawn(enter_wal, cursor, 5.0)
    assert cursor.statements == ["PRAGMA journal_mode=WAL"] * 4


async def test_wal_switch_gives_up_at_the_busy_timeout() -> None:
    cursor = _LockedCursor(refusals=1_000)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await greenlet_spawn(enter_wal, cursor, 0.05)
    assert 1 < len(cursor.statements) < 1_000


async def test_wal_switch_does_not_retry_other_errors() -> None:
    cursor = _LockedCursor(refusals=1, message="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        await greenlet_spawn(enter_wal, cursor, 5.0)
    assert cursor.statements == ["PRAGMA journal_mode=WAL"]


async def test_database_refusal_is_a_store_error(store: Store) -> None:
    """A value the database rejects is StoreError (500), not an outage (503)."""
    if as_sql(store).engine.dialect.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    await store.create("long", new_record())
    with pytest.raises(StoreError) as info:
        await store.open_stream("long", StreamState(stream_id="s" * 500))
    assert not isinstance(info.value, StoreUnavailableError)
    assert info.value.__cause__ is not None
    assert await store.load("long") is not None  # and the store still works


# -- concurrency ------------------------------------------------------------------------


async def test_concurrent_appends_from_separate_connections_get_distinct_seqs(
    store: Store, store_factory: StoreFactory
) -> None:
    await store.create("busy", new_record())
    await store.open_stream("busy", StreamState(stream_id="s1", owner="a"))
    producers = [await store_factory() for _ in range(8)]

    async def produce(index: int, producer: Store) -> None:
        for n in range(10):
            await producer.append_event("busy", "s1", f"{index}:{n}", max_events=1000)

    async with anyio.create_task_group() as tg:
        for index, producer in enumerate(producers):
            tg.start_soon(produce, index, producer)
    events = await store.read_events("busy", "s1")
    assert [e.seq for e in events] == list(range(1, 81))
    assert sorted(e.data for e in events) == sorted(f"{i}:{n}" for i in range(8) for n in range(10))


async def test_concurrent_trimming_batches_keep_exactly_the_newest(
    store: Store, store_factory: StoreFactory
) -> None:
    """Batches racing on one stream with a small max_events leave no stale event behind.

    On PostgreSQL a batch's trim reads a snapshot taken before it got the stream
    row's lock; the rows of a batch that committed in between must still go.
    """
    await store.create("trim-race", new_record())
    await store.open_stream("trim-race", StreamState(stream_id="s1", owner="a"))
    writers = [await store_factory() for _ in range(4)]

    async def write(client: Store, n: int) -> None:
        for i in range(20):
            await client.append_events(
                "trim-race", "s1", [(f"{n}-{i}-{j}", None) for j in range(3)], max_events=5
            )

    async with anyio.create_task_group() as tg:
        for n, client in enumerate(writers):
            tg.start_soon(write, client, n)
    state = await store.load_stream("trim-race", "s1")
    assert state is not None
    assert (state.first_seq, state.last_seq) == (236, 240)
    assert [e.seq for e in await store.read_events("trim-race", "s1")] == list(range(236, 241))


async def test_portable_append_path_matches_the_fast_one(
    store: Store, store_factory: StoreFactory
) -> None:
    """The Core statements (MariaDB, other drivers) number, trim and refuse like the fast path."""
    portable = as_sql(await store_factory())
    portable._hot = CorePath(portable._db)
    await store.create("paths", new_record())
    for stream_id in ("fast", "core"):
        await store.open_stream("paths", StreamState(stream_id=stream_id, owner="a"))
    results: dict[str, list[tuple[int, str, str | None]]] = {}
    for stream_id, client in (("fast", store), ("core", portable)):
        stored = await client.append_events(
            "paths", stream_id, [(str(i), "m" if i % 2 else None) for i in range(7)], max_events=4
        )
        stored += [await client.append_event("paths", stream_id, "7", max_events=4)]
        stored += await client.append_events("paths", stream_id, [("8", None), ("9", None)])
        assert [e.seq for e in stored] == list(range(1, 11))
        with pytest.raises(StreamNotFoundError):
            await client.append_events("paths", "nope", [("x", None)])
        with pytest.raises(SessionNotFoundError):
            await client.append_events("ghost", stream_id, [("x", None)])
        state = await client.load_stream("paths", stream_id)
        assert state is not None
        assert (state.first_seq, state.last_seq) == (5, 10)
        events = await client.read_events("paths", stream_id)
        results[stream_id] = [(e.seq, e.data, e.event) for e in events]
    assert results["fast"] == results["core"]
    assert [seq for seq, _, _ in results["fast"]] == [5, 6, 7, 8, 9, 10]


async def test_update_with_function_returning_an_awaitable(store: Store) -> None:
    await store.create("aw", new_record(n=1))

    async def bump(state: dict[str, object]) -> dict[str, object]:
        return {"n": 2}

    updated = await store.update("aw", lambda state: bump(state))
    assert updated.state == {"n": 2}
    assert updated.version == 2
    meta = await store.update_meta("aw", {"setup": ["logging/setLevel"]})
    assert meta.meta == {"setup": ["logging/setLevel"]}
    assert meta.state == {"n": 2}
    assert meta.version == 3


_CHILD = """
import sys, time, anyio
from mcp_session_mw import SessionRecord
from mcp_session_mw.stores import create_store

async def main(url, prefix, name):
    store = create_store(url, table_prefix=prefix)
    await store.open()
    now = time.time()
    await store.create(name, SessionRecord(key="", protocol_version="2025-11-25",
        created_at=now, last_accessed=now, expires_at=now + 60, ttl=60, state={"by": name}))
    for _ in range(20):
        await store.update("parent", lambda s: {**s, "n": s["n"] + 1})
    seen = await store.load("parent")
    print(seen is not None)
    await store.close()

anyio.run(main, *sys.argv[1:])
"""


@pytest.mark.sqlite
async def test_two_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    prefix = new_prefix()
    store = SQLStore.from_url(url, table_prefix=prefix)
    try:
        await store.create("parent", new_record(n=0))
        outputs: list[str] = []

        async def child(name: str) -> None:
            result = await anyio.run_process(
                [sys.executable, "-c", _CHILD, url, prefix, name], check=True
            )
            outputs.append(result.stdout.decode().strip())

        async def parent() -> None:
            for _ in range(20):
                await store.update("parent", lambda s: {**s, "n": s["n"] + 1})

        async with anyio.create_task_group() as tg:
            tg.start_soon(child, "child-a")
            tg.start_soon(child, "child-b")
            tg.start_soon(parent)
        assert outputs == ["True", "True"]
        loaded = await store.load("parent")
        assert loaded is not None
        assert loaded.state["n"] == 60
        for name in ("child-a", "child-b"):
            written = await store.load(name)
            assert written is not None
            assert written.state == {"by": name}
        async with store.engine.connect() as conn:
            mode = await conn.scalar(sa.text("PRAGMA journal_mode"))
        assert mode == "wal"
    finally:
        await store.drop_schema()
        await store.close()


# -- outages: a relay in front of the real server that can be cut and restored -------------


class Relay:
    """Forwards a loopback port to a real server.

    ``stop`` drops every relayed connection and refuses new ones, which is what
    a client sees when its server restarts; ``start`` brings it back on the same
    port. The shared servers themselves are never touched.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()

    async def start(self, tg: TaskGroup) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        scope = anyio.CancelScope()
        stopped = anyio.Event()

        async def serve() -> None:
            try:
                with scope:
                    async with listener:
                        await listener.serve(self._relay)
            finally:
                stopped.set()

        self._scope, self._stopped = scope, stopped
        tg.start_soon(serve)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            await self._stopped.wait()
            self._scope = None

    async def _relay(self, client: SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:

                async def pipe(source: SocketStream, sink: SocketStream) -> None:
                    try:
                        async for chunk in source:
                            await sink.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pipe, client, upstream)
                tg.start_soon(pipe, upstream, client)


@pytest.fixture
async def task_group() -> AsyncIterator[TaskGroup]:
    async with anyio.create_task_group() as tg:
        yield tg
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("service", "url"),
    [
        pytest.param("postgresql", POSTGRES_URL, marks=pytest.mark.postgresql, id="postgresql"),
        pytest.param("mariadb", MARIADB_URL, marks=pytest.mark.mariadb, id="mariadb"),
    ],
)
async def test_store_works_again_after_the_server_comes_back(
    service: str, url: str, task_group: TaskGroup
) -> None:
    need_service(service)
    direct = sa.make_url(url)
    relay = Relay(direct.host or "127.0.0.1", direct.port or 0)
    relayed = direct.set(host="127.0.0.1", port=relay.port)
    prefix = new_prefix()
    await relay.start(task_group)
    store = SQLStore.from_url(relayed.render_as_string(hide_password=False), table_prefix=prefix)
    try:
        await store.create("survivor", new_record(n=1))
        # A restart while the store is idle: the pooled connections are dead, and
        # the next operation must not be the one that finds out.
        await relay.stop()
        await relay.start(task_group)
        assert await store.load("survivor") is not None
        # An outage: operations fail as unavailable, then work again once it ends.
        await relay.stop()
        with pytest.raises(StoreUnavailableError) as info:
            await store.load("survivor")
        assert info.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError):
            await store.update("survivor", {"n": 2})
        await relay.start(task_group)
        loaded = await store.load("survivor")  # same store object, no re-creation
        assert loaded is not None
        assert loaded.state == {"n": 1}
        assert (await store.update("survivor", {"n": 3})).state == {"n": 3}
    finally:
        await store.close()
        await relay.stop()
        cleaner = SQLStore.from_url(url, table_prefix=prefix)
        await cleaner.drop_schema()
        await cleaner.close()


@pytest.mark.parametrize(
    ("service", "url", "own_engine"),
    [
        pytest.param(
            "postgresql", POSTGRES_URL, False, marks=pytest.mark.postgresql, id="postgresql"
        ),
        pytest.param(
            "postgresql",
            POSTGRES_URL,
            True,
            marks=pytest.mark.postgresql,
            id="postgresql-caller-engine",
        ),
        pytest.param("mariadb", MARIADB_URL, False, marks=pytest.mark.mariadb, id="mariadb"),
    ],
)
async def test_appends_work_again_after_the_server_comes_back(
    service: str, url: str, own_engine: bool, task_group: TaskGroup
) -> None:
    """The append path (one statement on PostgreSQL) recovers like every other operation.

    A caller's engine has neither the store's checkout check nor its pool
    settings, and must recover all the same.
    """
    need_service(service)
    direct = sa.make_url(url)
    relay = Relay(direct.host or "127.0.0.1", direct.port or 0)
    relayed = direct.set(host="127.0.0.1", port=relay.port)
    prefix = new_prefix()
    await relay.start(task_group)
    engine = create_async_engine(relayed, pool_size=3) if own_engine else None
    store = (
        SQLStore(engine, table_prefix=prefix)
        if engine is not None
        else SQLStore.from_url(relayed.render_as_string(hide_password=False), table_prefix=prefix)
    )
    try:
        await store.create("writer", new_record())
        await store.open_stream("writer", StreamState(stream_id="s1", owner="a"))
        await store.append_events("writer", "s1", [("a", None), ("b", None)])
        # Restarted while idle: the pooled connections are dead, and the next
        # append must not be the one that finds out.
        await relay.stop()
        await relay.start(task_group)
        assert [e.seq for e in await store.append_events("writer", "s1", [("c", None)])] == [3]
        await relay.stop()
        with pytest.raises(StoreUnavailableError) as info:
            await store.append_events("writer", "s1", [("lost", None)])
        assert info.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError):
            await store.append_event("writer", "s1", "lost")
        await relay.start(task_group)
        assert (await store.append_event("writer", "s1", "d")).seq == 4
        events = await store.read_events("writer", "s1")
        assert [e.data for e in events] == ["a", "b", "c", "d"]
    finally:
        await store.close()
        if engine is not None:
            await engine.dispose()
        await relay.stop()
        cleaner = SQLStore.from_url(url, table_prefix=prefix)
        await cleaner.drop_schema()
        await cleaner.close()


# -- PostgreSQL LISTEN/NOTIFY ---------------------------------------------------------------


@pytest.mark.postgresql
async def test_postgres_wait_is_woken_by_notify_not_polling() -> None:
    need_service("postgresql")
    prefix = new_prefix()
    # The follower would not poll again within the test: only a NOTIFY can wake it.
    follower = SQLStore.from_url(POSTGRES_URL, table_prefix=prefix, poll_interval=3600)
    producer = SQLStore.from_url(POSTGRES_URL, table_prefix=prefix)
    try:
        await producer.create("live", new_record())
        await producer.open_stream("live", StreamState(stream_id="s1", owner="p"))
        got: list[str] = []

        async def follow() -> None:
            events = await follower.wait_events("live", "s1", after_seq=0, timeout=60)
            got.extend(e.data for e in events)

        # Without a wake-up the wait would only end at its 60 s timeout.
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                while True:  # until the wait has registered for wake-ups
                    if follower.follower.waiting:
                        break
                    await anyio.sleep(0.01)
                await anyio.sleep(0.2)  # and has done its first (empty) read
                if follower._listener is None or not follower._listener.listening:
                    unavailable("the PostgreSQL listener could not be opened")
                await producer.append_event("live", "s1", "pushed")
        assert got == ["pushed"]
    finally:
        await follower.close()
        await producer.drop_schema()
        await producer.close()


@pytest.mark.postgresql
async def test_postgres_trim_sees_a_batch_that_committed_while_it_waited() -> None:
    """The one-statement append reads a snapshot taken before it got the stream's lock.

    A batch that commits while it waits is invisible to that snapshot; its
    events below the new first_seq must be trimmed all the same.
    """
    need_service("postgresql")
    prefix = new_prefix()
    store = SQLStore.from_url(POSTGRES_URL, table_prefix=prefix)
    try:
        await store.create("held", new_record())
        await store.open_stream("held", StreamState(stream_id="s1", owner="a"))
        await store.append_events("held", "s1", [("1", None), ("2", None), ("3", None)])
        key = store.key("held")
        async with store.engine.connect() as other:
            # Another writer's batch (seqs 4 and 5), stopped before its COMMIT.
            await other.execute(
                sa.text(
                    f"UPDATE {prefix}streams SET last_seq = 5"
                    " WHERE session_key = :key AND stream_id = 's1'"
                ),
                {"key": key},
            )
            await other.execute(
                sa.text(
                    f"INSERT INTO {prefix}events (session_key, stream_id, seq, data)"
                    " VALUES (:key, 's1', 4, '4'), (:key, 's1', 5, '5')"
                ),
                {"key": key},
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(
                        store.append_events,
                        "held",
                        "s1",
                        [("6", None), ("7", None), ("8", None)],
                        max_events=4,
                    )
                )
                with anyio.fail_after(30):  # until the append waits for the row lock
                    while True:
                        # Activity statistics stay frozen within a transaction otherwise.
                        await other.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
                        waiting = await other.scalar(
                            sa.text(
                                "SELECT count(*) FROM pg_stat_activity"
                                " WHERE wait_event_type = 'Lock' AND query LIKE :pattern"
                            ),
                            {"pattern": f"%{prefix}streams%"},
                        )
                        if waiting:
                            break
                        await anyio.sleep(0.02)
                await other.commit()
        events = await store.read_events("held", "s1")
        assert [e.data for e in events] == ["5", "6", "7", "8"]
        state = await store.load_stream("held", "s1")
        assert state is not None
        assert (state.first_seq, state.last_seq) == (5, 8)
    finally:
        await store.drop_schema()
        await store.close()


@pytest.mark.postgresql
async def test_postgres_wait_on_finished_stream_returns_at_once() -> None:
    need_service("postgresql")
    store = SQLStore.from_url(POSTGRES_URL, table_prefix=new_prefix(), poll_interval=3600)
    try:
        await store.create("fin", new_record())
        await store.open_stream("fin", StreamState(stream_id="s1", owner="p"))
        await store.append_event("fin", "s1", "last")
        await store.finish_stream("fin", "s1")
        with anyio.fail_after(10):
            assert [e.data for e in await store.wait_events("fin", "s1", 0, timeout=60)] == ["last"]
            assert await store.wait_events("fin", "s1", 1, timeout=60) == []
    finally:
        await store.drop_schema()
        await store.close()
