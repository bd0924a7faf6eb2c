"""The least a durable-session middleware must do per call: a yardstick, not a product.

``FloorMiddleware`` wraps the SDK's stateful app and does, per ``tools/call``,
only what the guarantees of ``mcp_session_mw`` cannot do without:

1. read the body and parse the JSON-RPC message;
2. check the session before the app runs (a dict lookup, or with Redis one
   ``GET`` round trip, or one ``SELECT`` on SQL (``bench/floor_sql.py``): a
   session deleted on another instance must not run a tool);
3. swap the client's session id for the app's and call the app;
4. split the app's SSE body into events and store each one before it is sent
   (a list append, or with Redis one ``RPUSH`` round trip, or on SQL one
   committed ``INSERT``);
5. send the events with ids of its own, ending the response.

Nothing else: no limits, principals, TTLs, leases, priming events, metrics,
streams cap, relay or setup replay, no error handling, raw sockets to Redis
with no pool. ``bench/floor.py`` compares it with the SDK alone and with
``SessionMiddleware`` on the same store: the ratio it reaches is the best any
middleware with those two guarantees could reach on this machine.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Protocol
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SESSION = b"mcp-session-id"


class _Redis:
    """One raw RESP connection per waiting caller, reused; replies read to their first line."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self, *args: bytes) -> bytes:
        conn = (
            self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        )
        command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        conn[1].write(command)
        line = await conn[0].readuntil(b"\r\n")
        if line[:1] == b"$" and line != b"$-1\r\n":
            line = await conn[0].readexactly(int(line[1:-2]) + 2)
        self.idle.append(conn)
        return line

    async def check(self, session_id: str) -> None:
        await self.call(b"GET", b"floor:" + session_id.encode())

    async def add(self, session_id: str, app_id: bytes) -> None:
        pass  # the check reads a key that is never set: one round trip all the same

    async def store(self, stream: bytes, seq: int, data: bytes) -> None:
        await self.call(b"RPUSH", b"floor:" + stream, data)

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class FloorBackend(Protocol):
    async def check(self, session_id: str) -> None: ...
    async def add(self, session_id: str, app_id: bytes) -> None: ...
    async def store(self, stream: bytes, seq: int, data: bytes) -> None: ...
    async def close(self) -> None: ...


def floor_backend(where: str, prefix: str | None) -> FloorBackend | None:
    """None for 'memory' (dicts only), else the Redis or SQL backend at the URL ``where``."""
    if where == "memory":
        return None
    if where.startswith("redis"):
        return _Redis(urlsplit(where).port or 6379)
    from floor_sql import sql_floor

    return sql_floor(where, prefix or "floor_")


class FloorMiddleware:
    def __init__(self, app: ASGIApp, backend: FloorBackend | None = None) -> None:
        self.app = app
        self.backend = backend
        self.sessions: dict[str, bytes] = {}  # durable id -> the app's id
        self.events: dict[bytes, list[bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.backend is not None:
            await self.app(scope, self._closing(receive), send)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        session_id = next((v.decode() for k, v in scope["headers"] if k == _SESSION), None)
        if request.get("method") == "initialize":
            await self._initialize(scope, body, send)
            return
        if self.backend is not None:
            await self.backend.check(session_id or "")
        app_id = self.sessions[session_id or ""]
        headers = [(k, v) for k, v in scope["headers"] if k != _SESSION]
        headers.append((_SESSION, app_id))
        done = asyncio.Event()
        stream = secrets.token_hex(8).encode()
        stored = self.events.setdefault(stream, [])
        head: Message | None = None

        async def app_send(message: Message) -> None:
            nonlocal head
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, session_id.encode() if k == _SESSION and session_id else v)
                    for k, v in message["headers"]
                ]
                head = message
                return
            out = []
            for frame in message.get("body", b"").split(b"\r\n\r\n"):
                data = b"\n".join(
                    line[5:].lstrip() for line in frame.split(b"\r\n") if line[:5] == b"data:"
                )
                if data:
                    stored.append(data)
                    if self.backend is not None:
                        await self.backend.store(stream, len(stored), data)
                    out.append(b"id: %s_%d\ndata: %s\n\n" % (stream, len(stored), data))
            if head is not None:
                await send(head)
                head = None
            more = bool(message.get("more_body"))
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": more})
            if not more:
                done.set()

        await self.app({**scope, "headers": headers}, body_then_disconnect(body, done), app_send)

    def _closing(self, receive: Receive) -> Receive:
        """The lifespan's receive: at shutdown, close the backend's connections first."""

        async def closing() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self.backend is not None:
                await self.backend.close()
            return message

        return closing

    async def _initialize(self, scope: Scope, body: bytes, send: Send) -> None:
        done = asyncio.Event()

        async def app_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ours = secrets.token_hex(16)
                headers = []
                for name, value in message["headers"]:
                    if name == _SESSION:
                        self.sessions[ours] = value
                        if self.backend is not None:
                            await self.backend.add(ours, value)
                        value = ours.encode()
                    headers.append((name, value))
                message["headers"] = headers
            elif not message.get("more_body"):
                done.set()
            await send(message)

        await self.app(scope, body_then_disconnect(body, done), app_send)


def drop_floor_keys(url: str) -> int:
    """Delete what floor runs stored in the Redis at ``url`` (every ``floor:`` key)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        dropped = 0
        batch: list[bytes] = []
        for name in client.scan_iter(match="floor:*", count=1000):
            batch.append(name)
            if len(batch) == 1000:
                dropped += client.unlink(*batch)
                batch.clear()
        if batch:
            dropped += client.unlink(*batch)
        return dropped
    finally:
        client.close()


def body_then_disconnect(body: bytes, done: asyncio.Event) -> Receive:
    """The body, then ``http.disconnect`` once the response is complete (as a server says)."""
    given = False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    return receive
