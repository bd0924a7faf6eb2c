"""Server-to-client traffic on any instance.

Two duties per app session a process holds (re-hydration mode):

- **Outbox pump.** The app's own GET stream carries what the app sends without
  a related request (log messages, ``resources/updated``, list changes). The
  process drains it into the session's standalone stream in the store, which
  the middleware serves to the client's GET on whichever instance it reached.
- **Reply inbox.** A server-to-client request (elicitation, sampling, roots)
  is registered in the session record as owned by this process before the
  client sees it. When the client's reply reaches another instance, that one
  appends it to the stream ``reply-<owner>`` of the session; the owner follows
  that stream, hands the reply to its app session, and removes the
  registration, which tells the other instance to answer the client 202.
  The owner follows only while it has requests of that session pending: the
  follower starts when a request is registered (from a position taken before
  the client can see the request) and ends once the session's pending table
  holds none of this app session's requests (checked after each delivery and
  each quiet ``FOLLOW_TIMEOUT``), so an idle session costs no store calls.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Scope

from . import metrics
from .asgi import body_only, call_and_capture, internal_scope
from .errors import SessionNotFoundError, StoreError
from .logs import log_failure
from .protocol import SESSION_HEADER, VERSION_HEADER
from .records import JSONValue, StreamState
from .sse import SSEEvent, SSEParseError, SSEParser
from .stores.base import Store
from .streams import STANDALONE_STREAM
from .tasks import Tasks

logger = logging.getLogger("mcp_session_mw")

PENDING_KEY = "pending"
"""Session meta: JSON of a server request id → instance id that holds it."""
MAX_PENDING = 1000
REPLY_STREAM_PREFIX = "reply-"
FOLLOW_TIMEOUT = 5.0
PUMP = "copying an app session's GET stream"
"""What the pump is called in the log line of its failure (see tasks.MSG_TASK_FAILED)."""
_JSON = b"application/json"


def reply_stream(instance_id: str) -> str:
    return REPLY_STREAM_PREFIX + instance_id


def pending_key(request_id: Any) -> str:
    return json.dumps(request_id, separators=(",", ":"))


Pending = tuple[str, JSONValue]
"""(pending key, the app's own id) of one server-to-client request."""


def tag_server_request(data: str, instance_id: str) -> tuple[str, Pending] | None:
    """Give a server-to-client request an id unique in the session; None for other events.

    Every app session numbers its requests from the same start, so two
    processes holding one session would send the client requests with equal
    ids. The client sees ``mcpmw-<instance>-<random>``; the app's own id is
    kept in the pending table and put back when the reply is delivered.
    """
    if '"method"' not in data or '"id"' not in data:
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if (
        isinstance(message, dict)
        and isinstance(message.get("method"), str)
        and isinstance(message.get("id"), str | int)
        and "result" not in message
        and "error" not in message
    ):
        original = message["id"]
        message["id"] = f"mcpmw-{instance_id}-{secrets.token_hex(8)}"
        tagged = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        return tagged, (pending_key(message["id"]), original)
    return None


def tag_events(
    items: list[tuple[str, str | None]], instance_id: str
) -> tuple[list[tuple[str, str | None]], list[Pending]]:
    """``items`` with server requests re-identified, and their pending entries."""
    out: list[tuple[str, str | None]] = []
    pending: list[Pending] = []
    for data, event in items:
        tagged = tag_server_request(data, instance_id)
        if tagged is None:
            out.append((data, event))
        else:
            out.append((tagged[0], event))
            pending.append(tagged[1])
    return out, pending


def with_id(body: bytes, request_id: JSONValue) -> bytes:
    """A client's reply with the app's own request id put back."""
    message = json.loads(body)
    message["id"] = request_id
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def client_reply_key(message: Any) -> str | None:
    """The pending key a client's JSON-RPC response answers, else None."""
    if (
        isinstance(message, dict)
        and "method" not in message
        and isinstance(message.get("id"), str | int)
        and ("result" in message or "error" in message)
    ):
        return pending_key(message["id"])
    return None


_workers: dict[tuple[str, str], AppSessionWorker] = {}
"""The app session workers of this process by (instance id, session id), for :func:`register`."""


async def register(store: Store, session_id: str, entries: list[Pending], instance_id: str) -> None:
    """Record that this process holds these server requests of the session.

    Called before the client can see the requests. If this process holds an
    app session for the session, its reply inbox is running when this returns.
    """

    def add(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
        pending = meta.get(PENDING_KEY)
        table = dict(pending) if isinstance(pending, dict) else {}
        for key, original in entries:
            table[key] = [instance_id, original]
        while len(table) > MAX_PENDING:
            del table[next(iter(table))]
        return {**meta, PENDING_KEY: table}

    await store.update_meta(session_id, add)
    worker = _workers.get((instance_id, session_id))
    if worker is not None:
        await worker.expect([key for key, _ in entries])


async def settle(store: Store, session_id: str, key: str) -> None:
    """Forget a server request once its reply reached the app."""

    def drop(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
        pending = meta.get(PENDING_KEY)
        table = dict(pending) if isinstance(pending, dict) else {}
        table.pop(key, None)
        return {**meta, PENDING_KEY: table}

    await store.update_meta(session_id, drop)


def owner_of(meta: dict[str, JSONValue], key: str) -> tuple[str, JSONValue] | None:
    """(instance holding the request, the app's own id) for a pending key."""
    pending = meta.get(PENDING_KEY)
    if isinstance(pending, dict):
        entry = pending.get(key)
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            return entry[0], entry[1]
    return None


async def hand_over(
    store: Store, session_id: str, owner: str, body: bytes, key: str, timeout: float
) -> bool:
    """Give a reply to the process that holds its request; True once it has it.

    False if the owner has not taken it within ``timeout``; raises
    SessionNotFoundError if the session is deleted (or expires) meanwhile.
    """
    stream_id = reply_stream(owner)
    if await store.load_stream(session_id, stream_id) is None:
        await store.open_stream(session_id, StreamState(stream_id=stream_id))
    # The event name carries the pending key: the body already has the app's id.
    await store.append_event(session_id, stream_id, body.decode("utf-8", "replace"), event=key)
    with anyio.move_on_after(timeout):
        while True:
            record = await store.load(session_id)
            if record is None:
                raise SessionNotFoundError("session not found")
            if owner_of(record.meta, key) is None:
                metrics.RELAYED_REPLIES.inc()
                return True
            await anyio.sleep(0.05)
    return False


class AppSessionWorker:
    """The outbox pump and reply inbox of one app session held by this process.

    The pump runs as long as the worker; the inbox only while a server request
    of the app session is pending (see :meth:`expect`).
    """

    def __init__(
        self,
        *,
        app: ASGIApp,
        store: Store,
        scope: Scope,
        session_id: str,
        app_id: str,
        protocol_version: str,
        instance_id: str,
    ) -> None:
        self.app = app
        self.store = store
        self.session_id = session_id
        self.instance_id = instance_id
        self.scope = anyio.CancelScope()
        headers = {
            SESSION_HEADER.encode(): app_id.encode(),
            VERSION_HEADER.encode(): protocol_version.encode(),
        }
        self._get_scope = internal_scope(scope, "GET", {**headers, b"accept": b"text/event-stream"})
        self._post_scope = internal_scope(
            scope,
            "POST",
            {**headers, b"content-type": _JSON, b"accept": b"application/json, text/event-stream"},
        )
        self._tasks: Tasks | None = None
        self._stopped = False
        self._expected: set[str] = set()
        """Pending keys of this app session's requests not yet seen settled."""
        self._registrations = 0
        """Grows with every :meth:`expect`; the inbox ends only if it did not grow meanwhile."""
        self.following = False
        """True while the reply inbox runs (or is about to start)."""
        self._start_at: int | None = None
        _workers[(instance_id, session_id)] = self

    async def run(self) -> None:
        """Pump (and follow the inbox when needed) until :meth:`stop`.

        Each duty contains its own failures (see :mod:`mcp_session_mw.tasks`):
        an app that raises from its GET stream costs the pump that stream
        (it opens the app's GET stream again, after a pause that grows while
        the app fails again at once), and the inbox goes on. Run again (by
        the middleware's new task group, if its old one ended), it starts
        afresh, unless stopped.
        """
        if self._stopped:
            return
        self.scope = anyio.CancelScope()  # one per run: a scope is entered once
        _workers[(self.instance_id, self.session_id)] = self
        try:
            with self.scope:
                async with anyio.create_task_group() as tg:
                    self._tasks = tasks = Tasks(tg)
                    tasks.keep(PUMP, self._pump)
                    if self._start_at is not None:
                        tasks.spawn("an app session's reply inbox", self._inbox, self._start_at)
                        self._start_at = None
                    await anyio.sleep_forever()  # the inbox may be needed after the pump ends
        finally:
            self._tasks = None
            self._forget()

    def stop(self) -> None:
        self._stopped = True
        self.scope.cancel()
        self._forget()

    def _forget(self) -> None:
        if _workers.get((self.instance_id, self.session_id)) is self:
            del _workers[(self.instance_id, self.session_id)]

    async def expect(self, keys: list[str]) -> None:
        """Follow the reply stream until these (already registered) requests are settled.

        Called before the client can see the requests, so the position taken
        here precedes any reply to them.
        """
        self._expected.update(keys)
        self._registrations += 1
        if self.following or self._stopped:
            return
        stream_id = reply_stream(self.instance_id)
        state = await self.store.load_stream(self.session_id, stream_id)
        if state is None:
            state = await self.store.open_stream(self.session_id, StreamState(stream_id))
        if self.following or self._stopped:
            return  # another registration started it meanwhile, from an earlier position
        self.following = True
        if self._tasks is None:
            self._start_at = state.last_seq  # run() has not started yet
        else:
            self._tasks.spawn("an app session's reply inbox", self._inbox, state.last_seq)

    async def _pump(self) -> None:
        """Copy the app's GET stream into the session's standalone stream."""
        parser = SSEParser()
        with anyio.CancelScope() as pump:

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    if message["status"] != 200:
                        pump.cancel()
                    return
                if message["type"] != "http.response.body":
                    return
                try:
                    items = parser.feed(message.get("body", b""))
                except SSEParseError:
                    logger.warning("the app's GET stream cannot be parsed; no longer copied")
                    pump.cancel()
                    return
                events = [i for i in items if isinstance(i, SSEEvent) and i.data]
                if events:
                    await self._publish(events)
                if not message.get("more_body", False):
                    pump.cancel()

            try:
                await self.app(self._get_scope, body_only(b""), send)
            except StoreError:
                log_failure(logger, "could not copy the app's GET stream to the store")

    async def _publish(self, events: list[SSEEvent]) -> None:
        items, pending = tag_events([(e.data, e.event) for e in events], self.instance_id)
        if pending:
            await register(self.store, self.session_id, pending, self.instance_id)
        if await self.store.load_stream(self.session_id, STANDALONE_STREAM) is None:
            await self.store.open_stream(self.session_id, StreamState(STANDALONE_STREAM))
        await self.store.append_events(self.session_id, STANDALONE_STREAM, items)

    async def _inbox(self, last: int) -> None:
        """Hand replies that reached other instances to this app session, while any is due."""
        stream_id = reply_stream(self.instance_id)
        try:
            while True:
                registrations = self._registrations
                events = await self.store.wait_events(
                    self.session_id, stream_id, last, FOLLOW_TIMEOUT
                )
                for event in events:
                    last = event.seq
                    await self._deliver(event.data, event.event)
                # No await between this test and `following` turning False.
                awaiting = await self._awaiting(stream_id, quiet=not events)
                if not awaiting and registrations == self._registrations:
                    return
        except StoreError:
            log_failure(logger, "the reply inbox of an app session stopped")
        finally:
            self.following = False

    async def _awaiting(self, stream_id: str, *, quiet: bool) -> bool:
        """True while a request of this app session is pending and the session lives."""
        known = set(self._expected)
        record = await self.store.load(self.session_id)
        if record is None:
            return False
        for key in known:
            owner = owner_of(record.meta, key)
            if owner is None or owner[0] != self.instance_id:
                self._expected.discard(key)  # settled (here or by the direct route) or trimmed
        if not self._expected:
            return False
        # A stream that is gone cannot be followed (a backend may then return at once).
        return not quiet or await self.store.load_stream(self.session_id, stream_id) is not None

    async def _deliver(self, data: str, key: str | None) -> None:
        answer = await call_and_capture(self.app, self._post_scope, data.encode())
        if not 200 <= answer.status < 300:
            logger.warning("the app refused a relayed reply (%d)", answer.status)
        if key is not None:
            await settle(self.store, self.session_id, key)
