"""In-process store: for tests and single-process servers that need no restart safety."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..errors import SessionExistsError, SessionNotFoundError, StreamNotFoundError
from ..records import Page, SessionRecord, StoredEvent, StreamState
from .base import Store


@dataclass
class _Stream:
    state: StreamState
    events: list[StoredEvent] = field(default_factory=list)
    finished_at: float | None = None  # when it was marked done; the janitor's replay window


class MemoryStore(Store):
    """Keeps everything in dicts of this process. ``memory://`` selects it.

    Every operation completes without awaiting, so each is atomic with respect
    to other tasks of the event loop. Live waits are woken the moment an event
    is appended: the writers wake the follower themselves, so it has no watch.
    """

    schemes = ("memory",)
    records_streams_natively = True

    def __init__(self, *, secret: str | bytes | None = None) -> None:
        super().__init__(secret=secret)
        self._records: dict[str, SessionRecord] = {}
        self._sorted_keys: list[str] = []
        self._streams: dict[str, dict[str, _Stream]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        """Lock name -> (owner, lease end)."""
        self._noted: dict[str, dict[str, None]] = {}
        """Session key -> the streams :meth:`record_streams` noted, oldest first."""
        self._expired: dict[str, set[str]] = {}
        """Session key -> the finished streams the janitor removed (``finished_stream_ttl``)."""

    def _live(self, key: str, now: float) -> SessionRecord | None:
        record = self._records.get(key)
        if record is None or record.is_expired(now):
            return None
        return record

    def _remember(self, record: SessionRecord) -> None:
        if record.key not in self._records:
            bisect.insort(self._sorted_keys, record.key)
        self._records[record.key] = record

    async def _insert(self, record: SessionRecord) -> None:
        if self._live(record.key, self.now()) is not None:
            raise SessionExistsError("session already exists")
        self._forget(record.key)
        self._remember(record)

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        return self._live(key, now)

    async def _put(self, record: SessionRecord) -> None:
        self._remember(record)

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        current = self._live(record.key, self.now())
        if current is None or current.version != expected_version:
            return False
        self._records[record.key] = record
        return True

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        record = self._live(key, now)
        if record is None:
            return False
        new_ttl = record.ttl if ttl is None else ttl
        self._records[key] = record.evolve(last_accessed=now, expires_at=now + new_ttl, ttl=new_ttl)
        return True

    def _forget(self, key: str) -> bool:
        existed = self._records.pop(key, None) is not None
        if existed:
            index = bisect.bisect_left(self._sorted_keys, key)
            del self._sorted_keys[index]
        self._noted.pop(key, None)
        self._expired.pop(key, None)
        for stream_id in self._streams.pop(key, {}):
            self.follower.wake((key, stream_id))
        return existed

    async def _delete(self, key: str) -> bool:
        live = self._live(key, self.now()) is not None
        self._forget(key)
        return live

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        start = 0 if cursor is None else bisect.bisect_right(self._sorted_keys, cursor)
        records: list[SessionRecord] = []
        index = start
        while index < len(self._sorted_keys) and len(records) < limit:
            record = self._records[self._sorted_keys[index]]
            if not record.is_expired(now):
                records.append(record)
            index += 1
        more = index < len(self._sorted_keys)
        return Page(records, records[-1].key if more and records else None)

    async def _cleanup(self, now: float) -> int:
        expired = [key for key, record in self._records.items() if record.is_expired(now)]
        for key in expired:
            self._forget(key)
        window = self.finished_stream_ttl
        if window is not None:
            for key, streams in self._streams.items():
                for stream_id, stream in list(streams.items()):
                    if stream.finished_at is not None and stream.finished_at + window <= now:
                        del streams[stream_id]
                        self._expired.setdefault(key, set()).add(stream_id)
        return len(expired)

    async def _stream_expired(self, key: str, stream_id: str) -> bool:
        return stream_id in self._expired.get(key, ()) and self._live(key, self.now()) is not None

    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        held = self._locks.get(name)
        if held is not None and held[1] > now:
            return False
        self._locks[name] = (owner, now + ttl)
        return True

    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        held = self._locks.get(name)
        if held is None or held[0] != owner or held[1] <= now:
            return False
        del self._locks[name]
        return True

    def _stream(self, key: str, stream_id: str) -> _Stream:
        if self._live(key, self.now()) is None:
            raise SessionNotFoundError("session not found")
        stream = self._streams.get(key, {}).get(stream_id)
        if stream is None:
            raise StreamNotFoundError("stream not found")
        return stream

    async def _open_stream(self, key: str, state: StreamState) -> StreamState:
        if self._live(key, self.now()) is None:
            raise SessionNotFoundError("session not found")
        streams = self._streams.setdefault(key, {})
        existing = streams.get(state.stream_id)
        if existing is None:
            new_state = StreamState(
                stream_id=state.stream_id,
                request_id=state.request_id,
                owner=state.owner,
                lease_expires=state.lease_expires,
            )
            streams[state.stream_id] = _Stream(new_state)
            return new_state
        existing.state = StreamState(
            stream_id=state.stream_id,
            request_id=state.request_id,
            owner=state.owner,
            lease_expires=state.lease_expires,
            first_seq=existing.state.first_seq,
            last_seq=existing.state.last_seq,
            done=False,
        )
        existing.finished_at = None
        self.follower.wake((key, state.stream_id))
        return existing.state

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        streams = self._streams.get(key)
        if open_as is None or streams is None or stream_id in streams:
            return await super()._write_stream(key, stream_id, items, open_as, finish, max_events)
        # A new stream (most often a whole response): its state is made once,
        # and nobody can be waiting on it yet.
        if self._live(key, self.now()) is None:
            raise SessionNotFoundError("session not found")
        stored = [
            StoredEvent(stream_id, seq, data, event) for seq, (data, event) in enumerate(items, 1)
        ]
        kept = stored if max_events is None else stored[-max_events:]
        state = StreamState(
            stream_id=stream_id,
            request_id=open_as.request_id,
            owner=open_as.owner,
            lease_expires=open_as.lease_expires,
            first_seq=kept[0].seq if kept else 1,
            last_seq=len(stored),
            done=finish,
        )
        streams[stream_id] = _Stream(state, kept, finished_at=self.now() if finish else None)
        return stored

    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None:
        if self._live(key, self.now()) is None:
            return None
        stream = self._streams.get(key, {}).get(stream_id)
        return None if stream is None else stream.state

    async def _list_streams(self, key: str) -> list[StreamState]:
        if self._live(key, self.now()) is None:
            return []
        return [stream.state for stream in self._streams.get(key, {}).values()]

    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None:
        stream = self._stream(key, stream_id)
        stream.state = replace(stream.state, lease_expires=lease_expires)

    async def _finish_stream(self, key: str, stream_id: str) -> None:
        stream = self._stream(key, stream_id)
        stream.state = replace(stream.state, done=True)
        stream.finished_at = self.now()
        self.follower.wake((key, stream_id))

    async def _append_event(
        self, key: str, stream_id: str, data: str, event: str | None, max_events: int | None
    ) -> StoredEvent:
        [stored] = await self._append_events(key, stream_id, ((data, event),), max_events)
        return stored

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        """The whole batch at once: one state update and one wake-up, not one per event."""
        stream = self._stream(key, stream_id)  # refuses before storing anything
        start = stream.state.last_seq + 1
        stored = [
            StoredEvent(stream_id, seq, data, event)
            for seq, (data, event) in enumerate(items, start)
        ]
        events = stream.events
        events.extend(stored)
        first_seq = stream.state.first_seq
        if max_events is not None and len(events) > max_events:
            del events[: len(events) - max_events]
            first_seq = events[0].seq
        stream.state = replace(stream.state, last_seq=start + len(stored) - 1, first_seq=first_seq)
        self.follower.wake((key, stream_id))
        return stored

    async def _delete_stream(self, key: str, stream_id: str) -> bool:
        stream = self._streams.get(key, {}).pop(stream_id, None)
        if stream is None:
            return False
        self.follower.wake((key, stream_id))
        return True

    async def _record_streams(self, key: str, stream_ids: list[str], keep: int) -> list[str]:
        if self._live(key, self.now()) is None:
            raise SessionNotFoundError("session not found")
        noted = self._noted.setdefault(key, {})
        noted.update(dict.fromkeys(stream_ids))
        dropped = list(noted)[: len(noted) - keep] if len(noted) > keep else []
        streams = self._streams.get(key, {})
        for stream_id in dropped:
            del noted[stream_id]
            stream = streams.pop(stream_id, None)
            if stream is not None:
                self.follower.wake((key, stream_id))
        return dropped

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        if self._live(key, self.now()) is None:
            return []
        stream = self._streams.get(key, {}).get(stream_id)
        if stream is None:
            return []
        events = stream.events
        # seq values are consecutive, so the position of after_seq is arithmetic.
        start = max(0, after_seq - (events[0].seq - 1)) if events else 0
        return events[start : start + limit]

    def _follow_watch(self) -> None:
        """None: the writers above wake the follower; there is nothing to watch."""
        return None

    async def close(self) -> None:
        await self.follower.close()
