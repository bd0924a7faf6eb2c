"""Re-hydration: durable sessions on top of an app that keeps its sessions in memory.

A stateful MCP app (the SDK's ordinary mode) issues its own ``Mcp-Session-Id``
and forgets it on restart. This module keeps, per process, a bounded map from
the durable id the client holds to the app's own id, and re-creates a session
the process does not hold through public protocol messages only: an
``initialize`` with the stored client parameters, then
``notifications/initialized``. The app never learns that the session is old,
and the client never sees the app's id.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING

import anyio
from starlette.types import ASGIApp, Scope

from .asgi import call_and_capture, internal_scope
from .protocol import SESSION_HEADER, VERSION_HEADER
from .records import JSONValue, SessionRecord
from .session import Session

if TYPE_CHECKING:
    from .relay import AppSessionWorker
from .setup_replay import setup_requests

logger = logging.getLogger("mcp_session_mw")

RECREATE_REQUEST_ID = "mcp-session-mw:recreate"
MSG_RECREATE_FAILED = "re-creating a session in the app failed"
"""Logged (rate-limited) when the app refuses, or raises on, a re-created session."""
_JSON = b"application/json"
_ACCEPT = b"application/json, text/event-stream"


GATEWAY_STATUSES = frozenset({502, 503, 504})
"""App answers the client gets as they are when a re-creation fails (an upstream that is
down or slow behind a proxy); any other refusal is the middleware's 500."""


class AppSessionError(Exception):
    """The app refused to re-create a session (it answered an error to initialize)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        """The app's HTTP status: 503 when the app holds all the sessions it may; a gateway
        status (see GATEWAY_STATUSES) is passed to the client."""


class LocalSession:
    """What this process knows about one durable session.

    In re-hydration mode an entry lives as long as its app session. In
    stateless mode it is only kept while requests of the session run here
    (``busy``), and then, without its handle, while it has streams to record.
    """

    __slots__ = (
        "_unrecorded",
        "app_id",
        "applied_setup",
        "busy",
        "scope",
        "session",
        "used_at",
        "worker",
    )

    def __init__(self, session: Session | None, app_id: str | None = None) -> None:
        self.session = session
        """The handle requests of the session get; None while none runs (stateless mode)."""
        self.app_id = app_id
        self.worker: AppSessionWorker | None = None
        self.applied_setup: JSONValue = None
        """The recorded session setup (see setup_replay) the app session has had."""
        self.busy = 0
        """Requests of the session this process is handling."""
        self.scope: Scope | None = None
        """The request the app session was opened on: its close goes out as the same caller."""
        self.used_at = 0.0
        """When a request of the session last found this entry (the store's clock)."""
        self._unrecorded: list[str] | None = None

    @property
    def unrecorded_streams(self) -> list[str]:
        """Streams this process opened and has not yet recorded in the session (see durable)."""
        if self._unrecorded is None:
            self._unrecorded = []
        return self._unrecorded

    @property
    def has_unrecorded_streams(self) -> bool:
        return bool(self._unrecorded)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


class LocalSessions:
    """A bounded LRU map of durable id → :class:`LocalSession`: a cache of app sessions.

    Any process can re-create a session from the store, so an entry is only
    worth its memory while it is used. Entries leave, least recently used
    first, when the map is full (:meth:`make_room`, :meth:`put`), when the app
    is full (:meth:`evict_one`) and when idle (:meth:`idle`); the caller closes
    the app session of each entry it is handed (otherwise the app's own session
    limit would fill up with sessions nobody maps to). An entry with a request
    running here (``busy``) is never taken out, so no request loses its app
    session under it; while every entry is busy the map may hold more than
    ``capacity``, by the requests in flight at most.
    """

    def __init__(self, capacity: int, clock: Callable[[], float]) -> None:
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[str, LocalSession] = OrderedDict()
        self._locks: dict[str, anyio.Lock] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: str) -> LocalSession | None:
        entry = self._entries.get(session_id)
        if entry is not None:
            self._entries.move_to_end(session_id)
            entry.used_at = self._clock()
        return entry

    def put(self, session_id: str, entry: LocalSession) -> list[LocalSession]:
        """Insert or refresh; returns the entries evicted to stay within ``capacity``."""
        entry.used_at = self._clock()
        self._entries[session_id] = entry
        self._entries.move_to_end(session_id)
        return self._shed(self.capacity, keep=session_id)

    def make_room(self) -> list[LocalSession]:
        """Evict until one more entry fits; returns the evicted entries."""
        return self._shed(self.capacity - 1)

    def evict_one(self, keep: str | None = None) -> LocalSession | None:
        """Evict the least recently used idle entry holding an app session (not ``keep``)."""
        for session_id, entry in self._entries.items():
            if session_id != keep and not entry.busy and entry.app_id is not None:
                self._remove(session_id)
                return entry
        return None

    def idle(self, timeout: float) -> list[LocalSession]:
        """Evict the entries no request found for ``timeout`` seconds; returns them."""
        cutoff = self._clock() - timeout
        idle: list[str] = []
        for session_id, entry in self._entries.items():
            if entry.used_at > cutoff:
                break  # least recently used first: the rest are newer
            if not entry.busy:
                idle.append(session_id)
        return [self._remove(session_id) for session_id in idle]

    def discard(self, session_id: str, entry: LocalSession) -> None:
        """Drop ``entry`` if it is still the one kept for the session."""
        if self._entries.get(session_id) is entry:
            self._remove(session_id)

    def pop(self, session_id: str) -> LocalSession | None:
        self._locks.pop(session_id, None)
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            entry.stop_worker()
        return entry

    def lock(self, session_id: str) -> anyio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = anyio.Lock()
        return lock

    def _shed(self, size: int, keep: str | None = None) -> list[LocalSession]:
        excess = len(self._entries) - max(size, 0)
        if excess <= 0:
            return []
        # Least recently used first; the walk stops once enough are found.
        idle = (
            session_id
            for session_id, entry in self._entries.items()
            if not entry.busy and session_id != keep
        )
        return [self._remove(session_id) for session_id in list(islice(idle, excess))]

    def _remove(self, session_id: str) -> LocalSession:
        entry = self._entries.pop(session_id)
        self._locks.pop(session_id, None)
        entry.stop_worker()
        return entry


