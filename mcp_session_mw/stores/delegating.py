"""A store in front of another: the base of the wrappers (caching, encryption).

:class:`DelegatingStore` hands every primitive to its ``backend`` unchanged, so
a wrapper overrides only what it changes: :class:`CachingStore` the session
reads and writes, :class:`EncryptedStore` what is sealed. Locks, stream
bookkeeping, the live wait and listing go straight through, and keep the
backend's atomicity (``write_stream`` stays one round trip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ..records import Page, SessionRecord, StoredEvent, StreamState
from .base import Store
from .follower import Follower


class DelegatingStore(Store):
    """Every primitive of ``backend``, unchanged; session digests are the backend's."""

    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, backend: Store) -> None:
        super().__init__(secret=backend._secret)
        self._backend = backend
        # A backend's own list is kept outside the record, so no wrapper of the
        # record (cache, sealing) is bypassed; the meta list goes through them.
        self.records_streams_natively = backend.records_streams_natively

    @property
    def backend(self) -> Store:
        return self._backend

    @property
    def follower(self) -> Follower:
        """The backend's: the live wait is the backend's own."""
        return self._backend.follower

    @property
    def finished_stream_ttl(self) -> float | None:
        return self._backend.finished_stream_ttl

    @finished_stream_ttl.setter
    def finished_stream_ttl(self, value: float | None) -> None:
        self._backend.finished_stream_ttl = value

    def now(self) -> float:
        return self._backend.now()

    async def open(self) -> None:
        await self._backend.open()

    async def close(self) -> None:
        await self._backend.close()

    # -- sessions ----------------------------------------------------------------------

    async def _insert(self, record: SessionRecord) -> None:
        await self._backend._insert(record)

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        return await self._backend._get(key, now)

    async def _put(self, record: SessionRecord) -> None:
        await self._backend._put(record)

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        return await self._backend._compare_and_swap(record, expected_version)

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        return await self._backend._touch(key, now, ttl)

    async def _delete(self, key: str) -> bool:
        return await self._backend._delete(key)

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        return await self._backend._list(limit, cursor, now)

    async def _cleanup(self, now: float) -> int:
        return await self._backend._cleanup(now)

    # -- locks -------------------------------------------------------------------------

    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        return await self._backend._try_lock(name, owner, now, ttl)

    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        return await self._backend._unlock(name, owner, now)

    # -- streams and events --------------------------------------------------------------

    async def _open_stream(self, key: str, state: StreamState) -> StreamState:
        return await self._backend._open_stream(key, state)

    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None:
        return await self._backend._load_stream(key, stream_id)

    async def _stream_expired(self, key: str, stream_id: str) -> bool:
        return await self._backend._stream_expired(key, stream_id)

    async def _list_streams(self, key: str) -> list[StreamState]:
        return await self._backend._list_streams(key)

    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None:
        await self._backend._renew_stream(key, stream_id, lease_expires)

    async def _finish_stream(self, key: str, stream_id: str) -> None:
        await self._backend._finish_stream(key, stream_id)

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        return await self._backend._write_stream(key, stream_id, items, open_as, finish, max_events)

    async def _append_event(
        self, key: str, stream_id: str, data: str, event: str | None, max_events: int | None
    ) -> StoredEvent:
        return await self._backend._append_event(key, stream_id, data, event, max_events)

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        return await self._backend._append_events(key, stream_id, items, max_events)

    async def _delete_stream(self, key: str, stream_id: str) -> bool:
        return await self._backend._delete_stream(key, stream_id)

    async def _delete_streams(self, key: str, stream_ids: list[str]) -> int:
        return await self._backend._delete_streams(key, stream_ids)

    async def _record_streams(self, key: str, stream_ids: list[str], keep: int) -> list[str]:
        return await self._backend._record_streams(key, stream_ids, keep)

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        return await self._backend._read_events(key, stream_id, after_seq, limit)

    async def wait_events(
        self,
        session_id: str,
        stream_id: str,
        after_seq: int,
        timeout: float,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """The backend's own live wait (blocking read, LISTEN or polling)."""
        return await self._backend.wait_events(session_id, stream_id, after_seq, timeout, limit)
