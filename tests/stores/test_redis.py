"""What the Redis store promises beyond the shared contract.

Server-side atomic updates under contention, hash-tagged keys (one slot per
session, so Cluster works), expiry by Redis itself, a paged index that scales
and never lists an expired session, blocking reads on their own connections,
URL forms (TLS, unix socket) and behaviour while Redis is down. Tests marked
for both run on the shared standalone server and on a private three-node
Cluster; tests that stop a server start a private one.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_session_mw import (
    ConfigurationError,
    SessionRecord,
    StoreUnavailableError,
    StreamState,
    create_store,
)
from mcp_session_mw.stores.redis import RedisStore
from mcp_session_mw.stores.redis import events as redis_events
from mcp_session_mw.stores.redis.scripts import INSERT_SCRIPT

from ..redis_cluster import RedisServer, cluster_url, self_signed_certificate
from ..services import REDIS_URL, need_service, unavailable

pytestmark = pytest.mark.anyio

MakeStore = Callable[..., Awaitable[RedisStore]]


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


def stream(stream_id: str = "s1") -> StreamState:
    return StreamState(stream_id=stream_id, request_id=1, owner="p", lease_expires=time.time() + 30)


def _need_driver() -> None:
    if importlib.util.find_spec("redis") is None:
        unavailable("the redis driver is not installed")


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis_cluster", marks=pytest.mark.redis_cluster),
    ]
)
def redis_url(request: pytest.FixtureRequest) -> str:
    _need_driver()
    if request.param == "redis":
        need_service("redis")
        return REDIS_URL
    return cluster_url()


@pytest.fixture
def standalone_url() -> str:
    _need_driver()
    need_service("redis")
    return REDIS_URL


def _factory(url: str) -> tuple[MakeStore, list[RedisStore]]:
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    made: list[RedisStore] = []

    async def make(**options: Any) -> RedisStore:
        store = RedisStore.from_url(url, prefix=prefix, **options)
        made.append(store)
        await store.open()
        return store

    return make, made


async def _teardown(made: list[RedisStore]) -> None:
    if made:
        await made[0].purge()
    for store in made:
        await store.close()


@pytest.fixture
async def make_store(redis_url: str) -> AsyncIterator[MakeStore]:
    """Stores on one fresh prefix of standalone Redis or the Cluster; purged afterwards."""
    make, made = _factory(redis_url)
    yield make
    await _teardown(made)


@pytest.fixture
async def make_standalone(standalone_url: str) -> AsyncIterator[MakeStore]:
    make, made = _factory(standalone_url)
    yield make
    await _teardown(made)


async def _keys(store: RedisStore) -> list[str]:
    names = [n async for n in store.client.scan_iter(match=f"{store._prefix}*", count=1000)]
    return sorted(n.decode() if isinstance(n, bytes) else n for n in names)


# -- atomic updates ---------------------------------------------------------------------


async def test_200_increments_from_10_clients_end_at_200(make_store: MakeStore) -> None:
    first = await make_store()
    clients = [first] + [await make_store() for _ in range(9)]
    await first.create("counter", new_record(n=0))

    async def bump(client: RedisStore) -> None:
        await client.update("counter", lambda s: {**s, "n": s["n"] + 1})

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(bump, clients[i % 10])
    loaded = await first.load("counter")
    assert loaded is not None
    assert loaded.state["n"] == 200
    assert loaded.version == 201


async def test_update_keeps_a_concurrent_touch(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create("t", new_record(ttl=5))

    async def touch_midway(state: dict[str, Any]) -> dict[str, Any]:
        await store.touch("t", ttl=600)
        return {**state, "x": 1}

    updated = await store.update("t", touch_midway)
    assert updated.state == {"x": 1}
    loaded = await store.load("t")
    assert loaded is not None
    assert loaded.ttl == 600, "the compare-and-swap wrote back the pre-touch expiry"


async def test_load_with_touch_is_load_then_touch_in_one_call(make_store: MakeStore) -> None:
    store = await make_store()
    created = await store.create("lt", new_record(ttl=5, n=1))
    await store.create("other", new_record(ttl=300))
    touched = await store.load("lt", touch=True, ttl=600)
    assert touched is not None
    assert touched.state == {"n": 1}
    assert touched.version == created.version
    assert touched.ttl == 600
    assert touched.expires_at > created.expires_at + 500
    assert touched.last_accessed >= created.last_accessed
    assert await store.load("lt") == touched
    # The index moved too: "lt" now expires after "other".
    assert [r.key for r in (await store.list_active()).records] == [
        store.key("other"),
        store.key("lt"),
    ]
    again = await store.load("lt", touch=True)  # the session's own ttl
    assert again is not None
    assert again.ttl == 600
    assert await store.load("missing", touch=True) is None
    await store.touch("lt", ttl=0.2)
    await anyio.sleep(0.4)
    assert await store.load("lt", touch=True) is None


# -- key layout and expiry --------------------------------------------------------------


async def test_every_key_of_a_session_is_in_one_slot(make_store: MakeStore) -> None:
    from redis.crc import key_slot

    store = await make_store()
    await store.create("slotted", new_record())
    for sid in ("a", "b"):
        await store.open_stream("slotted", stream(sid))
        await store.append_event("slotted", sid, "x")
    digest = store.key("slotted")
    names = [n for n in await _keys(store) if digest in n]
    assert len(names) == 7  # session, stream set, 2 states, 2 event streams, wake
    assert all(f"{{{digest}}}" in n for n in names)
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert "slotted" not in "".join(await _keys(store))


async def test_expiry_is_redis_own_and_stream_keys_follow(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create("e", new_record(ttl=5))
    await store.open_stream("e", stream())
    await store.append_event("e", "s1", "one")
    session = store._base(store.key("e"))
    stream_keys = [n for n in await _keys(store) if store.key("e") in n and n != session]
    assert len(stream_keys) == 4  # stream set, state, events, wake

    async def pttl(name: str) -> int:
        return int(await store.client.pttl(name))

    assert 0 < await pttl(session) <= 5000
    for name in stream_keys:
        assert await pttl(name) >= await pttl(session), name

    # A touch past the stream keys' expiry renews them all, to one ttl beyond.
    assert await store.touch("e", ttl=600)
    assert 590_000 < await pttl(session) <= 600_000
    for name in stream_keys:
        assert await pttl(name) > 1_190_000, name
    # A touch that stays within it renews the session only: O(1), however many streams.
    before = {name: await pttl(name) for name in stream_keys}
    assert await store.touch("e", ttl=600)
    for name in stream_keys:
        assert await pttl(name) <= before[name], name

    assert await store.touch("e", ttl=0.3)
    await anyio.sleep(0.6)
    # Nobody swept: Redis expired the session by itself, and what is left is invisible.
    assert session not in await _keys(store)
    assert await store.load("e") is None
    assert await store.load_stream("e", "s1") is None
    assert await store.read_events("e", "s1") == []
    assert (await store.list_active()).records == []
    # cleanup_expired prunes the index and removes the leftover stream keys at once.
    assert await store.cleanup_expired() == 1
    assert await _keys(store) == []


async def test_stream_keys_expire_by_themselves_within_a_ttl(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create("x", new_record(ttl=0.3))
    await store.open_stream("x", stream())
    await store.append_event("x", "s1", "one")
    await anyio.sleep(0.9)  # the session's ttl, plus the stream keys' one ttl, plus slack
    assert [n for n in await _keys(store) if store.key("x") in n] == []


async def test_paging_survives_ties_touches_and_deletes(make_store: MakeStore) -> None:
    store = await make_store()
    same_expiry = time.time() + 600
    ids = [f"tie-{i:03d}" for i in range(120)]
    for sid in ids:
        await store.create(sid, new_record().evolve(expires_at=same_expiry))
    first = await store.list_active(limit=25)
    assert len(first.records) == 25
    # The cursor's own session moves to the end and another listed one goes away:
    # the next page must still start right after the cursor's old place.
    by_key = {store.key(sid): sid for sid in ids}
    await store.touch(by_key[first.records[-1].key], ttl=900)
    await store.delete(by_key[first.records[0].key])
    seen = [r.key for r in first.records]
    cursor = first.next_cursor
    while cursor is not None:
        page = await store.list_active(limit=25, cursor=cursor)
        seen.extend(r.key for r in page.records)
        cursor = page.next_cursor
    assert set(seen) == set(by_key)
    repeated = {k for k in seen if seen.count(k) > 1}
    assert repeated <= {first.records[-1].key}


@pytest.mark.redis
async def test_list_active_pages_through_100k_sessions(make_standalone: MakeStore) -> None:
    store = await make_standalone()
    await store.create("warm-up", new_record())  # also puts the insert script in the cache
    total, batch, now = 100_000, 5_000, time.time()
    expected = {store.key("warm-up")}
    for start in range(0, total, batch):
        async with store.client.pipeline(transaction=False) as pipe:
            for i in range(start, start + batch):
                key = store.key(f"bulk-{i}")
                expected.add(key)
                ttl = 600.0 + i % 50  # 50 distinct expiries, 2000 sessions sharing each
                record = SessionRecord(
                    key=key,
                    protocol_version="2025-11-25",
                    created_at=now,
                    last_accessed=now,
                    expires_at=now + ttl,
                    ttl=ttl,
                    version=1,
                )
                keys = store._session_keys(key)
                args = store._insert_args(record, now)
                pipe.execute_command("EVALSHA", INSERT_SCRIPT.sha, len(keys), *keys, *args)
            results = await pipe.execute()
        assert all(int(r) == 1 for r in results)
    for i in range(50):
        await store.create(f"short-{i}", new_record(ttl=0.2))
    await anyio.sleep(0.4)

    seen: list[str] = []
    expiries: list[float] = []
    cursor = None
    while True:
        page = await store.list_active(limit=777, cursor=cursor)
        seen.extend(r.key for r in page.records)
        expiries.extend(r.expires_at for r in page.records)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == total + 1
    assert set(seen) == expected
    assert expiries == sorted(expiries)
    assert await store.count_active() == total + 1
    assert await store.cleanup_expired() == 50


# -- events ---------------------------------------------------------------------------


async def test_store_wide_max_events_trims_exactly(make_store: MakeStore) -> None:
    store = await make_store(max_events=3)
    await store.create("m", new_record())
    await store.open_stream("m", stream())
    for i in range(5):
        await store.append_event("m", "s1", str(i))
    assert [e.seq for e in await store.read_events("m", "s1")] == [3, 4, 5]
    state = await store.load_stream("m", "s1")
    assert state is not None
    assert (state.first_seq, state.last_seq) == (3, 5)
    await store.append_event("m", "s1", "wider", max_events=10)
    assert [e.seq for e in await store.read_events("m", "s1")] == [3, 4, 5, 6]


async def test_store_wide_max_events_trims_a_batch_exactly(make_store: MakeStore) -> None:
    store = await make_store(max_events=3)
    await store.create("mb", new_record())
    await store.open_stream("mb", stream())
    stored = await store.append_events("mb", "s1", [(str(i), None) for i in range(5)])
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    assert [e.data for e in await store.read_events("mb", "s1")] == ["2", "3", "4"]
    state = await store.load_stream("mb", "s1")
    assert state is not None
    assert (state.first_seq, state.last_seq) == (3, 5)
    await store.append_events("mb", "s1", [("wide", None)], max_events=10)
    assert [e.seq for e in await store.read_events("mb", "s1")] == [3, 4, 5, 6]


async def test_a_batch_into_a_fresh_stream_expires_with_the_session(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    await store.create("fresh", new_record(ttl=5))
    await store.open_stream("fresh", stream())
    await store.append_events("fresh", "s1", [("a", None), ("b", "e")])
    events = f"{store._base(store.key('fresh'))}:ev:s1"
    session_pttl = int(await store.client.pttl(store._base(store.key("fresh"))))
    assert int(await store.client.pttl(events)) >= session_pttl > 0


@pytest.mark.redis
async def test_a_batch_is_one_script_call_doing_every_xadd(tmp_path: Path) -> None:
    # A private server, so nobody else's commands move its command counters.
    _need_driver()
    server = RedisServer(tmp_path / "batch")
    server.start()
    store = RedisStore.from_url(server.url, prefix="batch:")
    try:
        await store.open()
        await store.create("b", new_record())
        await store.open_stream("b", stream())
        await store.append_event("b", "s1", "warm")  # caches the script (EVALSHA from now on)

        async def calls() -> dict[str, int]:
            info = await store.client.execute_command("INFO", "commandstats")
            return {
                name: int(info.get(f"cmdstat_{name}", {}).get("calls", 0))
                for name in ("evalsha", "eval", "xadd")
            }

        before = await calls()
        await store.append_events("b", "s1", [(str(i), None) for i in range(100)])
        after = await calls()
        assert after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"] == 1
        assert after["xadd"] - before["xadd"] == 100
        before = await calls()
        await store.append_event("b", "s1", "one")
        after = await calls()
        assert after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"] == 1
        assert after["xadd"] - before["xadd"] == 1
    finally:
        await store.close()
        server.stop()


async def test_delete_stream_leaves_no_key_of_it(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create("ds", new_record())
    for sid in ("keep", "drop"):
        await store.open_stream("ds", stream(sid))
        await store.append_event("ds", sid, "x")
    base = store._base(store.key("ds"))
    assert await store.delete_stream("ds", "drop")
    names = await _keys(store)
    assert f"{base}:st:drop" not in names
    assert f"{base}:ev:drop" not in names
    assert {f"{base}:st:keep", f"{base}:ev:keep"} <= set(names)
    members = await store.client.smembers(f"{base}:streams")
    assert {m.decode() if isinstance(m, bytes) else m for m in members} == {"keep"}
    # An expired session's streams are invisible: deleting one reports nothing there.
    await store.create("old", new_record(ttl=0.2))
    await store.open_stream("old", stream())
    await anyio.sleep(0.4)
    assert await store.delete_stream("old", "s1") is False


async def test_a_blocked_reader_wakes_when_the_stream_finishes(make_store: MakeStore) -> None:
    store = await make_store()
    other = await make_store()
    await store.create("w", new_record())
    await store.open_stream("w", stream())
    await store.append_event("w", "s1", "first")
    results: list[list[str]] = []

    async def follow() -> None:
        events = await store.wait_events("w", "s1", after_seq=1, timeout=60)
        results.append([e.data for e in events])

    with anyio.fail_after(20):  # the wait itself would last 60 s if finish were missed
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.3)
            await other.finish_stream("w", "s1")
    assert results == [[]]


async def test_a_blocked_reader_wakes_when_the_session_is_deleted(make_store: MakeStore) -> None:
    store = await make_store()
    other = await make_store()
    await store.create("gone", new_record())
    await store.open_stream("gone", stream())
    results: list[int] = []

    async def follow() -> None:
        results.append(len(await store.wait_events("gone", "s1", after_seq=0, timeout=60)))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.3)
            assert await other.delete("gone")
    assert results == [0]


async def test_a_blocked_reader_wakes_when_the_stream_is_deleted(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One block as long as the wait, so only the wake (not a re-read) can end it early.
    monkeypatch.setattr(redis_events, "BLOCK_SLICE", 60.0)
    store = await make_store()
    other = await make_store()
    await store.create("ds-wake", new_record())
    await store.open_stream("ds-wake", stream())
    results: list[int] = []

    async def follow() -> None:
        results.append(len(await store.wait_events("ds-wake", "s1", after_seq=0, timeout=60)))

    with anyio.fail_after(20):  # the wait itself would last 60 s if the deletion were missed
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.3)
            assert await other.delete_stream("ds-wake", "s1")
    assert results == [0]


@pytest.mark.redis
async def test_blocking_reads_never_take_the_command_pool(standalone_url: str) -> None:
    from redis.asyncio import BlockingConnectionPool, Redis

    # Four command connections, eight followers blocked at once: had the followers
    # used the command pool, the appends below would wait for it and time out.
    pool = BlockingConnectionPool.from_url(standalone_url, max_connections=4, timeout=5)
    client = Redis(connection_pool=pool)
    store = RedisStore(client, prefix=f"test:{uuid.uuid4().hex[:10]}:")
    try:
        await store.create("fan", new_record())
        sids = [f"s{i}" for i in range(8)]
        for sid in sids:
            await store.open_stream("fan", stream(sid))
        got: dict[str, list[str]] = {}

        async def follow(sid: str) -> None:
            events = await store.wait_events("fan", sid, after_seq=0, timeout=30)
            got[sid] = [e.data for e in events]

        with anyio.fail_after(25):
            async with anyio.create_task_group() as tg:
                for sid in sids:
                    tg.start_soon(follow, sid)
                await anyio.sleep(0.5)
                for sid in sids:
                    await store.append_event("fan", sid, f"to {sid}")
        assert got == {sid: [f"to {sid}"] for sid in sids}
    finally:
        await store.purge()
        await store.close()
        await client.aclose()


# -- construction ---------------------------------------------------------------------


@pytest.mark.redis
async def test_a_caller_owned_client_is_left_open(standalone_url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(standalone_url)
    store = RedisStore(client, prefix=f"test:{uuid.uuid4().hex[:10]}:")
    await store.open()
    await store.create("owned", new_record())
    await store.open_stream("owned", stream())
    await store.append_event("owned", "s1", "x")
    assert [e.data for e in await store.wait_events("owned", "s1", 0, timeout=1)] == ["x"]
    await store.purge()
    await store.close()
    assert await client.ping()
    await client.aclose()


@pytest.mark.redis
async def test_purge_deletes_only_its_own_prefix(make_standalone: MakeStore) -> None:
    mine = await make_standalone()
    neighbour = RedisStore.from_url(REDIS_URL, prefix=f"{mine._prefix}x*")
    try:
        await neighbour.create("n", new_record())
        await mine.create("m", new_record())
        # The neighbour's prefix extends ours with a glob character, which purge must
        # match literally; ours matches the neighbour's keys too, so it goes first.
        assert await neighbour.purge() == 2
        assert await mine.load("m") is not None
        assert await mine.purge() == 2
        assert await mine.load("m") is None
    finally:
        await neighbour.purge()
        await neighbour.close()


def test_bad_options_raise_configuration_errors() -> None:
    _need_driver()
    with pytest.raises(ConfigurationError):
        RedisStore.from_url("redis://127.0.0.1:6379/0", prefix="has{brace}")
    with pytest.raises(ConfigurationError):
        RedisStore.from_url("redis://127.0.0.1:6379/0", max_events=0)
    with pytest.raises(ConfigurationError):
        RedisStore()
    with pytest.raises(ConfigurationError):
        RedisStore.from_url("memcached://127.0.0.1")
    cluster = create_store("redis+cluster://127.0.0.1:7000")
    assert isinstance(cluster, RedisStore)
    assert cluster._cluster


# -- private servers: TLS, unix socket, outage --------------------------------------------


async def _round_trip(store: RedisStore) -> None:
    await store.open()
    await store.create("rt", new_record(v=1))
    loaded = await store.load("rt")
    assert loaded is not None
    assert loaded.state == {"v": 1}
    await store.open_stream("rt", stream())
    await store.append_event("rt", "s1", "hello")
    assert [e.data for e in await store.wait_events("rt", "s1", 0, timeout=1)] == ["hello"]


@pytest.mark.redis
async def test_rediss_url_speaks_tls(tmp_path: Path) -> None:
    _need_driver()
    cert, key = self_signed_certificate(tmp_path)
    server = RedisServer(tmp_path / "tls", tls=(cert, key))
    server.start()
    store = create_store(server.url, prefix="tls:", ssl_ca_certs=str(cert))
    try:
        assert server.url.startswith("rediss://")
        await _round_trip(store)  # type: ignore[arg-type]
    finally:
        await store.close()
        server.stop()


@pytest.mark.redis
async def test_unix_socket_url(tmp_path: Path) -> None:
    _need_driver()
    socket_dir = Path(tempfile.mkdtemp(prefix="mcpr"))  # unix socket paths must be short
    server = RedisServer(tmp_path / "unix", unixsocket=socket_dir / "r.sock")
    server.start()
    store = create_store(f"unix://{socket_dir / 'r.sock'}?db=0", prefix="unix:")
    try:
        await _round_trip(store)  # type: ignore[arg-type]
    finally:
        await store.close()
        server.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.redis
async def test_redis_down_raises_unavailable_and_recovers_in_place(tmp_path: Path) -> None:
    _need_driver()
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    server = RedisServer(tmp_path / "private")
    server.start()
    store = RedisStore.from_url(server.url, prefix="down:")
    try:
        await store.open()
        await store.create("a", new_record(n=0))
        await store.open_stream("a", stream())
        await store.append_event("a", "s1", "before")
        server.stop()  # SIGTERM; the shared 6379 server is never touched

        operations: dict[str, Callable[[], Awaitable[object]]] = {
            "open": store.open,
            "create": lambda: store.create("b", new_record()),
            "load": lambda: store.load("a"),
            "save": lambda: store.save("a", new_record()),
            "update": lambda: store.update("a", {"n": 1}),
            "touch": lambda: store.touch("a"),
            "delete": lambda: store.delete("a"),
            "list_active": store.list_active,
            "count_active": store.count_active,
            "cleanup_expired": store.cleanup_expired,
            "open_stream": lambda: store.open_stream("a", stream()),
            "load_stream": lambda: store.load_stream("a", "s1"),
            "renew_stream": lambda: store.renew_stream("a", "s1", 1.0),
            "finish_stream": lambda: store.finish_stream("a", "s1"),
            "append_event": lambda: store.append_event("a", "s1", "x"),
            "append_events": lambda: store.append_events("a", "s1", [("x", None)]),
            "write_stream": lambda: store.write_stream("a", "s1", [("x", None)], finish=True),
            "delete_stream": lambda: store.delete_stream("a", "s1"),
            "read_events": lambda: store.read_events("a", "s1"),
            "wait_events": lambda: store.wait_events("a", "s1", 1, timeout=1),
            "purge": store.purge,
        }
        for name, operation in operations.items():
            with pytest.raises(StoreUnavailableError) as caught:
                await operation()
            cause = caught.value.__cause__
            assert isinstance(cause, RedisConnectionError | RedisTimeoutError), name

        server.start()  # same port, empty (no persistence): the same store carries on
        await store.create("a", new_record(n=0))
        assert (await store.update("a", {"n": 2})).state == {"n": 2}
        await store.open_stream("a", stream())
        await store.append_event("a", "s1", "after")
        assert [e.data for e in await store.wait_events("a", "s1", 0, timeout=1)] == ["after"]
        assert await store.count_active() == 1
    finally:
        await store.close()
        server.stop()


# -- scripts and unreachable servers -------------------------------------------------


async def test_the_store_reloads_a_script_the_server_forgot(make_standalone: MakeStore) -> None:
    store = await make_standalone()
    await store.create("a", new_record(n=1))
    await store.client.execute_command("SCRIPT", "FLUSH")
    # NOSCRIPT, then EVAL (a plain load is one HMGET, no script).
    [event] = await store.write_stream("a", "s1", [("x", None)], open_as=stream(), finish=True)
    assert event.seq == 1
    assert await store.touch("a") is True  # another script, reloaded too


async def test_a_store_to_nothing_is_unavailable() -> None:
    _need_driver()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(StoreUnavailableError):
            await store.load("a")
        with pytest.raises(StoreUnavailableError):
            await store.write_stream("a", "s1", [("x", None)], open_as=stream(), finish=True)
    finally:
        await store.close()


def redis_exceptions() -> Any:
    from redis import exceptions

    return exceptions


# -- finished streams: packed, and kept for the replay window ------------------------------


async def _stream_keys(store: RedisStore, session_id: str) -> list[str]:
    base = store.key(session_id)
    return [n.partition("}")[2] for n in await _keys(store) if base in n]


async def test_a_finished_short_stream_is_one_packed_key(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create("x", new_record())
    await store.write_stream("x", "s1", [("answer", "message")], open_as=stream(), finish=True)
    assert sorted(await _stream_keys(store, "x")) == ["", ":fz:s1", ":streams"]
    state = await store.load_stream("x", "s1")
    assert state is not None
    assert (state.done, state.last_seq, state.request_id) == (True, 1, 1)
    [event] = await store.read_events("x", "s1", 0, 10)
    assert (event.seq, event.data, event.event) == (1, "answer", "message")
    assert await store.read_events("x", "s1", 1, 10) == []
    # Reopened (a takeover) it is a state hash and a Redis Stream again, events kept.
    await store.open_stream("x", stream())
    assert ":fz:s1" not in await _stream_keys(store, "x")
    await store.append_event("x", "s1", "more")
    assert [e.data for e in await store.read_events("x", "s1", 0, 10)] == ["answer", "more"]
    await store.delete_stream("x", "s1")
    assert sorted(await _stream_keys(store, "x")) == ["", ":wake"]


async def test_a_long_finished_stream_stays_a_redis_stream(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create("x", new_record())
    items: list[tuple[str, str | None]] = [(f"e{i}", None) for i in range(20)]
    await store.write_stream("x", "s1", items, open_as=stream(), finish=True)
    assert ":fz:s1" not in await _stream_keys(store, "x")
    assert len(await store.read_events("x", "s1", 0, 100)) == 20


async def test_finished_streams_expire_after_the_window_unfinished_ones_do_not(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    store.finished_stream_ttl = 5.0
    await store.create("x", new_record(ttl=600))
    await store.write_stream("x", "short", [("a", None)], open_as=stream("short"), finish=True)
    long_items: list[tuple[str, str | None]] = [(f"e{i}", None) for i in range(20)]
    await store.write_stream("x", "long", long_items, open_as=stream("long"), finish=True)
    await store.write_stream("x", "open", [("a", None)], open_as=stream("open"))
    base = store._base(store.key("x"))
    ttl_ms = {
        name: int(await store.client.pttl(f"{base}:{name}"))
        for name in ("fz:short", "st:long", "ev:long", "st:open", "ev:open")
    }
    for name in ("fz:short", "st:long", "ev:long"):
        assert 0 < ttl_ms[name] <= 5000, name
    for name in ("st:open", "ev:open"):
        assert ttl_ms[name] > 5000, name
    # A touch that renews the stream keys leaves the window alone.
    await store.touch("x", ttl=1200)
    assert 0 < int(await store.client.pttl(f"{base}:fz:short")) <= 5000
    assert 0 < int(await store.client.pttl(f"{base}:st:long")) <= 5000
    # Gone when the window ends: read as never there.
    await store.client.delete(f"{base}:fz:short")
    assert await store.load_stream("x", "short") is None
    # ... and told apart from an unknown or deleted one, so its resume gets -32002.
    assert await store.stream_expired("x", "short")
    assert not await store.stream_expired("x", "never")
    assert not await store.stream_expired("x", "open")
    await store.delete_stream("x", "long")
    assert not await store.stream_expired("x", "long")
