"""UpstreamApp against a real local upstream that misbehaves on cue.

The upstream is a raw HTTP/1.1 server on a loopback port, in the test's own
event loop: it answers ``initialize`` and ``notifications/initialized`` as a
stateful MCP server does, and a ``tools/call`` by the tool's name with one
fault each (garbage instead of HTTP, no answer at all, a body cut short, an
SSE stream dropped half way, an answer too large, the request's own headers
echoed). A port nobody listens on stands for an upstream that is down.
Everything runs behind SessionMiddleware on the memory store, which is how the
proxy runs, except the header tests, which look at UpstreamApp alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from starlette.types import Message

from mcp_session_mw import MemoryStore, SessionMiddleware
from mcp_session_mw.jsonrpc import INTERNAL_ERROR, MSG_APP_SESSION_FAILED
from mcp_session_mw.proxy import UpstreamApp
from mcp_session_mw.proxy.errors import (
    MSG_ANSWER_TOO_LARGE,
    MSG_BROKEN_ANSWER,
    MSG_NOT_STARTED,
    MSG_TIMEOUT,
    MSG_UNREACHABLE,
)
from mcp_session_mw.streams import MSG_NO_RESPONSE

from .asgi_lifespan import ACCEPT, BASE_URL, PROTOCOL_VERSION, lifespan, messages
from .e2e.server import free_port

pytestmark = pytest.mark.anyio

UPSTREAM_SESSION = "upstream-own-session-id"
TIMEOUT = 5.0
"""The proxy's timeout in the tests: only the upstream that never answers waits it out, and
every other answer, on a loaded machine too, comes well within it."""
MAX_ANSWER = 1024
TEST_TIMEOUT = 60.0
PROGRESS = {
    "jsonrpc": "2.0",
    "method": "notifications/progress",
    "params": {"progressToken": "t", "progress": 1},
}

Respond = Callable[[SocketStream, dict[str, Any], dict[str, str]], Awaitable[bool]]
"""Writes the answer to one request; returns False when the connection must close."""


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def _sse(message: Any) -> bytes:
    return f"event: message\ndata: {json.dumps(message)}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _json_answer(stream: SocketStream, body: bytes, **headers: str) -> bool:
    head = {"content-type": "application/json", "content-length": str(len(body)), **headers}
    await stream.send(_head("200 OK", head) + body)
    return True


async def answer(stream: SocketStream, message: dict[str, Any], headers: dict[str, str]) -> bool:
    """The upstream's behaviour, by JSON-RPC method and tool name."""
    method = message.get("method")
    if method == "initialize":
        result = {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "misbehaving", "version": "1"},
        }
        body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
        return await _json_answer(stream, body, **{"mcp-session-id": UPSTREAM_SESSION})
    if method == "notifications/initialized":
        await stream.send(_head("202 Accepted", {"content-length": "0"}))
        return True
    tool = message.get("params", {}).get("name")
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id"), "result": {"content": []}}
    if tool == "garbage":
        await stream.send(b"this is not HTTP at all\r\n\r\n")
        return False
    if tool == "silent":
        await anyio.sleep_forever()
    if tool == "truncated":
        await stream.send(
            _head("200 OK", {"content-type": "application/json", "content-length": "500"})
        )
        await stream.send(b'{"jsonrpc": "2.0", "id"')
        return False
    if tool == "huge":
        return await _json_answer(stream, b" " * (MAX_ANSWER + 1))
    if tool == "dropped":
        sse = {"content-type": "text/event-stream", "transfer-encoding": "chunked"}
        await stream.send(_head("200 OK", sse) + _chunk(_sse(PROGRESS)))
        return False  # no final chunk: the stream breaks off half way
    if tool == "headers":
        reply["result"] = {"headers": headers}
        body = json.dumps(reply).encode()
        hop = {"connection": "x-hop", "x-hop": "1", "keep-alive": "timeout=5", "x-end": "kept"}
        return await _json_answer(stream, body, **hop)
    sse = {"content-type": "text/event-stream", "transfer-encoding": "chunked"}
    await stream.send(_head("200 OK", sse) + _chunk(_sse(reply)) + b"0\r\n\r\n")
    return True


