"""The one table of store backends the contract suite runs over.

Each entry builds a store in a namespace of its own (a table prefix, a key
prefix) so that concurrent runs never see each other, can build further stores
on the *same* namespace with their own connections, and removes everything it
made afterwards.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from mcp_session_mw.stores import MemoryStore, Store, create_store

from .services import MARIADB_URL, POSTGRES_URL, REDIS_URL, need_service, unavailable


@dataclass(frozen=True)
class Backend:
    """How to build, share and wipe one kind of store in a test."""

    name: str
    build: Callable[[str, Path], Awaitable[Store]]
    """(namespace, tmp_path) -> an opened store; call again for another connection."""
    destroy: Callable[[Store], Awaitable[None]]
    """Remove everything the namespace holds (tables, keys)."""
    service: str | None = None
    module: str | None = None
    shared_instance: bool = False
    """True when every build of a namespace returns the same object (memory)."""

    def check_available(self) -> None:
        if self.module is not None and importlib.util.find_spec(self.module) is None:
            unavailable(f"the {self.module} driver is not installed")
        if self.service is not None:
            need_service(self.service)


_memory: dict[str, MemoryStore] = {}


async def _build_memory(namespace: str, tmp_path: Path) -> Store:
    return _memory.setdefault(namespace, MemoryStore())


async def _destroy_memory(store: Store) -> None:
    for name, candidate in list(_memory.items()):
        if candidate is store:
            del _memory[name]


def _sql(url_for: Callable[[Path], str]) -> Callable[[str, Path], Awaitable[Store]]:
    async def build(namespace: str, tmp_path: Path) -> Store:
        store = create_store(url_for(tmp_path), table_prefix=f"t{namespace}_")
        await store.open()
        return store

    return build


async def _destroy_sql(store: Store) -> None:
    await store.drop_schema()  # type: ignore[attr-defined]
    await store.close()


async def _build_redis(namespace: str, tmp_path: Path) -> Store:
    store = create_store(REDIS_URL, prefix=f"test:{namespace}:")
    await store.open()
    return store


async def _destroy_redis(store: Store) -> None:
    await store.purge()  # type: ignore[attr-defined]
    await store.close()


async def _build_redis_cluster(namespace: str, tmp_path: Path) -> Store:
    from .redis_cluster import cluster_url

    store = create_store(cluster_url(), prefix=f"test:{namespace}:")
    await store.open()
    return store


async def _build_dynamodb(namespace: str, tmp_path: Path) -> Store:
    # A table per namespace on the private moto server; every build is another client.
    from .dynamodb_server import store_url

    store = create_store(store_url(f"mcp-test-{namespace}"))
    await store.open()
    return store


async def _destroy_dynamodb(store: Store) -> None:
    await store.drop_table()  # type: ignore[attr-defined]
    await store.close()


_caches: dict[str, MemoryStore] = {}


async def _build_caching(namespace: str, tmp_path: Path) -> Store:
    # One cache per namespace: the stores of a test are one process's connections.
    from mcp_session_mw.stores.caching import CachingStore

    cache = _caches.setdefault(namespace, MemoryStore())
    store = CachingStore(cache, await _build_redis(namespace, tmp_path))
    await store.open()
    return store


async def _destroy_caching(store: Store) -> None:
    await _destroy_redis(store.backend)  # type: ignore[attr-defined]
    await store.close()
    for name, cache in list(_caches.items()):
        if cache is store._cache:  # type: ignore[attr-defined]
            del _caches[name]


# Fixed test keys: the second one only opens, as after a rotation.
ENCRYPTION_KEYS = [
    "6Y0WlR0e1wq0m1t6o7fCwGqvJ9yOq2Ck1d1m0Kp6VfE=",
    "qQy6b1y1Zr6dR7uJq3mJw7oK2bqQ9vTt8b5W2m6bB0s=",
]


async def _build_encrypted(namespace: str, tmp_path: Path) -> Store:
    # Every build is another connection over one SQLite file, as for plain SQLite.
    from mcp_session_mw.encryption import EncryptedStore

    backend = await _sql(lambda tmp: f"sqlite+aiosqlite:///{tmp / 'sessions.db'}")(
        namespace, tmp_path
    )
    return EncryptedStore(backend, ENCRYPTION_KEYS)


async def _destroy_encrypted(store: Store) -> None:
    await _destroy_sql(store.backend)  # type: ignore[attr-defined]


BACKENDS: list[Backend] = [
    Backend("memory", _build_memory, _destroy_memory, shared_instance=True),
    Backend(
        "sqlite",
        _sql(lambda tmp: f"sqlite+aiosqlite:///{tmp / 'sessions.db'}"),
        _destroy_sql,
        module="aiosqlite",
    ),
    Backend(
        "postgresql",
        _sql(lambda tmp: POSTGRES_URL),
        _destroy_sql,
        service="postgresql",
        module="asyncpg",
    ),
    Backend(
        "mariadb",
        _sql(lambda tmp: MARIADB_URL),
        _destroy_sql,
        service="mariadb",
        module="asyncmy",
    ),
    Backend("redis", _build_redis, _destroy_redis, service="redis", module="redis"),
    # Starts a private three-node Cluster on first use; skipped without redis-server.
    Backend("redis_cluster", _build_redis_cluster, _destroy_redis, module="redis"),
    Backend("caching", _build_caching, _destroy_caching, service="redis", module="redis"),
    Backend("encrypted", _build_encrypted, _destroy_encrypted, module="cryptography"),
    # Starts a private moto_server on first use.
    Backend("dynamodb", _build_dynamodb, _destroy_dynamodb, module="aiobotocore"),
]
