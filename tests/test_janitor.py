"""The cleanup janitor: expired sessions leave the store, one instance sweeping per interval."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import pytest
from starlette.applications import Starlette

from mcp_session_mw import ConfigurationError, MemoryStore, SessionMiddleware, SessionRecord
from mcp_session_mw.errors import StoreUnavailableError
from mcp_session_mw.janitor import CLEANUP_LOCK, LEASE_SHARE, MSG_SWEEP_FAILED, Janitor
from mcp_session_mw.stores import Store

from .asgi_lifespan import lifespan
from .conftest import StoreFactory

pytestmark = pytest.mark.anyio


def record(ttl: float) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-06-18",
        requested_protocol_version="2025-06-18",
        client_info={"name": "janitor-test", "version": "1"},
        capabilities={},
        principal=None,
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
    )


def janitor_of(middleware: SessionMiddleware) -> Janitor:
    assert middleware.janitor is not None
    return middleware.janitor


async def test_two_instances_sweep_once_per_interval(store_factory: StoreFactory) -> None:
    """Turn by turn: whoever sweeps holds the lease; the other skips until it runs out."""
    first_store, second_store = await store_factory(), await store_factory()
    interval = 0.6
    first = janitor_of(SessionMiddleware(Starlette(), store=first_store, cleanup_interval=interval))
    second = janitor_of(
        SessionMiddleware(Starlette(), store=second_store, cleanup_interval=interval)
    )
    for n in range(3):
        await first_store.create(f"expired-{n}", record(ttl=0.2))
    await first_store.create("live", record(ttl=60))
    await anyio.sleep(0.3)

    assert await first.turn() == 3
    assert await second.turn() is None  # within the same interval: the lease runs
    assert await first.turn() is None
    assert await first_store.cleanup_expired() == 0  # nothing expired was left behind
    assert await second_store.load("live") is not None
    assert (first.sweeps, first.removed, second.sweeps) == (1, 3, 0)

    await second_store.create("expired-late", record(ttl=0.1))
    await anyio.sleep(interval * LEASE_SHARE + 0.1)
    assert await second.turn() == 1  # the lease ran out: the next turn, anyone's, sweeps
    assert await first.turn() is None
    assert (first.sweeps, second.sweeps, second.removed) == (1, 1, 1)


async def test_janitor_runs_in_the_lifespan_of_each_instance(tmp_path: Path) -> None:
    """Two instances on one SQLite file, background tasks for real: expired sessions go,
    and the sweeps of both together stay a lease apart."""
    pytest.importorskip("aiosqlite")
    url = f"sqlite+aiosqlite:///{tmp_path}/janitor.db"
    interval = 0.3
    instances = [SessionMiddleware(Starlette(), store=url, cleanup_interval=interval)]
    instances.append(SessionMiddleware(Starlette(), store=url, cleanup_interval=interval))
    store = instances[0].store
    await store.open()
    for n in range(5):
        await store.create(f"expired-{n}", record(ttl=0.1))
    await store.create("live", record(ttl=60))
    started = time.monotonic()
    async with lifespan(instances[0]), lifespan(instances[1]):
        await anyio.sleep(0.2)
        await store.create("expires-while-running", record(ttl=0.1))
        await anyio.sleep(2.0)
    elapsed = time.monotonic() - started
    janitors = [janitor_of(m) for m in instances]
    sweeps = sum(j.sweeps for j in janitors)
    assert sum(j.removed for j in janitors) == 6
    assert 1 <= sweeps <= elapsed / (interval * LEASE_SHARE) + 1
    await store.open()  # the lifespan closed it
    try:
        assert await store.cleanup_expired() == 0
        assert await store.load("live") is not None
    finally:
        await store.close()


async def test_janitor_logs_store_failures_and_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FlakyStore(MemoryStore):
        failures = 2

        async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
            if self.failures:
                self.failures -= 1
                raise StoreUnavailableError("store is down")
            return await super()._try_lock(name, owner, now, ttl)

    store = FlakyStore()
    await store.create("expired", record(ttl=0.05))
    janitor = Janitor(store, 0.1)
    caplog.set_level(logging.WARNING, logger="mcp_session_mw")
    with anyio.move_on_after(1.5):
        await janitor.run()
    assert store.failures == 0
    assert janitor.removed == 1
    failed = [r for r in caplog.records if r.msg == MSG_SWEEP_FAILED]
    assert len(failed) == 2


async def test_cleanup_interval_none_disables_the_janitor() -> None:
    assert SessionMiddleware(Starlette(), store="memory://", cleanup_interval=None).janitor is None
    default = SessionMiddleware(Starlette(), store="memory://")
    assert janitor_of(default).interval == 300.0
    for bad in (0, -5.0):
        with pytest.raises(ConfigurationError, match="cleanup_interval"):
            SessionMiddleware(Starlette(), store="memory://", cleanup_interval=bad)


async def test_the_lock_is_shared_with_store_users(store: Store) -> None:
    """An operator's job holding the cleanup lock keeps every janitor off."""
    assert await store.try_lock(CLEANUP_LOCK, 30)
    janitor = Janitor(store, 0.5)
    assert await janitor.turn() is None
    assert await store.unlock(CLEANUP_LOCK)
    assert await janitor.turn() == 0
