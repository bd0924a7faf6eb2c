"""The shared store of one run: PostgreSQL or Redis, in a namespace of the run's own.

Each run gets a fresh table prefix (PostgreSQL) or key prefix (Redis), so it
never sees another run's sessions, and :meth:`StoreSpec.wipe` removes
everything it made. The instances reach the store through the relay (see
:mod:`cluster.relay`); the harness itself checks what was stored over a direct
connection, which works during a simulated outage too.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from mcp_session_mw import Store, create_store

from .procs import HOST, ClusterError

STORES = ("postgresql", "redis")


@dataclass(frozen=True)
class StoreSpec:
    name: str
    url: str
    """The direct URL of the shared server."""
    options: dict[str, str]

    @property
    def target(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        default = 5432 if self.name == "postgresql" else 6379
        return parts.hostname or HOST, parts.port or default

    def relayed_url(self, port: int) -> str:
        """The same URL with the server's address replaced by the relay's."""
        parts = urlsplit(self.url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{HOST}:{port}"))

    def option_args(self) -> list[str]:
        return [f"--store-option={name}={value}" for name, value in self.options.items()]

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Store]:
        store = create_store(self.url, **self.options)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    async def wipe(self) -> None:
        """Drop the run's tables (PostgreSQL) or keys (Redis)."""
        async with self.connect() as store:
            if self.name == "postgresql":
                await store.drop_schema()  # type: ignore[attr-defined]
            else:
                await store.purge()  # type: ignore[attr-defined]


def store_spec(name: str, url: str) -> StoreSpec:
    """A spec with a fresh namespace for the store ``name`` at ``url``."""
    namespace = uuid.uuid4().hex[:10]
    if name == "postgresql":
        return StoreSpec(name, url, {"table_prefix": f"cluster{namespace}_"})
    if name == "redis":
        return StoreSpec(name, url, {"prefix": f"cluster:{namespace}:"})
    raise ClusterError(f"unknown store {name!r}; expected one of {', '.join(STORES)}")