async def recreate_app_session(app: ASGIApp, scope: Scope, record: SessionRecord) -> str | None:
    """Open a session in the app for ``record``; returns the app's id (None for a stateless app).

    Raises AppSessionError if the app refuses the ``initialize``.
    """
    params = {
        "protocolVersion": record.requested_protocol_version or record.protocol_version,
        "capabilities": record.capabilities,
        "clientInfo": record.client_info,
    }
    body = json.dumps(
        {"jsonrpc": "2.0", "id": RECREATE_REQUEST_ID, "method": "initialize", "params": params},
        separators=(",", ":"),
    ).encode()
    init_scope = internal_scope(scope, "POST", {b"content-type": _JSON, b"accept": _ACCEPT})
    answer = await call_and_capture(app, init_scope, body)
    if not 200 <= answer.status < 300:
        raise AppSessionError(
            f"the app answered {answer.status} to a re-created initialize", answer.status
        )
    app_id = answer.header(SESSION_HEADER)
    if app_id is None:
        return None
    notify_scope = internal_scope(
        scope,
        "POST",
        {
            b"content-type": _JSON,
            b"accept": _ACCEPT,
            SESSION_HEADER.encode(): app_id.encode(),
            VERSION_HEADER.encode(): record.protocol_version.encode(),
        },
    )
    done = await call_and_capture(
        app, notify_scope, b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    )
    if not 200 <= done.status < 300:
        raise AppSessionError(
            f"the app answered {done.status} to notifications/initialized", done.status
        )
    for request in setup_requests(record.meta):
        # Replay the logging level and subscriptions the client set up earlier.
        answer = await call_and_capture(
            app, notify_scope, json.dumps(request, separators=(",", ":")).encode()
        )
        if not 200 <= answer.status < 300:
            logger.warning("the app refused a replayed %s (%d)", request["method"], answer.status)
    return app_id


async def close_app_session(app: ASGIApp, scope: Scope, app_id: str, protocol_version: str) -> None:
    """Ask the app to end one of its sessions (DELETE); failures are only logged."""
    delete_scope = internal_scope(
        scope,
        "DELETE",
        {
            SESSION_HEADER.encode(): app_id.encode(),
            VERSION_HEADER.encode(): protocol_version.encode(),
        },
    )
    try:
        await call_and_capture(app, delete_scope, b"")
    except Exception:  # the app session will idle out on its own
        logger.warning("closing an app session failed", exc_info=True)
