"""The shared follower, on every backend: many live waits, one watch; reconnects; nothing left."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import anyio
import pytest

from mcp_session_mw import SessionRecord, StreamState
from mcp_session_mw.stores import Store
from mcp_session_mw.stores.follower import Follower, polling

from ..backends import Backend
from ..conftest import StoreFactory
from ..services import POSTGRES_URL, REDIS_URL, need_service

pytestmark = pytest.mark.anyio

WAITERS = 20
BOUND = 20.0
"""Seconds any step of these tests may take (none takes near that unless it is broken)."""


def new_record() -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        requested_protocol_version="2025-11-25",
        client_info={"name": "follower", "version": "1"},
        capabilities={},
        principal=None,
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
        ttl=60,
        state={},
    )


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (bounded by BOUND)."""
    with anyio.fail_after(BOUND):
        while not condition():  # noqa: ASYNC110 - the states looked at have no event
            await anyio.sleep(0.01)


async def open_streams(store: Store, names: list[str]) -> None:
    for name in names:
        await store.create(name, new_record())
        await store.open_stream(name, StreamState(stream_id="get", owner="t"))


async def test_many_waiters_share_one_follower(store: Store, store_factory: StoreFactory) -> None:
    producer = await store_factory()
    names = [f"many-{n}" for n in range(WAITERS)]
    await open_streams(producer, names)
    got: dict[str, list[str]] = {}

    async def follow(name: str) -> None:
        events = await store.wait_events(name, "get", after_seq=0, timeout=60)
        got[name] = [e.data for e in events]

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(follow, name)
            await until(lambda: store.follower.waiting == WAITERS)
            # One watch for all of them (none at all where writers wake it: memory).
            assert store.follower.starts <= 1
            for name in names:
                await producer.append_event(name, "get", f"to {name}")
    assert got == {name: [f"to {name}"] for name in names}
    assert store.follower.waiting == 0


async def test_a_waiter_wakes_for_its_stream_not_for_another(
    store: Store, store_factory: StoreFactory
) -> None:
    producer = await store_factory()
    await open_streams(producer, ["mine", "other"])
    other_slot = (store.key("other"), "get")
    got: list[str] = []

    async def follow_mine() -> None:
        got.extend(e.data for e in await store.wait_events("mine", "get", 0, timeout=60))

    async def follow_other() -> None:
        got.extend(e.data for e in await store.wait_events("other", "get", 0, timeout=60))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_other)
            await until(lambda: other_slot in store.follower.waited())
            tg.start_soon(follow_mine)
            await until(lambda: store.follower.waiting == 2)
            # A restarted watch wakes everyone once; let that settle first.
            await until(lambda: not _woken(store.follower, other_slot))
            await producer.append_event("mine", "get", "for mine")
            await until(lambda: got == ["for mine"])
            assert store.follower.waiting == 1
            assert other_slot in store.follower.waited()
            assert not _woken(store.follower, other_slot)
            await producer.append_event("other", "get", "for other")
    assert got == ["for mine", "for other"]


async def test_waiters_that_leave_are_forgotten_and_the_watch_stops(
    store: Store, store_factory: StoreFactory
) -> None:
    producer = await store_factory()
    names = [f"gone-{n}" for n in range(5)]
    await open_streams(producer, names)
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(store.wait_events, name, "get", 0, 60.0)
            await until(lambda: store.follower.waiting == len(names))
            tg.cancel_scope.cancel()
    assert store.follower.waiting == 0
    assert store.follower.waited() == {}
    await until(lambda: not store.follower.running)  # its connection goes with it


async def test_a_wait_returns_at_once_for_a_finished_or_deleted_stream(
    store: Store, store_factory: StoreFactory
) -> None:
    producer = await store_factory()
    await open_streams(producer, ["fin", "del"])
    results: list[int] = []

    async def follow(name: str) -> None:
        results.append(len(await store.wait_events(name, "get", 0, timeout=60)))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, "fin")
            tg.start_soon(follow, "del")
            await until(lambda: store.follower.waiting == 2)
            await producer.finish_stream("fin", "get")
            await producer.delete("del")
    assert results == [0, 0]


