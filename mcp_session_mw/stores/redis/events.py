"""The event log in Redis: stream states, events as Redis Streams, wake-ups, the live wait.

Per stream, ``<prefix>{<digest>}:st:<stream>`` is its state hash and
``...:ev:<stream>`` its events (entry id ``0-<seq>``); ``...:wake`` is poked when
a stream is (re)opened, finished or deleted. The same scripts publish what moved
on ``<prefix>follow``; the store's one follower subscribes to it on a dedicated
connection (:mod:`.follow`) and wakes the live waits of this process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ...errors import SessionNotFoundError, StreamNotFoundError
from ...records import StoredEvent, StreamState
from ..base import stored_batch
from .connection import WAKE_AFTER_DELETE_MS, RedisBase
from .follow import RedisWatch
from .scripts import (
    DELETE_STREAM_SCRIPT,
    DELETE_STREAMS_SCRIPT,
    LOAD_STREAM_SCRIPT,
    OPEN_STREAM_SCRIPT,
    READ_SCRIPT,
    RECORD_STREAMS_SCRIPT,
    SET_STREAM_FIELD_SCRIPT,
    WRITE_SCRIPT,
)
from .values import num, request_id_json, text

SESSION_NOT_FOUND = "session not found"
STREAM_NOT_FOUND = "stream not found"
BLOCK_SLICE = 5.0
"""Longest single XREAD BLOCK; longer waits are several blocks."""
_UNCAPPED = 2**31 - 1


def _raise_missing(status: int) -> None:
    """What a stream script's -1 (no live session) or -2 (no such stream) means."""
    if status == -1:
        raise SessionNotFoundError(SESSION_NOT_FOUND)
    raise StreamNotFoundError(STREAM_NOT_FOUND)


