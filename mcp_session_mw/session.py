"""The handle tool handlers and routes use to reach their MCP session.

The middleware sets a ContextVar before it calls the app. anyio copies the
context into every task it starts, so the value is visible inside MCP tool
handlers: in a stateless app they run in the request's own task; in a stateful
app they run in the app's per-session task, which copied the context when the
middleware (re-)created the app session, and the handle it holds is the same
object for that durable session for as long as the process keeps it.
"""

from __future__ import annotations

import copy
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from .errors import NoSessionError, SessionNotFoundError
from .records import JSONValue, SessionRecord

if TYPE_CHECKING:
    from .stores.base import StateChange, Store


class ClientStream(Protocol):
    """What a session needs of one of its SSE responses (a ``DurableResponse``)."""

    async def request_close(self) -> None: ...


_current: ContextVar[Session | None] = ContextVar("mcp_session_mw_session", default=None)


class Session:
    """One durable MCP session, as seen from application code.

    ``state`` is a snapshot taken when the middleware last loaded the record (at
    the start of the current request, or after :meth:`update` / :meth:`refresh`);
    :meth:`update` is the way to change it without losing concurrent writes.
    """

    __slots__ = ("_id", "_record", "_store", "_streams")

    def __init__(self, session_id: str, store: Store, record: SessionRecord) -> None:
        self._id = session_id
        self._store = store
        self._record = record
        self._streams: set[ClientStream] | None = None  # created with the first stream

    @property
    def id(self) -> str:
        """The ``Mcp-Session-Id`` the client holds."""
        return self._id

    @property
    def record(self) -> SessionRecord:
        return self._record

    @property
    def state(self) -> dict[str, JSONValue]:
        """A deep copy of the state snapshot; changing it changes nothing stored."""
        return copy.deepcopy(self._record.state)

    @property
    def protocol_version(self) -> str:
        return self._record.protocol_version

    @property
    def client_info(self) -> dict[str, JSONValue]:
        return copy.deepcopy(self._record.client_info)

    @property
    def store(self) -> Store:
        return self._store

    async def update(self, change: StateChange) -> dict[str, JSONValue]:
        """Atomically merge a mapping into the state, or apply a function to it.

        Returns the new state.
        """
        self._record = await self._store.update(self._id, change)
        return self.state

    async def refresh(self) -> dict[str, JSONValue]:
        """Re-read the record from the store; raises SessionNotFoundError if it is gone."""
        record = await self._store.load(self._id)
        if record is None:
            raise SessionNotFoundError("session not found")
        self._record = record
        return self.state

    async def notify(self, method: str, params: dict[str, JSONValue] | None = None) -> None:
        """Send a server-initiated notification on the session's standalone GET stream.

        The notification is stored first, so a client whose GET stream is
        connected to any instance receives it, and one that reconnects with
        ``Last-Event-ID`` gets it on replay.
        """
        message: dict[str, JSONValue] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        from .streams import publish

        await publish(self._store, self._id, message)

    async def close_sse_streams(self) -> int:
        """End the client connections of this session's SSE responses in this process.

        The tools behind them keep running and their events are still stored;
        the client resumes by GET with ``Last-Event-ID`` (SEP-1699 polling).
        Returns how many connections were closed.
        """
        streams = list(self._streams or ())
        for stream in streams:
            await stream.request_close()
        return len(streams)

    def _track(self, stream: ClientStream) -> None:
        if self._streams is None:
            self._streams = set()
        self._streams.add(stream)

    def _untrack(self, stream: ClientStream) -> None:
        if self._streams is not None:
            self._streams.discard(stream)
            if not self._streams:
                self._streams = None

    def _set_record(self, record: SessionRecord) -> None:
        self._record = record

    def __repr__(self) -> str:
        return f"<Session {self._store.key(self._id)[:12]}>"


def current_session() -> Session:
    """The session of the MCP request being handled; raises NoSessionError outside one."""
    session = _current.get()
    if session is None:
        raise NoSessionError("no MCP session: not inside a request handled by SessionMiddleware")
    return session


def current_session_or_none() -> Session | None:
    return _current.get()