async def _chunked(stream: SocketStream, buffer: bytes) -> tuple[bytes, bytes]:
    """A chunked request body and what follows it."""
    body = b""
    while True:
        while b"\r\n" not in buffer:
            buffer += await stream.receive()
        size_line, _, buffer = buffer.partition(b"\r\n")
        size = int(size_line, 16)
        while len(buffer) < size + 2:
            buffer += await stream.receive()
        body, buffer = body + buffer[:size], buffer[size + 2 :]
        if size == 0:
            return body, buffer


async def serve_connection(stream: SocketStream) -> None:
    """Read HTTP/1.1 requests (Content-Length bodies) and answer each, until told to close."""
    buffer = b""
    async with stream:
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            if headers.get("transfer-encoding") == "chunked":
                body, buffer = await _chunked(stream, buffer)
            else:
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += await stream.receive()
                body, buffer = buffer[:length], buffer[length:]
            message = json.loads(body) if body else {}
            if not await answer(stream, message, headers):
                return


@asynccontextmanager
async def upstream() -> AsyncIterator[str]:
    """The misbehaving upstream's MCP endpoint URL, served while the block runs."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve_connection)
        yield f"http://127.0.0.1:{port}/mcp"
        tg.cancel_scope.cancel()


class Proxy:
    """SessionMiddleware(UpstreamApp) on the memory store, with a raw MCP client."""

    def __init__(self, http: httpx.AsyncClient, store: MemoryStore) -> None:
        self.http = http
        self.store = store
        self.session_id = ""
        self.next_id = 1

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"accept": ACCEPT, "content-type": "application/json", **extra}
        if self.session_id:
            headers["mcp-session-id"] = self.session_id
            headers["mcp-protocol-version"] = PROTOCOL_VERSION
        return headers

    async def initialize(self) -> None:
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "proxy-test", "version": "1"},
        }
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        response = await self.http.post("/mcp", json=init, headers=self.headers())
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        response = await self.http.post("/mcp", json=done, headers=self.headers())
        assert response.status_code == 202, response.text

    async def call(self, tool: str, **headers: str) -> tuple[int, httpx.Response]:
        request_id = self.next_id
        self.next_id += 1
        call = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {}},
        }
        response = await self.http.post("/mcp", json=call, headers=self.headers(**headers))
        return request_id, response


@asynccontextmanager
async def proxy(url: str, store: MemoryStore | None = None, **options: Any) -> AsyncIterator[Proxy]:
    store = store or MemoryStore()
    app = SessionMiddleware(
        UpstreamApp(url, timeout=TIMEOUT, max_answer_size=MAX_ANSWER, **options),
        store=store,
        mode="rehydrate",
    )
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield Proxy(http, store)


def assert_gateway_error(
    response: httpx.Response, status: int, message: str, request_id: int
) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": INTERNAL_ERROR, "message": message},
    }


async def assert_session_intact(client: Proxy) -> None:
    """The session is still there and still works after the failure."""
    assert await client.store.load(client.session_id) is not None
    request_id, response = await client.call("fine")
    assert response.status_code == 200, response.text
    assert [m["id"] for m in messages(response)] == [request_id]


@pytest.mark.parametrize(
    ("tool", "status", "message"),
    [
        ("garbage", 502, MSG_BROKEN_ANSWER),
        ("truncated", 502, MSG_BROKEN_ANSWER),
        ("huge", 502, MSG_ANSWER_TOO_LARGE),
        ("silent", 504, MSG_TIMEOUT),
    ],
)
async def test_a_broken_or_missing_answer_is_a_gateway_error_and_the_session_stays(
    tool: str, status: int, message: str
) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with upstream() as url, proxy(url) as client:
            await client.initialize()
            request_id, response = await client.call(tool)
            assert_gateway_error(response, status, message, request_id)
            await assert_session_intact(client)


async def test_an_unreachable_upstream_is_502_and_initialize_records_no_session() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nobody listens there
    with anyio.fail_after(TEST_TIMEOUT):
        async with proxy(url) as client:
            init = {"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {}}
            response = await client.http.post("/mcp", json=init, headers=client.headers())
            assert_gateway_error(response, 502, MSG_UNREACHABLE, 7)
            assert (await client.store.list_active()).records == []


async def test_a_session_to_re_create_on_an_unreachable_upstream_is_502_and_stays() -> None:
    """Another proxy on the same store, whose upstream is down, must re-create the session."""
    down = f"http://127.0.0.1:{free_port()}/mcp"
    with anyio.fail_after(TEST_TIMEOUT):
        async with upstream() as url, proxy(url) as first:
            await first.initialize()
            async with proxy(down, first.store) as second:
                second.session_id = first.session_id
                request_id, response = await second.call("fine")
                assert_gateway_error(response, 502, MSG_APP_SESSION_FAILED, request_id)
            await assert_session_intact(first)


async def test_a_stream_dropped_half_way_ends_with_an_error_for_its_request() -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with upstream() as url, proxy(url) as client:
            await client.initialize()
            request_id, response = await client.call("dropped")
            assert response.status_code == 200
            got = messages(response)
            error = {"code": INTERNAL_ERROR, "message": MSG_NO_RESPONSE}
            assert got == [PROGRESS, {"jsonrpc": "2.0", "id": request_id, "error": error}]
            # Both were stored: a client resuming after the progress event gets the error.
            first = next(x for x in response.text.splitlines() if x.startswith("id:"))
            resume = client.headers(**{"last-event-id": first[3:].strip()})
            replay = await client.http.get("/mcp", headers=resume)
            assert messages(replay) == got[1:]
            await assert_session_intact(client)


async def test_the_upstream_gets_reverse_proxy_headers_and_the_client_only_its_own() -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with upstream() as url, proxy(url, headers={"X-Api-Key": "k1"}) as client:
            await client.initialize()
            sent = {
                "authorization": "Bearer t0ken",
                "connection": "x-private",
                "x-private": "hop",
                "te": "trailers",
                "x-forwarded-for": "203.0.113.9",
                "x-api-key": "from-client",
            }
            _, response = await client.call("headers", **sent)
            assert response.status_code == 200, response.text
            [reply] = messages(response)
            seen = reply["result"]["headers"]
            host = url.split("/")[2]
            assert seen["host"] == host
            assert seen["authorization"] == "Bearer t0ken"
            assert seen["mcp-session-id"] == UPSTREAM_SESSION  # the app's, not the client's
            assert seen["mcp-protocol-version"] == PROTOCOL_VERSION
            assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
            assert seen["x-forwarded-host"] == BASE_URL.split("/")[2]
            assert seen["x-forwarded-proto"] == "http"
            assert seen["x-api-key"] == "k1"
            assert seen["accept-encoding"] == "identity"
            assert seen["user-agent"].startswith("python-httpx")  # the client's own
            assert not {"x-private", "te"} & seen.keys()
            # Hop-by-hop answer headers are dropped; the rest pass, with the durable id.
            assert response.headers["x-end"] == "kept"
            assert "x-hop" not in response.headers
            assert "keep-alive" not in response.headers
            assert response.headers["mcp-session-id"] == client.session_id


async def test_a_request_before_the_lifespan_ran_is_503() -> None:
    app = UpstreamApp("http://127.0.0.1:9/mcp")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
        response = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "ping"})
    assert_gateway_error(response, 503, MSG_NOT_STARTED, 3)


async def test_bare_upstream_app_streams_a_long_request_body() -> None:
    """A body the server hands over in pieces goes upstream in pieces, then is answered."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with upstream() as url, UpstreamApp(url) as app:
            body = json.dumps(
                {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "headers"}}
            ).encode()
            parts = [body[:10], body[10:]]
            sent: list[Message] = []

            async def receive() -> Message:
                if parts:
                    piece = parts.pop(0)
                    return {"type": "http.request", "body": piece, "more_body": bool(parts)}
                await anyio.sleep_forever()
                raise AssertionError  # pragma: no cover

            async def send(message: Message) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/mcp",
                "query_string": b"",
                "headers": [(b"content-type", b"application/json")],
                "client": ("127.0.0.1", 5000),
                "scheme": "http",
            }
            await app(scope, receive, send)
    start, whole = sent
    assert start["status"] == 200
    reply = json.loads(whole["body"])
    assert reply["id"] == 5  # the upstream read the whole body
    assert reply["result"]["headers"]["transfer-encoding"] == "chunked"
    assert dict(start["headers"])[b"content-length"] == str(len(whole["body"])).encode()
