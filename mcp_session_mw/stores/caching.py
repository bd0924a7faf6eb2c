"""Two-tier store: a short-lived local cache in front of a shared backend.

A hot MCP session is loaded on every request; with a remote backend (Redis,
PostgreSQL) that is a round trip each time. ``CachingStore`` answers loads from
a local cache for up to ``cache_ttl`` seconds and sends every write to the
backend.

Staleness bound, exactly:

* A cached copy is served for at most ``cache_ttl`` seconds after it was read
  from, or written through to, the backend; touches do not extend that. So a
  load may miss changes made by *other* processes (other CachingStores, other
  clients of the backend) for at most ``cache_ttl`` seconds, and only those:
  every write made through this store (create, save, update, touch, delete)
  reaches the backend first and then replaces or drops the cached copy, so
  this process always reads its own writes.
* Hence a session deleted, or cut short, by another process is served for at
  most ``cache_ttl`` seconds. A session whose cached ``expires_at`` has passed
  is never served from the cache (the backend is asked, since another process
  may have touched it).
* A load that misses, or finds the session absent, always asks the backend:
  absence is never cached.
* ``update`` and ``update_meta`` run on the backend (atomic there, no lost
  updates across processes) and then refresh the cache with the result.
* Listing, cleanup, locks and everything about events (streams, appends, reads, live
  waits) go straight to the backend.

The cache only holds sessions this process used within the last ``cache_ttl``
seconds; older entries are dropped as new ones come in.

Several CachingStores may share one cache store (say, one per backend
connection in a process): they then share its bookkeeping too and behave as one
process, each reading the others' writes. Give them the same ``cache_ttl``.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigurationError, SessionNotFoundError
from ..records import SessionRecord
from .base import DEFAULT_UPDATE_RETRIES, StateChange, Store
from .delegating import DelegatingStore

DEFAULT_CACHE_TTL = 1.0
BAD_CACHE_TTL = "cache_ttl must be a number of seconds >= 0"


@dataclass(frozen=True)
class _Entry:
    deadline: float
    """Monotonic time after which the cached copy must not be served."""
    seq: int
    """When this process last wrote or invalidated the key (a local write counter)."""
    cached: bool
    """False for a tombstone: the key was deleted or found gone; nothing is cached."""


class _Table:
    """Freshness of every cached key, in deadline order, plus a local write counter."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.seq = 0


_tables: weakref.WeakKeyDictionary[Store, _Table] = weakref.WeakKeyDictionary()


