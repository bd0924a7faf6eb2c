"""Small ASGI plumbing: bounded body reads, replayed bodies, captured responses."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing more than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


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


def with_headers(
    scope: Scope, set_headers: dict[bytes, bytes], drop: frozenset[bytes] = frozenset()
) -> Scope:
    """A copy of an HTTP scope with some headers replaced, added or removed."""
    names = set(set_headers) | set(drop)
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in names]
    headers.extend(set_headers.items())
    new_scope = dict(scope)
    new_scope["headers"] = headers
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