async def test_close_stops_the_watch_and_wakes_no_one_forever(
    backend: Backend, store_factory: StoreFactory
) -> None:
    store = await store_factory()
    await open_streams(store, ["closing"])
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.wait_events, "closing", "get", 0, 60.0)
            await until(lambda: store.follower.waiting == 1)
            tg.cancel_scope.cancel()
    await store.follower.close()
    assert not store.follower.running


# -- the follower on its own ------------------------------------------------------------


async def test_a_failing_watch_is_started_again_and_wakes_every_waiter() -> None:
    calls: list[int] = []

    async def positions(slots: object) -> dict[tuple[str, str], tuple[int, bool]]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("killed")
        return {("k", "s"): (0, False)}

    follower = Follower(polling(positions, lambda: 0.01), name="test")
    with anyio.fail_after(BOUND), follower.watching(("k", "s"), 0) as waiter:
        assert await waiter.wait(BOUND)  # woken by the failure: it re-reads
        await until(lambda: follower.starts >= 2 and len(calls) >= 3)
    await follower.close()
    assert not follower.running


# -- reconnection on PostgreSQL ------------------------------------------------------------


@pytest.mark.postgresql
async def test_postgres_listener_comes_back_after_its_backend_is_terminated() -> None:
    need_service("postgresql")
    import asyncpg

    from mcp_session_mw.stores.sql import SQLStore

    prefix = f"tf{uuid.uuid4().hex[:10]}_"
    store = SQLStore.from_url(POSTGRES_URL, table_prefix=prefix)
    producer = SQLStore.from_url(POSTGRES_URL, table_prefix=prefix)
    listener = store._listener
    assert listener is not None
    admin = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    got: list[str] = []

    async def follow() -> None:
        got.extend(e.data for e in await store.wait_events("killed", "get", 0, timeout=60))

    try:
        await open_streams(producer, ["killed"])
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await until(lambda: listener.listening)
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE query = $1",
                    f'LISTEN "{store._db.channel}"',
                )
                assert killed == 1
                await until(lambda: store.follower.starts >= 2)
                await until(lambda: listener.listening)
                await producer.append_event("killed", "get", "after the kill")
        assert got == ["after the kill"]
        await until(lambda: not store.follower.running)
        assert not listener.listening
    finally:
        await admin.close()
        await store.close()
        await producer.drop_schema()
        await producer.close()


# -- reconnection on Redis ------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_subscription_comes_back_after_client_kill() -> None:
    need_service("redis")
    import redis.asyncio

    from mcp_session_mw.stores.redis import RedisStore
    from mcp_session_mw.stores.redis.follow import RedisWatch

    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    store = RedisStore.from_url(REDIS_URL, prefix=prefix)
    producer = RedisStore.from_url(REDIS_URL, prefix=prefix)
    watch = store._follow_watch()
    assert isinstance(watch, RedisWatch)
    store._follower = Follower(watch, name="redis")  # the watch the test looks at
    admin = redis.asyncio.from_url(REDIS_URL)
    got: list[str] = []

    async def subscribers() -> set[str]:
        clients = await admin.client_list(_type="pubsub")
        return {str(c["id"]) for c in clients}

    async def follow() -> None:
        got.extend(e.data for e in await store.wait_events("killed", "get", 0, timeout=60))

    try:
        await open_streams(producer, ["killed"])
        before = await subscribers()
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await until(lambda: watch.subscribed)
                ours = (await subscribers()) - before
                assert len(ours) == 1  # one connection for the store's waits
                connects = watch.connects
                await admin.execute_command("CLIENT", "KILL", "ID", *ours)  # type: ignore[no-untyped-call]
                await until(lambda: watch.connects > connects and watch.subscribed)
                await producer.append_event("killed", "get", "after the kill")
        assert got == ["after the kill"]
        await until(lambda: not store.follower.running)
        assert not ((await subscribers()) - before)  # nothing left once nobody waits
    finally:
        await admin.aclose()
        await store.close()
        await producer.purge()
        await producer.close()


def _woken(follower: Follower, slot: tuple[str, str]) -> bool:
    return any(w.event.is_set() for w in follower._waiters.get(slot, ()))