class CachingStore(DelegatingStore):
    """Reads from ``cache`` for up to ``cache_ttl`` seconds; writes go to ``backend`` first.

    ``cache`` is usually a fresh :class:`~mcp_session_mw.stores.memory.MemoryStore`
    private to this process; ``backend`` is the shared store. Both are opened and
    closed with this store. Session digests are the backend's (same secret), so
    the two tiers agree on keys. ``clock`` is the monotonic clock behind
    ``cache_ttl`` (tests pass their own). See the module docstring for the exact
    staleness bound.
    """

    def __init__(
        self,
        cache: Store,
        backend: Store,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(cache_ttl, bool) or not isinstance(cache_ttl, int | float) or cache_ttl < 0:
            raise ConfigurationError(BAD_CACHE_TTL)
        super().__init__(backend)
        self._cache = cache
        self._cache_ttl = float(cache_ttl)
        self._monotonic = clock
        table = _tables.get(cache)
        if table is None:
            table = _tables[cache] = _Table()
        self._table = table
        self._entries = table.entries

    async def open(self) -> None:
        await self._cache.open()
        await self._backend.open()

    async def close(self) -> None:
        try:
            await self._backend.close()
        finally:
            await self._cache.close()

    # -- the cache tier ----------------------------------------------------------------

    def _set_entry(self, key: str, *, cached: bool) -> None:
        self._table.seq += 1
        self._entries.pop(key, None)  # re-insert at the end: entries stay in deadline order
        self._entries[key] = _Entry(self._monotonic() + self._cache_ttl, self._table.seq, cached)

    async def _remember(self, record: SessionRecord) -> None:
        """Cache a record this process just wrote to the backend."""
        await self._cache._put(record)
        self._set_entry(record.key, cached=True)
        await self._prune()

    async def _invalidate(self, key: str) -> None:
        """Drop the cached copy and leave a tombstone so an older in-flight read can't refill it."""
        self._set_entry(key, cached=False)
        await self._cache._delete(key)
        await self._prune()

    async def _prune(self) -> None:
        now = self._monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.deadline > now:
                return
            del self._entries[key]
            if entry.cached:
                await self._cache._delete(key)

    # -- sessions ------------------------------------------------------------------

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        entry = self._entries.get(key)
        if entry is not None and entry.cached and entry.deadline > self._monotonic():
            record = await self._cache._get(key, now)
            if record is not None:
                return record
        started = self._table.seq
        record = await self._backend._get(key, now)
        latest = self._entries.get(key)
        if latest is not None and latest.seq > started:
            # This process wrote the key while we were reading: our copy may be older.
            return record
        if record is None:
            if latest is not None:
                self._entries.pop(key, None)
                if latest.cached:
                    await self._cache._delete(key)
            return None
        await self._cache._put(record)
        self._entries.pop(key, None)
        self._entries[key] = _Entry(self._monotonic() + self._cache_ttl, self._table.seq, True)
        await self._prune()
        return record

    async def _insert(self, record: SessionRecord) -> None:
        await self._backend._insert(record)
        await self._remember(record)

    async def _put(self, record: SessionRecord) -> None:
        await self._backend._put(record)
        await self._remember(record)

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        swapped = await self._backend._compare_and_swap(record, expected_version)
        if swapped:
            await self._invalidate(record.key)  # the backend may keep fields we did not send
        return swapped

    async def save(self, session_id: str, record: SessionRecord) -> SessionRecord:
        """Last writer wins, judged by the backend (never against a cached version)."""
        try:
            stored = await self._backend.save(session_id, record)
        except SessionNotFoundError:
            await self._invalidate(self.key(session_id))
            raise
        await self._remember(stored)
        return stored

    async def update(
        self,
        session_id: str,
        change: StateChange,
        *,
        retries: int = DEFAULT_UPDATE_RETRIES,
    ) -> SessionRecord:
        """Atomic on the backend, then the cache holds the result."""
        try:
            stored = await self._backend.update(session_id, change, retries=retries)
        except SessionNotFoundError:
            await self._invalidate(self.key(session_id))
            raise
        await self._remember(stored)
        return stored

    async def update_meta(self, session_id: str, change: StateChange) -> SessionRecord:
        try:
            stored = await self._backend.update_meta(session_id, change)
        except SessionNotFoundError:
            await self._invalidate(self.key(session_id))
            raise
        await self._remember(stored)
        return stored

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        touched = await self._backend._touch(key, now, ttl)
        entry = self._entries.get(key)
        if not touched:
            if entry is not None:
                await self._invalidate(key)
            return False
        cached = await self._cache._get(key, now) if entry is not None and entry.cached else None
        if cached is None:
            if entry is not None:
                await self._invalidate(key)
            return True
        new_ttl = cached.ttl if ttl is None else ttl
        # The backend computed the same values from the same ``now``. The deadline is
        # kept: a touch says nothing about state other processes changed meanwhile.
        await self._cache._put(
            cached.evolve(last_accessed=now, expires_at=now + new_ttl, ttl=new_ttl)
        )
        self._table.seq += 1
        if key in self._entries:
            self._entries[key] = _Entry(self._entries[key].deadline, self._table.seq, True)
        return True

    async def _delete(self, key: str) -> bool:
        try:
            return await self._backend._delete(key)
        finally:
            await self._invalidate(key)

    async def _cleanup(self, now: float) -> int:
        await self._prune()
        return await self._backend._cleanup(now)