class RedisEventLog(RedisBase):
    """The stream primitives of the store contract and :meth:`wait_events`."""

    async def _open_stream(self, key: str, state: StreamState) -> StreamState:
        args = [
            num(self.now()),
            state.stream_id,
            request_id_json(state),
            state.owner,
            num(state.lease_expires),
        ]
        with self._guard:
            result = await OPEN_STREAM_SCRIPT(self._hot, [self._base(key)], args)
        if result == -1:
            raise SessionNotFoundError(SESSION_NOT_FOUND)
        first, last = result
        return StreamState(
            stream_id=state.stream_id,
            request_id=state.request_id,
            owner=state.owner,
            lease_expires=state.lease_expires,
            first_seq=int(first),
            last_seq=int(last),
            done=False,
        )

    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None:
        with self._guard:
            row = await LOAD_STREAM_SCRIPT(
                self._hot, [self._base(key)], [num(self.now()), stream_id]
            )
        if row is None:
            return None
        request_id, owner, lease, first, last, done = row
        return StreamState(
            stream_id=stream_id,
            request_id=json.loads(request_id),
            owner=text(owner),
            lease_expires=float(lease),
            first_seq=int(first),
            last_seq=int(last),
            done=text(done) == "1",
        )

    def _window_ms(self) -> str:
        """The replay window of finished streams in ms, as the scripts take it."""
        ttl = self.finished_stream_ttl
        return "" if ttl is None else str(max(1, math.ceil(ttl * 1000)))

    async def _set_stream_field(self, key: str, stream_id: str, field: str, value: str) -> None:
        wake = "1" if field == "z" else "0"
        args = [num(self.now()), stream_id, field, value, wake, self._window_ms()]
        with self._guard:
            result = int(await SET_STREAM_FIELD_SCRIPT(self._hot, [self._base(key)], args))
        if result < 0:
            _raise_missing(result)

    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None:
        await self._set_stream_field(key, stream_id, "l", num(lease_expires))

    async def _finish_stream(self, key: str, stream_id: str) -> None:
        await self._set_stream_field(key, stream_id, "z", "1")

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
        """One script call for the whole batch: one round trip, atomic, consecutive seqs."""
        if not items:
            return []
        return await self._write_stream(key, stream_id, items, None, False, max_events)

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        """Open, append and finish in one script call: one round trip, atomic."""
        if max_events is None:
            max_events = self._max_events
        args: list[str | bytes] = [
            num(self.now()),
            stream_id,
            "" if max_events is None else str(max(0, max_events)),
        ]
        if open_as is None:
            args += ["0", "", "", "", "1" if finish else "0"]
        else:
            args += [
                "1",
                request_id_json(open_as),
                open_as.owner,
                num(open_as.lease_expires),
                "1" if finish else "0",
            ]
        encoded = [data.encode() for data, _ in items]
        names = [None if event is None else event.encode() for _, event in items]
        args += [
            b"".join(encoded),
            " ".join(map(str, map(len, encoded))),
            b"".join([name for name in names if name is not None]),
            " ".join(["-1" if name is None else str(len(name)) for name in names]),
            self._window_ms(),
        ]
        with self._guard:
            last = int(await WRITE_SCRIPT(self._hot, [self._base(key)], args))
        if last < 0:
            _raise_missing(last)
        return stored_batch(stream_id, last, items)

    async def _delete_stream(self, key: str, stream_id: str) -> bool:
        args = [num(self.now()), stream_id, str(WAKE_AFTER_DELETE_MS)]
        with self._guard:
            existed = await DELETE_STREAM_SCRIPT(self._hot, [self._base(key)], args)
        return int(existed) == 1

    async def _delete_streams(self, key: str, stream_ids: list[str]) -> int:
        args = [num(self.now()), str(WAKE_AFTER_DELETE_MS), *stream_ids]
        with self._guard:
            removed = await DELETE_STREAMS_SCRIPT(self._hot, [self._base(key)], args)
        return int(removed)

    async def _stream_expired(self, key: str, stream_id: str) -> bool:
        """The session's stream set keeps an id until the stream is deleted or capped."""
        with self._guard:
            member = await self.client.sismember(f"{self._base(key)}:streams", stream_id)
        return bool(member) and await self._load_stream(key, stream_id) is None

    async def _list_streams(self, key: str) -> list[StreamState]:
        with self._guard:
            members = await self.client.smembers(f"{self._base(key)}:streams")
        states = [await self._load_stream(key, text(m)) for m in sorted(members)]
        return [state for state in states if state is not None]

    async def _record_streams(self, key: str, stream_ids: list[str], keep: int) -> list[str]:
        args = [num(self.now()), keep, *stream_ids]
        with self._guard:
            dropped = await RECORD_STREAMS_SCRIPT(self._hot, [self._base(key)], args)
        if dropped == -1:
            raise SessionNotFoundError(SESSION_NOT_FOUND)
        return [text(stream_id) for stream_id in dropped]

    async def _read(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> tuple[int, list[StoredEvent], str]:
        args = [num(self.now()), stream_id, f"0-{max(0, after_seq) + 1}", limit]
        with self._guard:
            status, rows, wake_id = await READ_SCRIPT(self._hot, [self._base(key)], args)
        events: list[StoredEvent] = []
        for entry_id, flat in rows:
            fields = {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
            event = fields.get("e")
            events.append(
                StoredEvent(
                    stream_id=stream_id,
                    seq=int(text(entry_id).partition("-")[2]),
                    data=text(fields["d"]),
                    event=None if event is None else text(event),
                )
            )
        return int(status), events, text(wake_id)

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        if limit <= 0:
            return []
        _status, events, _wake = await self._read(key, stream_id, after_seq, limit)
        return events

    def _blocking_client(self) -> Any:
        if self._blocking is None:
            if self._url is not None:
                # The follower's subscription: one connection, a read timeout longer
                # than its looks at whether anyone still waits.
                self._blocking = self._build_client(
                    self._url, socket_timeout=BLOCK_SLICE + 10, max_connections=_UNCAPPED
                )
                self._owns_blocking = True
            elif self._cluster:
                return self.client
            else:
                pool = self.client.connection_pool
                kwargs = dict(pool.connection_kwargs)
                kwargs["socket_timeout"] = BLOCK_SLICE + 10
                dedicated = self._redis.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs
                )
                self._blocking = self._redis.Redis(connection_pool=dedicated)
                self._owns_blocking = True
        return self._blocking

    async def _poll_stream(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredEvent], bool]:
        """One script: the events, and whether the stream is done or gone (status not 1)."""
        if limit <= 0:
            return [], True
        status, events, _wake = await self._read(key, stream_id, after_seq, limit)
        return events, not events and status != 1

    def _follow_watch(self) -> RedisWatch:
        """One subscription to the channel the scripts publish on, on the blocking client."""
        return RedisWatch(self._blocking_client, self._prefix)
