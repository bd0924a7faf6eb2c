"""``mcp-session-mw doctor``: findings on every backend, the ones that warn, and exit statuses."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mcp_session_mw import SessionRecord, create_store
from mcp_session_mw.cli import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from mcp_session_mw.doctor import (
    MSG_EVICTING,
    MSG_NO_PERSISTENCE,
    MSG_NO_TABLES,
    MSG_SCHEMA_OLD,
    OK,
    PROBLEM,
    WARN,
    Finding,
    clock_finding,
    diagnose,
)
from mcp_session_mw.stores import MemoryStore, Store

from .backends import ENCRYPTION_KEYS, Backend
from .redis_cluster import _binary, free_port
from .test_cli import run_cli

pytestmark = pytest.mark.anyio

EXPECTED = {
    "memory": {"store", "clock"},
    "sqlite": {"schema", "store", "clock"},
    "postgresql": {"schema", "store", "clock", "synchronous_commit", "listener"},
    "mariadb": {"schema", "store", "clock"},
    "redis": {"store", "clock", "eviction", "persistence", "cluster"},
    "redis_cluster": {"store", "clock", "eviction", "persistence", "cluster"},
    "caching": {"store", "clock", "eviction", "persistence", "cluster"},
    "encrypted": {"schema", "store", "clock"},
    "dynamodb": {"table", "store", "clock"},
}


def _by_check(report: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in report}


def _record(ttl: float = 60.0) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        client_info={"name": "doctor-test"},
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state={"n": 1},
    )


async def test_every_backend_is_healthy_and_gets_its_own_checks(
    store: Store, backend: Backend
) -> None:
    name = backend.name
    report = await diagnose(store, timeout=10)
    found = _by_check(report)
    assert EXPECTED[name] <= set(found), report
    assert all(f.status != PROBLEM for f in report), report
    assert found["store"].status == OK
    if name == "redis_cluster":
        assert "16384 of 16384 slots" in found["cluster"].message


@pytest.mark.parametrize(
    ("skew", "error", "status"),
    [(0.01, 0.001, OK), (-0.3, 0.25, OK), (1.0, 0.01, WARN), (-5.0, 0.01, PROBLEM), (3, 2, WARN)],
)
def test_clock_findings_allow_for_the_round_trip(skew: float, error: float, status: str) -> None:
    assert clock_finding(skew, error).status == status


async def test_the_keys_open_the_records_or_say_they_do_not() -> None:
    from mcp_session_mw.encryption import EncryptedStore

    backend = MemoryStore()
    sealed = EncryptedStore(backend, ENCRYPTION_KEYS[:1])
    for n in range(3):
        await sealed.create(f"session-{n}", _record())
    right = _by_check(await diagnose(backend, keys=ENCRYPTION_KEYS))["encryption"]
    assert (right.status, "open 3 of 3" in right.message) == (OK, True)
    wrong = _by_check(await diagnose(backend, keys=ENCRYPTION_KEYS[1:]))["encryption"]
    assert wrong.status == PROBLEM
    assert "3 of 3" in wrong.message
    without = _by_check(await diagnose(backend))["encryption"]
    assert without.status == WARN


async def test_an_old_schema_is_a_problem(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    made = create_store(url)
    await made.open()
    async with made.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(sa.text("UPDATE mcp_session_schema_version SET version = 0"))
    await made.close()
    store = create_store(url)
    report = await diagnose(store)
    await store.close()
    assert report == [Finding("schema", PROBLEM, MSG_SCHEMA_OLD.format(found=0, need=1))]


@pytest.fixture
def evicting_redis(tmp_path: Path) -> Iterator[str]:
    """A private redis-server that evicts when full and persists nothing."""
    server = _binary("redis-server", "redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [
            *(server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
            *("--save", "", "--appendonly", "no"),
            *("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            if run_cli("doctor", "--store", url, "--timeout", "1").code != EXIT_UNREACHABLE:
                break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_an_evicting_redis_without_persistence_warns(evicting_redis: str) -> None:
    store = create_store(evicting_redis)
    try:
        found = _by_check(await diagnose(store))
    finally:
        await store.close()
    assert found["eviction"] == Finding("eviction", WARN, MSG_EVICTING.format(policy="allkeys-lru"))
    assert found["persistence"] == Finding("persistence", WARN, MSG_NO_PERSISTENCE)


def test_cli_exit_statuses(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    fresh = run_cli("doctor", "--store", url)
    assert fresh.code == 1
    assert MSG_NO_TABLES.format(prefix="mcp_session_") in fresh.out
    assert run_cli("db", "upgrade", "--store", url).code == EXIT_OK
    healthy = run_cli("doctor", "--store", url, "--json")
    assert healthy.code == EXIT_OK, healthy.out + healthy.err
    body = healthy.json()
    assert isinstance(body, dict)
    assert [f["check"] for f in body["findings"]] == ["schema", "store", "clock"]
    assert run_cli("doctor", "--store", "redis://127.0.0.1:1/0").code == EXIT_UNREACHABLE
    assert run_cli("doctor", "--store", url, "--timeout", "soon").code == EXIT_USAGE
    assert run_cli("doctor", "--store", "nope://x").code == EXIT_USAGE


async def test_a_stalled_store_is_reported_unreachable_within_the_timeout() -> None:
    from mcp_session_mw.doctor import Unreachable

    class Stalled(MemoryStore):
        async def open(self) -> None:
            await anyio.sleep_forever()

    with pytest.raises(Unreachable):
        await diagnose(Stalled(), timeout=0.2)
