"""Small ASGI plumbing: bounded body reads, replayed bodies, captured responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .protocol import LAST_EVENT_ID_HEADER, SESSION_HEADER, VERSION_HEADER


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing more than ``limit`` bytes."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # all of it in one message: the usual
        if len(body) > limit:
            raise BodyTooLarge
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


DRAIN_BYTES = 64 * 1024 * 1024
"""At most this much of a refused body is read (and dropped) before the refusal is sent."""
DRAIN_SECONDS = 5.0
"""... and for no longer than this."""


async def drain_body(
    receive: Receive, max_bytes: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS
) -> bool:
    """Read and drop the rest of a request body, up to a bound; True if it all came.

    A server that answers while the client is still sending, then closes,
    resets the connection, and the client loses the answer with it; reading
    the rest first lets it read the answer. The bounds keep a client from
    holding the connection with a body that never ends.
    """
    size = 0
    with anyio.move_on_after(seconds):
        while size <= max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return False
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
    return False


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def body_only(body: bytes) -> Receive:
    """A ``receive`` for internal requests: the body, then nothing until cancelled.

    An immediate ``http.disconnect`` would make an SSE-answering app abandon
    its response before writing it.
    """
    return replay_body(body, wait_forever)


async def wait_forever() -> Message:
    await anyio.sleep_forever()
    return {"type": "http.disconnect"}  # pragma: no cover - sleep_forever never returns


@dataclass
class CapturedResponse:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return Headers(raw=self.headers).get(name)


async def call_and_capture(app: ASGIApp, scope: Scope, body: bytes) -> CapturedResponse:
    """Run ``app`` on an internal request and buffer its (small) response."""
    captured = CapturedResponse()
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.status = message["status"]
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, body_only(body), send)
    captured.body = b"".join(chunks)
    return captured


class RequestHeads:
    """The request headers the middleware reads, found in one pass over the raw list.

    ASGI servers give header names in lowercase; values are latin-1, as in
    Starlette's ``Headers``. A header repeated keeps every value, in order.
    When no name repeats (nearly every request), the raw list is made a dict
    in C and read by name; ``named`` keeps that dict for :func:`with_headers`.
    """

    __slots__ = ("accept", "content_types", "last_event_ids", "named", "session_ids", "version")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        named = dict(raw)
        if len(named) != len(raw):
            self.named: dict[bytes, bytes] | None = None
            self._scan(raw)
            return
        self.named = named
        get = named.get
        value = get(b"mcp-protocol-version")
        self.version: str | None = None if value is None else value.decode("latin-1")
        value = get(b"accept")
        self.accept: str | None = None if value is None else value.decode("latin-1")
        value = get(b"mcp-session-id")
        self.session_ids = [] if value is None else [value.decode("latin-1")]
        value = get(b"content-type")
        self.content_types = [] if value is None else [value.decode("latin-1")]
        value = get(b"last-event-id")
        self.last_event_ids = [] if value is None else [value.decode("latin-1")]

    def _scan(self, raw: list[tuple[bytes, bytes]]) -> None:
        version = accept = None
        session_ids: list[str] = []
        content_types: list[str] = []
        last_event_ids: list[str] = []
        for name, value in raw:
            if name == b"mcp-session-id":
                session_ids.append(value.decode("latin-1"))
            elif name == b"content-type":
                content_types.append(value.decode("latin-1"))
            elif name == b"mcp-protocol-version":
                if version is None:
                    version = value.decode("latin-1")
            elif name == b"accept":
                if accept is None:
                    accept = value.decode("latin-1")
            elif name == b"last-event-id":
                last_event_ids.append(value.decode("latin-1"))
        self.version = version
        self.accept = accept
        self.session_ids = session_ids
        self.content_types = content_types
        self.last_event_ids = last_event_ids


def header_too_large(raw: list[tuple[bytes, bytes]], max_size: int) -> bool:
    """True if a header's name and value together exceed ``max_size`` bytes."""
    # All headers together within the limit (the usual case) is one sum, in C.
    if sum(map(len, chain.from_iterable(raw))) <= max_size:
        return False
    return any(len(name) + len(value) > max_size for name, value in raw)


def with_headers(
    scope: Scope,
    set_headers: dict[bytes, bytes],
    drop: frozenset[bytes] = frozenset(),
    named: dict[bytes, bytes] | None = None,
) -> Scope:
    """A copy of an HTTP scope with some headers replaced, added or removed.

    Names in ``set_headers`` and ``drop`` are lowercase, and a header of the
    scope goes whatever the case of its name. ``named`` is the scope's headers
    as a dict (:attr:`RequestHeads.named`): when every name in it is lowercase,
    the copy is made from it in C.
    """
    if named is not None and b"".join(named).islower():
        copied = named.copy()
        for name in drop:
            copied.pop(name, None)
        copied.update(set_headers)
        headers = list(copied.items())
    else:
        names = set(set_headers) | set(drop)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in names]
        headers.extend(set_headers.items())
    new_scope = dict(scope)
    new_scope["headers"] = headers
    return new_scope


_INTERNAL_DROP = frozenset(
    {
        SESSION_HEADER.encode(),
        VERSION_HEADER.encode(),
        LAST_EVENT_ID_HEADER.encode(),
        b"content-length",
        b"content-type",
        b"accept",
    }
)


def internal_scope(scope: Scope, method: str, headers: dict[bytes, bytes]) -> Scope:
    """An internal request on the client's endpoint, keeping its auth and Host/Origin.

    The middleware's own requests to the app (re-creating a session, the
    relay's GET and POST) go out on it: the client's session, version,
    ``Last-Event-ID`` and body headers are dropped and ``headers`` set.
    """
    new_scope = with_headers(scope, headers, drop=_INTERNAL_DROP)
    new_scope["method"] = method
    return new_scope


async def send_empty(
    send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": b""})
