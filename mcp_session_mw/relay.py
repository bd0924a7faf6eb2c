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
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Scope

from .asgi import body_only, call_and_capture
from .errors import StoreError
from .protocol import SESSION_HEADER, VERSION_HEADER
from .records import JSONValue, StreamState
from .rehydrate import internal_scope
from .sse import SSEEvent, SSEParseError, SSEParser
from .stores.base import Store
from .streams import STANDALONE_STREAM

logger = logging.getLogger("mcp_session_mw")

PENDING_KEY = "pending"
"""Session meta: JSON of a server request id → instance id that holds it."""
MAX_PENDING = 1000
REPLY_STREAM_PREFIX = "reply-"
FOLLOW_TIMEOUT = 5.0
_JSON = b"application/json"


def reply_stream(instance_id: str) -> str:
    return REPLY_STREAM_PREFIX + instance_id


def pending_key(request_id: Any) -> str:
    return json.dumps(request_id, separators=(",", ":"))


def server_request_id(data: str) -> str | None:
    """The pending key of an event that is a server-to-client request, else None."""
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
        return pending_key(message["id"])
    return None


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


async def register(store: Store, session_id: str, keys: list[str], instance_id: str) -> None:
    """Record that this process holds the server requests ``keys`` of the session."""

    def add(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
        pending = meta.get(PENDING_KEY)
        table = dict(pending) if isinstance(pending, dict) else {}
        for key in keys:
            table[key] = instance_id
        while len(table) > MAX_PENDING:
            del table[next(iter(table))]
        return {**meta, PENDING_KEY: table}

    await store.update_meta(session_id, add)


async def settle(store: Store, session_id: str, key: str) -> None:
    """Forget a server request once its reply reached the app."""

    def drop(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
        pending = meta.get(PENDING_KEY)
        table = dict(pending) if isinstance(pending, dict) else {}
        table.pop(key, None)
        return {**meta, PENDING_KEY: table}

    await store.update_meta(session_id, drop)


def owner_of(meta: dict[str, JSONValue], key: str) -> str | None:
    pending = meta.get(PENDING_KEY)
    if isinstance(pending, dict):
        owner = pending.get(key)
        return owner if isinstance(owner, str) else None
    return None


async def hand_over(
    store: Store, session_id: str, owner: str, body: bytes, key: str, timeout: float
) -> bool:
    """Give a reply to the process that holds its request; True once it has it."""
    stream_id = reply_stream(owner)
    if await store.load_stream(session_id, stream_id) is None:
        await store.open_stream(session_id, StreamState(stream_id=stream_id))
    await store.append_event(session_id, stream_id, body.decode("utf-8", "replace"))
    with anyio.move_on_after(timeout):
        while True:
            record = await store.load(session_id)
            if record is None or owner_of(record.meta, key) is None:
                return record is not None
            await anyio.sleep(0.05)
    return False


class AppSessionWorker:
    """The outbox pump and reply inbox of one app session held by this process."""

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

    async def run(self) -> None:
        with self.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump)
                tg.start_soon(self._inbox)

    def stop(self) -> None:
        self.scope.cancel()

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
                logger.warning("could not copy the app's GET stream to the store", exc_info=True)

    async def _publish(self, events: list[SSEEvent]) -> None:
        keys = [k for k in (server_request_id(e.data) for e in events) if k is not None]
        if keys:
            await register(self.store, self.session_id, keys, self.instance_id)
        if await self.store.load_stream(self.session_id, STANDALONE_STREAM) is None:
            await self.store.open_stream(self.session_id, StreamState(STANDALONE_STREAM))
        await self.store.append_events(
            self.session_id, STANDALONE_STREAM, [(e.data, e.event) for e in events]
        )

    async def _inbox(self) -> None:
        """Hand replies that reached other instances to this app session."""
        stream_id = reply_stream(self.instance_id)
        try:
            state = await self.store.load_stream(self.session_id, stream_id)
            if state is None:
                state = await self.store.open_stream(self.session_id, StreamState(stream_id))
            last = state.last_seq
            while True:
                events = await self.store.wait_events(
                    self.session_id, stream_id, last, FOLLOW_TIMEOUT
                )
                if not events and await self.store.load_stream(self.session_id, stream_id) is None:
                    return  # the session is gone
                for event in events:
                    last = event.seq
                    await self._deliver(event.data)
        except StoreError:
            logger.warning("the reply inbox of an app session stopped", exc_info=True)

    async def _deliver(self, data: str) -> None:
        try:
            key = client_reply_key(json.loads(data))
        except ValueError:
            return
        answer = await call_and_capture(self.app, self._post_scope, data.encode())
        if not 200 <= answer.status < 300:
            logger.warning("the app refused a relayed reply (%d)", answer.status)
        if key is not None:
            await settle(self.store, self.session_id, key)
