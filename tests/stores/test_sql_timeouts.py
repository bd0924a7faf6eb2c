"""Every SQL store call answers or raises StoreUnavailableError within the bound the operator set.

PostgreSQL and MariaDB sit behind a loopback proxy (tests/faultproxy.py) that
stalls: the sockets stay open and no byte moves, as with a server that hangs
or a network path gone dark. SQLite's stall is another connection holding the
write lock. The bounds are short here, and each call is also wrapped in a much
longer deadline that turns a hang into a failure; nothing asserts how long a
call took, only that it ends in StoreUnavailableError and not a hang.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from mcp_session_mw import ConfigurationError, SessionRecord, StoreUnavailableError, StreamState
from mcp_session_mw.stores import create_store
from mcp_session_mw.stores.sql import DEFAULT_BUSY_TIMEOUT, DEFAULT_TIMEOUT, SQLStore

from ..faultproxy import FaultProxy
from ..services import MARIADB_URL, POSTGRES_URL, need_service

pytestmark = pytest.mark.anyio

BOUND = 0.5
"""The store's timeout in these tests (seconds)."""
HANG = 60.0
"""A call still waiting after this long counts as a hang."""

NETWORKED = [
    pytest.param("postgresql", POSTGRES_URL, id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", MARIADB_URL, id="mariadb", marks=pytest.mark.mariadb),
]


@asynccontextmanager
async def proxied_store(
    service: str, url: str, **options: Any
) -> AsyncIterator[tuple[SQLStore, FaultProxy]]:
    """A store reaching ``url`` through a stallable proxy; its tables dropped afterwards."""
    need_service(service)
    direct = sa.make_url(url)
    async with FaultProxy(direct.host or "127.0.0.1", direct.port or 0) as proxy:
        through = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        prefix = f"t{uuid.uuid4().hex[:10]}_"
        store = create_store(through, table_prefix=prefix, timeout=BOUND, **options)
        assert isinstance(store, SQLStore)
        try:
            yield store, proxy
        finally:
            proxy.resume()
            await store.close()
            cleaner = create_store(url, table_prefix=prefix)
            assert isinstance(cleaner, SQLStore)
            await cleaner.drop_schema()
            await cleaner.close()


async def unavailable_in_time(call: Callable[[], Awaitable[object]]) -> StoreUnavailableError:
    with anyio.fail_after(HANG), pytest.raises(StoreUnavailableError) as raised:
        await call()
    return raised.value


def new_record(store: SQLStore, **state: Any) -> SessionRecord:
    now = store.now()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + 600,
        ttl=600,
        state=state,
    )


async def created(store: SQLStore, **state: Any) -> str:
    session_id = uuid.uuid4().hex
    await store.create(session_id, new_record(store, **state))
    await store.open_stream(session_id, stream_state(store, "s1"))
    return session_id


def stream_state(store: SQLStore, stream_id: str) -> StreamState:
    return StreamState(stream_id=stream_id, owner="me", lease_expires=store.now() + 60)


def hot_calls(store: SQLStore, session_id: str) -> list[Callable[[], Awaitable[object]]]:
    """One call of each kind a request makes: the load, then the writes it may make."""
    state = stream_state(store, "s2")
    return [
        lambda: store.load(session_id),
        lambda: store.write_stream(session_id, "s2", [("x", None)], open_as=state),
        lambda: store.append_events(session_id, "s1", [("y", None)]),
        lambda: store.touch(session_id),
        lambda: store.record_streams(session_id, ["s1"], keep=4),
        lambda: store.create(uuid.uuid4().hex, new_record(store)),
    ]


@pytest.mark.parametrize(("service", "url"), NETWORKED)
async def test_a_stalled_server_gives_unavailable_on_every_hot_call(service: str, url: str) -> None:
    async with proxied_store(service, url) as (store, proxy):
        await store.open()
        session_id = await created(store, n=0)
        proxy.stall()
        for call in hot_calls(store, session_id):
            await unavailable_in_time(call)
        assert proxy.held > 0  # the calls did reach the (silent) server side
        proxy.resume()
        # Back: the same store serves again, with nothing half-written.
        loaded = await store.load(session_id)
        assert loaded is not None
        assert loaded.state == {"n": 0}
        events = await store.read_events(session_id, "s1")
        assert all(event.data == "y" for event in events)


@pytest.mark.parametrize(("service", "url"), NETWORKED)
async def test_a_server_that_never_answers_the_connect_gives_unavailable(
    service: str, url: str
) -> None:
    async with proxied_store(service, url) as (store, proxy):
        proxy.stall()  # before the first connection: the handshake never completes
        await unavailable_in_time(store.open)
        proxy.resume()
        await store.open()
        assert await store.load("no-such-session") is None


@pytest.mark.parametrize(("service", "url"), NETWORKED)
async def test_a_pool_with_every_connection_busy_gives_unavailable(service: str, url: str) -> None:
    async with proxied_store(service, url, pool_size=1, max_overflow=0) as (
        store,
        _proxy,
    ):
        # The pool's only connection, held before the store has one of its own.
        async with store.engine.connect():
            error = await unavailable_in_time(lambda: store.load("any"))
        assert "cannot be reached" in str(error)
        session_id = await created(store)
        assert await store.load(session_id) is not None


@pytest.mark.sqlite
async def test_sqlite_held_write_lock_gives_unavailable_within_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = create_store(f"sqlite:///{path}", busy_timeout=BOUND)
    assert isinstance(store, SQLStore)
    try:
        await store.open()
        session_id = await created(store, n=0)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process's writer that never ends
            for call in hot_calls(store, session_id)[1:]:
                await unavailable_in_time(call)
            # Reads go on under WAL while the writer holds its lock.
            assert await store.load(session_id) is not None
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await store.append_events(session_id, "s1", [("after", None)])
        assert [e.data for e in await store.read_events(session_id, "s1")] == ["after"]
    finally:
        await store.close()


def test_the_default_bounds_are_at_most_ten_seconds() -> None:
    assert 0 < DEFAULT_TIMEOUT <= 10
    assert 0 < DEFAULT_BUSY_TIMEOUT <= 10


@pytest.mark.parametrize("bad", [0, -1.0, True, "5"])
def test_a_timeout_that_is_not_a_positive_number_is_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        SQLStore.from_url("postgresql://u@127.0.0.1/db", timeout=bad)  # type: ignore[arg-type]
