"""The store contract every backend fulfils.

Public methods take the raw session id, hash it with :meth:`Store.key` and call
the backend's primitives (the ``_``-prefixed abstract methods) with the digest.
The raw id therefore never reaches a database, a log line or a key name.

Time is wall-clock seconds (``time.time()``) so that several processes agree on
expiry. A record whose ``expires_at`` has passed is treated as absent by every
operation even before :meth:`Store.cleanup_expired` removes it.

The event-log half keeps durable SSE streams: each stream of a session has
events numbered 1, 2, 3… (``seq``), a :class:`StreamState` with the producer's
lease, and goes away with its session.

Named locks (:meth:`Store.try_lock`, :meth:`Store.unlock`) are leases shared by
every process on the store, so that periodic chores (the expired-session
sweep) run on one instance at a time instead of on all of them at once.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import inspect
import json
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar

import anyio

from ..errors import (
    ConfigurationError,
    ConflictError,
    InvalidStateError,
    SessionExistsError,
    SessionNotFoundError,
)
from ..records import JSONValue, Page, SessionRecord, StoredEvent, StreamState, merge_state
from .follower import Follower, Position, Slot, Watch, polling

StateChange = (
    Mapping[str, JSONValue]
    | Callable[[dict[str, JSONValue]], dict[str, JSONValue]]
    | Callable[[dict[str, JSONValue]], Awaitable[dict[str, JSONValue]]]
)
"""What :meth:`Store.update` accepts: keys to merge, or a function old state → new state."""

DEFAULT_UPDATE_RETRIES = 200
DEFAULT_PAGE_SIZE = 100
DEFAULT_POLL_INTERVAL = 0.05
RECORDED_STREAMS = "streams"
"""The ``meta`` key of the default :meth:`Store.record_streams` (backends may keep it elsewhere)."""
KEY_CACHE_SIZE = 256
"""Session ids whose keys a store keeps computed: enough for the requests in flight
(a request asks for its key a few times), cleared when full so idle sessions cost nothing."""
BAD_MAX_EVENTS = "max_events must be a positive integer or None"
RESTORE_CHUNK = 10_000
"""Placeholder events :meth:`Store.restore_stream` writes per call to skip trimmed seqs."""
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_LOCK_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_STREAM_ID_RE = re.compile(r"[^\s]+")
"""What :meth:`Store.record_streams` accepts: one or more characters, none of them space."""

# Messages tests assert on.
MSG_BAD_LOCK_NAME = "a lock name is 1 to 64 characters of A-Z a-z 0-9 _ . : -"
MSG_NOT_A_KEY = "a session key is a 64-character lowercase hex digest"
MSG_CANNOT_LIST = "{store} cannot list a session's streams: it needs its own _list_streams"
MSG_BAD_LOCK_TTL = "a lock's ttl must be a positive number of seconds"


def is_key(value: str) -> bool:
    """True when ``value`` has the shape of :meth:`Store.key`'s digests (64 lowercase hex)."""
    return _KEY_RE.fullmatch(value) is not None


def check_state(state: object) -> dict[str, JSONValue]:
    """Return ``state`` if it is a JSON-encodable dict, else raise InvalidStateError."""
    if not isinstance(state, dict):
        raise InvalidStateError(f"session state must be a dict, not {type(state).__name__}")
    try:
        json.dumps(state)
    except (TypeError, ValueError) as exc:
        raise InvalidStateError(f"session state is not JSON-encodable: {exc}") from exc
    return state


