"""The caching store's staleness bound, checked from two "processes".

Each test builds two CachingStores, each with a cache of its own, over one
backend: a shared MemoryStore (always) and the Redis store (when Redis is up).
The cache clock is a manual one, so "cache_ttl has passed" is a step the test
takes, not a sleep.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from mcp_session_mw import ConfigurationError, SessionRecord, StreamState
from mcp_session_mw.stores import MemoryStore, Store, create_store
from mcp_session_mw.stores.caching import CachingStore

from ..services import REDIS_URL, need_service

pytestmark = pytest.mark.anyio

CACHE_TTL = 2.0


class ManualClock:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


def new_record(ttl: float = 60.0, **state: Any) -> SessionRecord:
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


class Processes:
    """Two caching stores ("process A" and "process B") over one backend."""

    def __init__(self, a: CachingStore, b: CachingStore, clock: ManualClock) -> None:
        self.a, self.b, self.clock = a, b, clock


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.memory),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def procs(request: pytest.FixtureRequest) -> AsyncIterator[Processes]:
    clock = ManualClock()
    backends: list[Store]
    if request.param == "memory":
        shared = MemoryStore()
        backends = [shared, shared]
    else:
        need_service("redis")
        prefix = f"test:{uuid.uuid4().hex[:10]}:"
        backends = [create_store(REDIS_URL, prefix=prefix) for _ in range(2)]
    a, b = (CachingStore(MemoryStore(), s, cache_ttl=CACHE_TTL, clock=clock) for s in backends)
    await a.open()
    await b.open()
    yield Processes(a, b, clock)
    if request.param == "redis":
        await backends[0].purge()  # type: ignore[attr-defined]
    await a.close()
    await b.close()


async def test_own_writes_are_read_at_once(procs: Processes) -> None:
    a = procs.a
    await a.create("s", new_record(n=0))
    assert (await a.update("s", {"n": 1})).state == {"n": 1}
    loaded = await a.load("s")
    assert loaded is not None
    assert loaded.state == {"n": 1}
    await a.save("s", loaded.evolve(state={"n": 2}))
    assert await a.touch("s", ttl=500)
    loaded = await a.load("s")
    assert loaded is not None
    assert loaded.state == {"n": 2}
    assert loaded.ttl == 500
    assert await a.delete("s")
    assert await a.load("s") is None


async def test_changes_from_another_process_show_after_cache_ttl(procs: Processes) -> None:
    a, b = procs.a, procs.b
    await a.create("s", new_record(n=0))
    assert (await a.load("s")).state == {"n": 0}  # type: ignore[union-attr]
    await b.update("s", {"n": 1})
    procs.clock.advance(CACHE_TTL * 0.9)
    served = await a.load("s")
    assert served is not None
    assert served.state in ({"n": 0}, {"n": 1})  # within the bound either is allowed
    procs.clock.advance(CACHE_TTL * 0.1)
    fresh = await a.load("s")
    assert fresh is not None
    assert fresh.state == {"n": 1}, "served a copy older than cache_ttl"


async def test_the_cache_does_serve_within_cache_ttl(procs: Processes) -> None:
    # The point of the cache: a process's repeated loads skip the backend.
    a, b = procs.a, procs.b
    await a.create("hot", new_record(n=0))
    await b.update("hot", {"n": 1})
    procs.clock.advance(CACHE_TTL / 2)
    cached = await a.load("hot")
    assert cached is not None
    assert cached.state == {"n": 0}


async def test_touches_do_not_extend_staleness(procs: Processes) -> None:
    a, b = procs.a, procs.b
    await a.create("s", new_record(n=0))
    await a.load("s")
    await b.update("s", {"n": 1})
    for _ in range(5):
        procs.clock.advance(CACHE_TTL * 0.4)
        assert await a.touch("s")
    loaded = await a.load("s")
    assert loaded is not None
    assert loaded.state == {"n": 1}


async def test_a_session_deleted_elsewhere_goes_within_cache_ttl(procs: Processes) -> None:
    a, b = procs.a, procs.b
    await a.create("s", new_record())
    await a.load("s")
    assert await b.delete("s")
    procs.clock.advance(CACHE_TTL)
    assert await a.load("s") is None


async def test_an_expired_copy_is_never_served(procs: Processes) -> None:
    a, b = procs.a, procs.b
    await a.create("short", new_record(ttl=0.3))
    await a.create("kept-alive", new_record(ttl=0.3))
    assert await b.touch("kept-alive", ttl=60)
    await anyio.sleep(0.5)  # wall clock: session expiry; the cache clock stands still
    assert await a.load("short") is None
    alive = await a.load("kept-alive")  # the cached copy looks expired: ask the backend
    assert alive is not None
    assert alive.ttl == 60


async def test_updates_are_atomic_across_processes(procs: Processes) -> None:
    a, b = procs.a, procs.b
    await a.create("c", new_record(n=0))

    async def bump(store: CachingStore) -> None:
        await store.update("c", lambda s: {**s, "n": s["n"] + 1})

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(bump, a if i % 2 else b)
    final = await a.backend.load("c")
    assert final is not None
    assert final.state["n"] == 40


async def test_events_go_straight_to_the_backend(procs: Processes) -> None:
    a, b = procs.a, procs.b
    await a.create("ev", new_record())
    state = StreamState(stream_id="s1", request_id=1, owner="a", lease_expires=time.time() + 30)
    await a.open_stream("ev", state)
    await a.append_event("ev", "s1", "one")
    assert [e.data for e in await b.read_events("ev", "s1")] == ["one"]
    got: list[str] = []

    async def follow() -> None:
        got.extend(e.data for e in await b.wait_events("ev", "s1", after_seq=1, timeout=10))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.2)
            await a.append_event("ev", "s1", "two")
    assert got == ["two"]


async def test_cache_ttl_zero_never_serves_from_the_cache(procs: Processes) -> None:
    a = CachingStore(MemoryStore(), procs.a.backend, cache_ttl=0, clock=procs.clock)
    await a.create("z", new_record(n=0))
    await procs.b.update("z", {"n": 1})
    assert (await a.load("z")).state == {"n": 1}  # type: ignore[union-attr]


async def test_entries_older_than_cache_ttl_are_dropped() -> None:
    clock = ManualClock()
    cache = MemoryStore()
    store = CachingStore(cache, MemoryStore(), cache_ttl=CACHE_TTL, clock=clock)
    for i in range(10):
        await store.create(f"s{i}", new_record())
    assert len(cache._records) == 10
    clock.advance(CACHE_TTL)
    await store.load("s0")
    assert len(cache._records) == 1


class PausingMemoryStore(MemoryStore):
    """A backend whose reads can be held after they read, like a slow network reply."""

    gate: anyio.Event | None = None

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        record = await super()._get(key, now)
        if self.gate is not None:
            await self.gate.wait()
        return record


async def test_a_read_that_raced_a_local_write_does_not_cache_the_older_copy() -> None:
    clock = ManualClock()
    backend = PausingMemoryStore()
    store = CachingStore(MemoryStore(), backend, cache_ttl=CACHE_TTL, clock=clock)
    await store.create("r", new_record(n=0))
    clock.advance(CACHE_TTL)  # the next load misses the cache
    results: list[SessionRecord | None] = []

    async def slow_load() -> None:
        results.append(await store.load("r"))

    backend.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_load)
        await anyio.sleep(0.05)  # the load has read version 1 and waits
        gate, backend.gate = backend.gate, None
        await store.update("r", {"n": 1})
        gate.set()
    assert results[0] is not None
    assert results[0].state == {"n": 0}
    loaded = await store.load("r")
    assert loaded is not None
    assert loaded.state == {"n": 1}, "the older in-flight read overwrote the newer write"


def test_negative_cache_ttl_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        CachingStore(MemoryStore(), MemoryStore(), cache_ttl=-1)
