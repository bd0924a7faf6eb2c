"""Admission limits: how many sessions the store may hold, in total and per principal.

An exact count of live sessions needs a scan of the store
(:meth:`Store.count_active` is O(n)), and a count per principal needs an index
no backend keeps. Both are kept here on the store's public API only, so every
backend gets them unchanged, as the approximations below.

- Total (``max_sessions``): each process scans the store at most once every
  ``interval`` seconds and adds the sessions it admitted since (minus those it
  deleted). Sessions other processes created since their last scan are not
  seen, so several processes together can overshoot the limit by what the
  others create within one interval; a single process cannot.
- Per principal (``max_sessions_per_principal``): one index record per
  principal, in the store, changed by compare-and-swap, so two processes never
  both take the last slot. It maps each session's digest (never the id) to the
  expiry the middleware last gave that session; entries past it are dropped. A
  session removed behind the middleware's back (store API, admin tools) keeps
  its slot until that expiry passes.

Index records are stored as sessions under an id no client can send (it has
a space, and session ids are checked against the minted format), carry
``meta["kind"] == "principal-index"`` and are left out of the total.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from .errors import ConflictError, SessionExistsError, SessionNotFoundError
from .records import JSONValue, SessionRecord
from .stores.base import Store

logger = logging.getLogger("mcp_session_mw")

INDEX_KIND = "principal-index"
"""``meta["kind"]`` of a per-principal index record."""
COUNT_PAGE = 1000
INDEX_CREATE_ATTEMPTS = 5


def is_index(record: SessionRecord) -> bool:
    """True for the middleware's per-principal index records (not client sessions)."""
    return record.meta.get("kind") == INDEX_KIND


def index_id(principal: str) -> str:
    """The store id of a principal's index: the space keeps it out of clients' reach."""
    return f"{INDEX_KIND} {principal}"


async def count_sessions(store: Store) -> int:
    """Live client sessions in the store, index records left out (a full scan)."""
    total, cursor = 0, None
    while True:
        page = await store.list_active(limit=COUNT_PAGE, cursor=cursor)
        total += sum(1 for record in page.records if not is_index(record))
        if page.next_cursor is None:
            return total
        cursor = page.next_cursor


class SessionCount:
    """The process's estimate of live sessions, for ``max_sessions``.

    A scan runs at most once per ``interval`` (one at a time; others wait for
    its result); between scans the estimate moves by what this process admits
    and deletes. A refused flood therefore costs one scan per interval, not one
    per request.
    """

    def __init__(self, store: Store, limit: int, interval: float) -> None:
        self.store = store
        self.limit = limit
        self.interval = interval
        self._scanned: int | None = None
        self._scanned_at = 0.0
        self._delta = 0
        self._lock = anyio.Lock()

    @property
    def estimate(self) -> int | None:
        return None if self._scanned is None else self._scanned + self._delta

    async def admit(self) -> bool:
        """Reserve room for one more session; False when the store is full.

        Raises StoreError when the scan cannot reach the store.
        """
        if self._stale():
            async with self._lock:
                if self._stale():
                    self._scanned = await count_sessions(self.store)
                    self._scanned_at = time.monotonic()
                    self._delta = 0
        assert self._scanned is not None
        if self._scanned + self._delta >= self.limit:
            return False
        self._delta += 1
        return True

    def forget(self) -> None:
        """One session fewer: an admitted one was never created, or one was deleted."""
        self._delta -= 1

    def _stale(self) -> bool:
        return self._scanned is None or time.monotonic() - self._scanned_at >= self.interval


Sessions = dict[str, float]


class PrincipalIndex:
    """Per-principal session slots, kept in the store, for ``max_sessions_per_principal``.

    ``ttl`` is the sessions' full ttl; the index itself lives twice that from
    its last renewal, which outlasts every expiry it holds (none is later than
    now + ttl), so it never vanishes under live sessions.
    """

    def __init__(self, store: Store, limit: int, ttl: float) -> None:
        self.store = store
        self.limit = limit
        self.life = 2 * ttl

    async def admit(self, principal: str, session_id: str, expires_at: float) -> float | None:
        """Take a slot for a new session: None when taken, else seconds until one may free.

        A full index is answered from one read, without writing.
        """
        key = self.store.key(session_id)
        record = await self.store.load(index_id(principal))
        if record is not None:
            sessions = self._live(record.meta)
            if len(sessions) >= self.limit:
                return self._wait(sessions)
        refused: list[float | None] = [None]

        def take(sessions: Sessions) -> Sessions:
            refused[0] = None
            if key not in sessions and len(sessions) >= self.limit:
                refused[0] = self._wait(sessions)  # filled up since the read above
            else:
                sessions[key] = expires_at
            return sessions

        await self._change(principal, take)
        return refused[0]

    async def extend(self, principal: str, session_id: str, expires_at: float) -> None:
        """Record a session's new expiry (after a touch); re-adds it if the index lost it."""
        key = self.store.key(session_id)

        def renew(sessions: Sessions) -> Sessions:
            sessions[key] = max(expires_at, sessions.get(key, 0.0))
            return sessions

        await self._change(principal, renew)

    async def release(self, principal: str, session_id: str) -> None:
        """Free a session's slot (it was deleted, or never got created)."""
        key = self.store.key(session_id)

        def drop(sessions: Sessions) -> Sessions:
            sessions.pop(key, None)
            return sessions

        await self._change(principal, drop)

    def _live(self, meta: dict[str, JSONValue]) -> Sessions:
        now = self.store.now()
        raw = meta.get("sessions")
        if not isinstance(raw, dict):
            return {}
        return {
            key: float(value)
            for key, value in raw.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and value > now
        }

    def _wait(self, sessions: Sessions) -> float:
        soonest = min(sessions.values(), default=self.store.now())
        return max(1.0, soonest - self.store.now())

    async def _change(self, principal: str, change: Callable[[Sessions], Sessions]) -> None:
        """Apply ``change`` to the live entries by compare-and-swap; create the index if needed."""
        store, ident = self.store, index_id(principal)

        def apply(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
            return {**meta, "kind": INDEX_KIND, "sessions": change(self._live(meta))}

        for _ in range(INDEX_CREATE_ATTEMPTS):
            try:
                record = await store.update_meta(ident, apply)
            except SessionNotFoundError:
                now = store.now()
                fresh = SessionRecord(
                    key="",
                    protocol_version="",
                    principal=principal,
                    created_at=now,
                    last_accessed=now,
                    expires_at=now + self.life,
                    ttl=self.life,
                    meta=apply({}),
                )
                try:
                    await store.create(ident, fresh)
                except SessionExistsError:
                    continue  # another process created it first; update theirs
                return
            sessions = record.meta.get("sessions")
            latest = max(sessions.values()) if isinstance(sessions, dict) and sessions else 0.0
            if record.expires_at < latest + 1.0:
                await store.touch(ident)  # now + life, which outlasts every entry
            return
        raise ConflictError("the principal's session index could not be created")