class Store(abc.ABC):
    """Where session records and their SSE events live.

    Subclasses declare the URL ``schemes`` they serve and implement the abstract
    primitives; everything else (hashing ids, clocks, merge-or-function updates
    with compare-and-swap retries, polling live waits) is shared here.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    poll_interval: float = DEFAULT_POLL_INTERVAL
    records_streams_natively: bool = False
    """True for a backend with its own :meth:`_record_streams`, which keeps the list
    outside the session record; otherwise :meth:`record_streams` keeps it in ``meta``."""
    finished_stream_ttl: float | None = None
    """Seconds a finished stream (its state and events) is kept after its final event,
    then removed by the store's own expiry (Redis) or the janitor's sweep (memory; the
    SQL stores keep it as long as its session for now); None keeps it as long as its
    session. The middleware sets it (``finished_stream_ttl``)."""

    def __init__(self, *, secret: str | bytes | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        self._secret = secret or None
        self._keys: dict[str, str] = {}  # session id -> key, for the sessions in use
        self._clock: Callable[[], float] = time.time
        # Who holds a lock taken through this object; other objects, even on the
        # same backend and in the same process, are other holders.
        self._lock_owner = secrets.token_hex(16)
        self._follower: Follower | None = None

    # -- identity --------------------------------------------------------------

    def key(self, session_id: str) -> str:
        """The digest a session is stored under: SHA-256, or HMAC-SHA-256 with ``secret``."""
        key = self._keys.get(session_id)
        if key is None:
            raw = session_id.encode()
            if self._secret is not None:
                key = hmac.new(self._secret, raw, hashlib.sha256).hexdigest()
            else:
                key = hashlib.sha256(raw).hexdigest()
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()  # a request computes a key a few times: any recent cache will do
            self._keys[session_id] = key
        return key

    def now(self) -> float:
        return self._clock()

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and create the schema if needed. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent; the store may be opened again."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- sessions: public API ----------------------------------------------------

    async def create(self, session_id: str, record: SessionRecord) -> SessionRecord:
        """Store a new session; raises SessionExistsError if the id is taken."""
        stored = record.evolve(key=self.key(session_id), version=1)
        check_state(stored.state)
        await self._insert(stored)
        return stored

    async def load(self, session_id: str) -> SessionRecord | None:
        """The session, or None when it is unknown or expired."""
        return await self._get(self.key(session_id), self.now())

    async def load_by_key(self, key: str) -> SessionRecord | None:
        """The session stored under digest ``key`` (from a listed record), or None.

        For operators' tools, which see keys (``list_active``) but never raw ids.
        Anything but a 64-character lowercase hex digest is never looked up.
        """
        if not is_key(key):
            return None
        return await self._get(key, self.now())

    async def delete_by_key(self, key: str) -> bool:
        """Like :meth:`delete`, for the session stored under digest ``key``."""
        if not is_key(key):
            return False
        return await self._delete(key)

    async def restore(self, record: SessionRecord) -> bool:
        """Insert a record read from another store, under its own ``key``; False if one is live.

        For copying sessions between stores (``mcp-session-mw migrate``, ``load``):
        the raw id is not known, only the digest, so both stores must hash ids
        alike (the same ``secret``, or none). Nothing is changed in the record.
        """
        if not is_key(record.key):
            raise ValueError(MSG_NOT_A_KEY)
        check_state(record.state)
        try:
            await self._insert(record)
        except SessionExistsError:
            return False
        return True

    async def save(self, session_id: str, record: SessionRecord) -> SessionRecord:
        """Overwrite a live session with ``record`` (last writer wins); returns what was stored.

        Raises SessionNotFoundError if the session is gone. Use :meth:`update`
        when concurrent writers must not lose each other's changes.
        """
        key = self.key(session_id)
        check_state(record.state)
        current = await self._get(key, self.now())
        if current is None:
            raise SessionNotFoundError("session not found")
        stored = record.evolve(key=key, version=current.version + 1)
        await self._put(stored)
        return stored

    async def update(
        self,
        session_id: str,
        change: StateChange,
        *,
        retries: int = DEFAULT_UPDATE_RETRIES,
    ) -> SessionRecord:
        """Atomically change a session's state and return the new record.

        ``change`` is a mapping merged into the state, or a function (sync or
        async) from the current state to the new one; a function may run more
        than once when writers race. Raises SessionNotFoundError if the session
        is gone and ConflictError if every retry lost its compare-and-swap.
        """
        key = self.key(session_id)
        for attempt in range(retries):
            current = await self._get(key, self.now())
            if current is None:
                raise SessionNotFoundError("session not found")
            new_state = await _apply(change, current.state)
            stored = current.evolve(state=new_state, version=current.version + 1)
            if await self._compare_and_swap(stored, current.version):
                return stored
            await anyio.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
        raise ConflictError(f"update lost its compare-and-swap {retries} times")

    async def update_meta(self, session_id: str, change: StateChange) -> SessionRecord:
        """Like :meth:`update`, on the middleware's private ``meta`` dict."""
        key = self.key(session_id)
        for attempt in range(DEFAULT_UPDATE_RETRIES):
            current = await self._get(key, self.now())
            if current is None:
                raise SessionNotFoundError("session not found")
            new_meta = await _apply(change, current.meta)
            stored = current.evolve(meta=new_meta, version=current.version + 1)
            if await self._compare_and_swap(stored, current.version):
                return stored
            await anyio.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
        raise ConflictError("meta update lost its compare-and-swap")

    async def touch(self, session_id: str, ttl: float | None = None) -> bool:
        """Slide the session's expiry (by ``ttl``, else its own); False if it is gone."""
        now = self.now()
        return await self._touch(self.key(session_id), now, ttl)

    async def delete(self, session_id: str) -> bool:
        """Remove the session and all its events. Idempotent; True if it existed."""
        return await self._delete(self.key(session_id))

    async def list_active(
        self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        """One page of live sessions, ordered by key; never loads the whole set."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        return await self._list(limit, cursor, self.now())

    async def count_active(self) -> int:
        """How many sessions are live (pages through :meth:`list_active`)."""
        total, cursor = 0, None
        while True:
            page = await self.list_active(limit=1000, cursor=cursor)
            total += len(page.records)
            if page.next_cursor is None:
                return total
            cursor = page.next_cursor

    async def cleanup_expired(self) -> int:
        """Remove expired sessions (and their events); returns how many sessions went."""
        return await self._cleanup(self.now())

    # -- named locks -------------------------------------------------------------

    async def try_lock(self, name: str, ttl: float) -> bool:
        """Take the lock ``name`` for ``ttl`` seconds if nobody holds it; True if taken.

        A lease, shared by every process on the store: it ends at :meth:`unlock`
        or ``ttl`` seconds after it was taken, whichever comes first, so a
        holder that dies frees it by itself. Never waits, and is not
        re-entrant: while the lease runs, this store's own next ``try_lock``
        is refused too (so a chore guarded by it runs at most once per
        ``ttl``). ``name`` is 1 to 64 characters of ``A-Z a-z 0-9 _ . : -``.
        """
        _check_lock_name(name)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ConfigurationError(MSG_BAD_LOCK_TTL)
        return await self._try_lock(name, self._lock_owner, self.now(), float(ttl))

    async def unlock(self, name: str) -> bool:
        """End this store's lease on ``name`` early; True if it held a running one.

        A lease this store no longer holds (it ran out, maybe someone else took
        it since) is left alone.
        """
        _check_lock_name(name)
        return await self._unlock(name, self._lock_owner, self.now())

    # -- events: public API ------------------------------------------------------

    async def stream_expired(self, session_id: str, stream_id: str) -> bool:
        """True if the session had this stream and ``finished_stream_ttl`` removed it.

        Only asked after :meth:`load_stream` found nothing, so that such a resume
        gets the "events lost" error, not an unknown id's. False where the store
        keeps no trace of expired streams.
        """
        return await self._stream_expired(self.key(session_id), stream_id)

    async def _stream_expired(self, key: str, stream_id: str) -> bool:
        return False

    async def open_stream(self, session_id: str, state: StreamState) -> StreamState:
        """Create the stream, or take it over (new owner, lease, request id) keeping its events.

        Raises SessionNotFoundError if the session is gone.
        """
        return await self._open_stream(self.key(session_id), state)

    async def load_stream(self, session_id: str, stream_id: str) -> StreamState | None:
        return await self._load_stream(self.key(session_id), stream_id)

    async def renew_stream(self, session_id: str, stream_id: str, lease_expires: float) -> None:
        await self._renew_stream(self.key(session_id), stream_id, lease_expires)

    async def finish_stream(self, session_id: str, stream_id: str) -> None:
        """Mark the stream done: its final response is stored; followers may stop."""
        await self._finish_stream(self.key(session_id), stream_id)

    async def append_event(
        self,
        session_id: str,
        stream_id: str,
        data: str,
        *,
        event: str | None = None,
        max_events: int | None = None,
    ) -> StoredEvent:
        """Store one event at the stream's next seq and return it.

        With ``max_events`` the oldest events beyond that many are trimmed (and
        the stream's ``first_seq`` moves on). Raises SessionNotFoundError if the
        session is gone and StreamNotFoundError if the stream was never opened.
        """
        _check_max_events(max_events)
        return await self._append_event(self.key(session_id), stream_id, data, event, max_events)

    async def append_events(
        self,
        session_id: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        *,
        max_events: int | None = None,
    ) -> list[StoredEvent]:
        """Store several ``(data, event)`` pairs at consecutive seqs, atomically, in order.

        Same rules as :meth:`append_event`; either every item is stored or none
        is. This is how the middleware stores a burst of events in one round
        trip while the previous write was in flight.
        """
        _check_max_events(max_events)
        if not items:
            return []
        return await self._append_events(self.key(session_id), stream_id, items, max_events)

    async def write_stream(
        self,
        session_id: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        *,
        open_as: StreamState | None = None,
        finish: bool = False,
        max_events: int | None = None,
    ) -> list[StoredEvent]:
        """Open the stream (``open_as``), append ``items`` and mark it done (``finish``).

        Each part is optional; what is asked for is done as one write, in one
        round trip on the backends that can (memory, Redis, PostgreSQL, SQLite):
        most responses of an MCP server are one event, and this stores one in
        a single call instead of three. ``open_as`` is :meth:`open_stream`'s
        state (its ``stream_id`` must be ``stream_id``). Same errors as the
        three calls it stands for; either all of it is stored or none.
        """
        if open_as is not None and open_as.stream_id != stream_id:
            raise ValueError("open_as.stream_id must be the stream written")
        _check_max_events(max_events)
        return await self._write_stream(
            self.key(session_id), stream_id, items, open_as, finish, max_events
        )

    async def delete_stream(self, session_id: str, stream_id: str) -> bool:
        """Remove one stream and its events; True if it existed. Idempotent."""
        return await self._delete_stream(self.key(session_id), stream_id)

    async def delete_streams(self, session_id: str, stream_ids: Sequence[str]) -> int:
        """Remove several streams and their events in one write; how many existed."""
        if not stream_ids:
            return 0
        return await self._delete_streams(self.key(session_id), list(dict.fromkeys(stream_ids)))

    async def record_streams(
        self, session_id: str, stream_ids: Sequence[str], *, keep: int
    ) -> list[str]:
        """Note request streams just opened, oldest first; keep the newest ``keep`` noted.

        Streams noted earlier beyond the newest ``keep`` are removed with their
        events, in the same write; returns their ids, oldest first. Noting a
        stream again does not move it. Only noted streams are ever removed, so
        the standalone GET stream and the relay's streams are safe unless they
        are passed here. This is how ``max_streams_per_session`` bounds what a
        session keeps. Raises SessionNotFoundError if the session is gone.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError("keep must be a positive int")
        for stream_id in stream_ids:
            if not isinstance(stream_id, str) or not _STREAM_ID_RE.fullmatch(stream_id):
                raise ValueError(f"not a stream id: {stream_id!r}")
        new = list(dict.fromkeys(stream_ids))
        if self.records_streams_natively:
            return await self._record_streams(self.key(session_id), new, keep)
        return await self._record_streams_in_meta(session_id, new, keep)

    async def _record_streams_in_meta(
        self, session_id: str, new: list[str], keep: int
    ) -> list[str]:
        """:meth:`record_streams` with the list in the session's ``meta``.

        By default through update_meta (a caching store keeps its cache
        current), then one delete; SQL does both in one transaction.
        """
        dropped: list[str] = []

        def remember(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
            noted, dropped[:] = note_streams(meta, new, keep)
            return noted

        await self.update_meta(session_id, remember)
        if dropped:
            await self.delete_streams(session_id, dropped)
        return dropped

    async def read_events(
        self, session_id: str, stream_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Events of the stream with ``seq > after_seq``, oldest first, at most ``limit``."""
        return await self._read_events(self.key(session_id), stream_id, after_seq, limit)

    async def list_streams_by_key(self, key: str) -> list[StreamState]:
        """Every stream of the live session stored under digest ``key``, in no set order.

        For operators' tools (migration, dumps, the dashboard): the standalone
        stream, request streams and relay streams alike. [] for an unknown or
        expired session, and for anything but a key.
        """
        if not is_key(key):
            return []
        return await self._list_streams(key)

    async def read_events_by_key(
        self, key: str, stream_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Like :meth:`read_events`, for the session stored under digest ``key``."""
        if not is_key(key):
            return []
        return await self._read_events(key, stream_id, after_seq, limit)

    async def restore_stream(
        self, key: str, state: StreamState, events: Sequence[StoredEvent]
    ) -> int:
        """Write events read from another store so that each keeps its ``seq``; how many written.

        ``events`` are consecutive, oldest first, from the stream ``state``
        describes. The stream is created as ``state`` (owner, lease, request id)
        when the session under ``key`` has none of that id; events it already
        holds (``seq`` up to its ``last_seq``) are skipped, so copying twice
        writes nothing twice. Seqs the source no longer keeps (trimmed) are
        skipped by writing placeholders that the same write trims, so a client's
        ``Last-Event-ID`` names the same event in both stores. Marks the stream
        done when ``state`` is. Raises SessionNotFoundError if the session is gone.
        """
        if not is_key(key):
            raise ValueError(MSG_NOT_A_KEY)
        stream_id = state.stream_id
        current = await self._load_stream(key, stream_id)
        last = 0 if current is None else current.last_seq
        new = [(event.data, event.event) for event in events if event.seq > last]
        open_as = state if current is None else None
        finish = state.done and not (current is not None and current.done)
        if not new:
            if open_as is not None or finish:
                await self._write_stream(key, stream_id, [], open_as, finish, None)
            return 0
        gap = events[-1].seq - len(new) - last  # seqs between ours and the first new event
        while gap > RESTORE_CHUNK:
            await self._write_stream(
                key, stream_id, [("", None)] * RESTORE_CHUNK, open_as, False, 1
            )
            open_as, gap = None, gap - RESTORE_CHUNK
        items = [("", None)] * gap + new
        keep = len(new) if gap else None
        await self._write_stream(key, stream_id, items, open_as, finish, keep)
        return len(new)

    async def wait_events(
        self,
        session_id: str,
        stream_id: str,
        after_seq: int,
        timeout: float,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Like :meth:`read_events`, but wait up to ``timeout`` seconds for one to arrive.

        Returns ``[]`` at once when the stream is finished or gone and has
        nothing newer (callers look at its state). The wait is
        a registration with the store's one :attr:`follower`: a thousand waits
        cost one watch, not a thousand polls or connections.
        """
        key = self.key(session_id)
        deadline = time.monotonic() + timeout
        while True:
            # Registered before the read: a change in between still wakes it.
            with self.follower.watching((key, stream_id), after_seq) as waiter:
                events, finished = await self._poll_stream(key, stream_id, after_seq, limit)
                remaining = deadline - time.monotonic()
                if events or finished or remaining <= 0:
                    return events
                await waiter.wait(remaining)

    async def _poll_stream(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> tuple[list[StoredEvent], bool]:
        """Events after ``after_seq``, and whether nothing more will come (finished or gone).

        Default: a read, then a look at the stream's state when it found nothing.
        Backends override it with one round trip.
        """
        events = await self._read_events(key, stream_id, after_seq, limit)
        if events:
            return events, False
        state = await self._load_stream(key, stream_id)
        return [], state is None or state.done

    @property
    def follower(self) -> Follower:
        """The store's one shared follower (made on first use, with :meth:`_follow_watch`)."""
        if self._follower is None:
            self._follower = Follower(self._follow_watch(), name=type(self).__name__)
        return self._follower

    def _follow_watch(self) -> Watch | None:
        """What tells the follower which streams moved. Default: poll :meth:`_stream_positions`.

        Backends with a push channel return their own; one whose writers wake
        the follower themselves (memory) returns None.
        """
        return polling(self._stream_positions, lambda: self.poll_interval)

    async def _stream_positions(self, slots: Sequence[Slot]) -> dict[Slot, Position]:
        """Where each stream stands, ``(last_seq, done)``; streams that are gone are left out.

        Default: one :meth:`_load_stream` each. Backends override it with one round trip.
        """
        found: dict[Slot, Position] = {}
        for key, stream_id in slots:
            state = await self._load_stream(key, stream_id)
            if state is not None:
                found[key, stream_id] = (state.last_seq, state.done)
        return found

    # -- primitives each backend implements (keyed by digest) ----------------------

    @abc.abstractmethod
    async def _insert(self, record: SessionRecord) -> None:
        """Insert; raise SessionExistsError if a live record has that key.

        An expired record under the same key may be replaced.
        """

    @abc.abstractmethod
    async def _get(self, key: str, now: float) -> SessionRecord | None:
        """The live record, or None when absent or expired at ``now``."""

    @abc.abstractmethod
    async def _put(self, record: SessionRecord) -> None:
        """Overwrite unconditionally."""

    @abc.abstractmethod
    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        """Write ``record`` only if the stored version is ``expected_version``."""

    @abc.abstractmethod
    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        """Set last_accessed=now, expires_at=now+(ttl or the record's ttl); update ttl if given."""

    @abc.abstractmethod
    async def _delete(self, key: str) -> bool:
        """Delete the record and every stream and event of it."""

    @abc.abstractmethod
    async def _list(self, limit: int, cursor: str | None, now: float) -> Page: ...

    @abc.abstractmethod
    async def _cleanup(self, now: float) -> int: ...

    @abc.abstractmethod
    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        """Atomically: if no lease on ``name`` runs at ``now``, record ``owner``'s until now+ttl."""

    @abc.abstractmethod
    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        """Atomically: drop the lease on ``name`` if ``owner`` holds it and it runs at ``now``."""

    @abc.abstractmethod
    async def _open_stream(self, key: str, state: StreamState) -> StreamState: ...

    @abc.abstractmethod
    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None: ...

    @abc.abstractmethod
    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None: ...

    @abc.abstractmethod
    async def _finish_stream(self, key: str, stream_id: str) -> None: ...

    @abc.abstractmethod
    async def _append_event(
        self, key: str, stream_id: str, data: str, event: str | None, max_events: int | None
    ) -> StoredEvent: ...

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        """Default: one append per item. Backends override it with one round trip."""
        return [
            await self._append_event(key, stream_id, data, event, max_events)
            for data, event in items
        ]

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        """Default: the calls it stands for, one after the other (not atomic).

        Backends override it with one atomic round trip.
        """
        if open_as is not None:
            await self._open_stream(key, open_as)
        stored = await self._append_events(key, stream_id, items, max_events) if items else []
        if finish:
            await self._finish_stream(key, stream_id)
        return stored

    @abc.abstractmethod
    async def _delete_stream(self, key: str, stream_id: str) -> bool: ...

    async def _delete_streams(self, key: str, stream_ids: list[str]) -> int:
        """Default: one delete per stream. Backends override it with one round trip."""
        return sum([await self._delete_stream(key, stream_id) for stream_id in stream_ids])

    async def _record_streams(self, key: str, stream_ids: list[str], keep: int) -> list[str]:
        """One atomic write: note ``stream_ids``, drop (and return) the oldest beyond ``keep``.

        Only called when :attr:`records_streams_natively` is True.
        """
        raise NotImplementedError

    async def _list_streams(self, key: str) -> list[StreamState]:
        """The states of every stream of the live session under ``key``; backends override it."""
        raise NotImplementedError(MSG_CANNOT_LIST.format(store=type(self).__name__))

    @abc.abstractmethod
    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]: ...


def note_streams(
    meta: Mapping[str, JSONValue], new: Sequence[str], keep: int
) -> tuple[dict[str, JSONValue], list[str]]:
    """``meta`` with ``new`` streams noted (newest ``keep`` kept), and the ones dropped."""
    known = meta.get(RECORDED_STREAMS)
    noted = [s for s in known if isinstance(s, str)] if isinstance(known, list) else []
    seen = set(noted)
    noted += [stream_id for stream_id in new if stream_id not in seen]
    dropped = noted[:-keep] if len(noted) > keep else []
    return {**meta, RECORDED_STREAMS: list(noted[-keep:])}, dropped


def stored_batch(
    stream_id: str, last_seq: int, items: Sequence[tuple[str, str | None]]
) -> list[StoredEvent]:
    """The events of a batch a backend stored with consecutive seqs ending at ``last_seq``."""
    start = last_seq - len(items) + 1
    return [
        StoredEvent(stream_id, start + offset, data, event)
        for offset, (data, event) in enumerate(items)
    ]


def _check_max_events(max_events: int | None) -> None:
    """Every backend refuses the same bad ``max_events``, before anything is stored."""
    if max_events is not None and (
        isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1
    ):
        raise ValueError(BAD_MAX_EVENTS)


def _check_lock_name(name: str) -> None:
    if not isinstance(name, str) or _LOCK_NAME_RE.fullmatch(name) is None:
        raise ConfigurationError(MSG_BAD_LOCK_NAME)


async def _apply(change: StateChange, current: dict[str, JSONValue]) -> dict[str, JSONValue]:
    if isinstance(change, Mapping):
        return check_state(merge_state(current, change))
    result: Any = change(dict(current))
    if not isinstance(result, dict) and inspect.isawaitable(result):
        result = await result
    return check_state(result)
