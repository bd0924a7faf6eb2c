"""ASGI test helpers: run an app's lifespan, speak raw MCP JSON-RPC over httpx.

``httpx.ASGITransport`` sends only ``http`` scopes, so an app whose lifespan
starts something (the MCP SDK's session manager, a store) must have it driven
by hand. :func:`lifespan` is deliberately separate from
``mcp_session_mw.mount``: tests of the mount helper should not lean on the
code they test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from starlette.types import ASGIApp, Message

ACCEPT = "application/json, text/event-stream"
PROTOCOL_VERSION = "2025-06-18"
BASE_URL = "http://127.0.0.1:8000"
"""The SDK's DNS-rebinding guard accepts loopback hosts with a port."""


class LifespanFailed(AssertionError):
    """The app answered ``startup.failed`` or ``shutdown.failed``; ``__cause__`` is its error."""


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Start ``app``, yield the lifespan state, shut it down; a failure raises LifespanFailed."""
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    inbox_send, inbox = anyio.create_memory_object_stream[Message](2)
    outbox, outbox_receive = anyio.create_memory_object_stream[Message](2)
    errors: list[Exception] = []

    async def run() -> None:
        async with outbox:
            try:
                await app(scope, inbox.receive, outbox.send)
            except Exception as exc:
                errors.append(exc)

    async def answer() -> Message:
        message = await outbox_receive.receive()
        if message["type"].endswith(".failed"):
            async for _ in outbox_receive:
                pass  # until the app returns, so its exception is recorded
        return message

    # Raised after the task group, which would wrap it in an ExceptionGroup.
    failed: Message | None = None
    async with anyio.create_task_group() as tasks, inbox_send, inbox, outbox_receive:
        tasks.start_soon(run)
        await inbox_send.send({"type": "lifespan.startup"})
        started = await answer()
        if started["type"] != "lifespan.startup.complete":
            failed = started
        else:
            try:
                yield state
            finally:
                await inbox_send.send({"type": "lifespan.shutdown"})
                stopped = await answer()
            if stopped["type"] != "lifespan.shutdown.complete":
                failed = stopped
    if failed is not None:
        raise LifespanFailed(failed.get("message", failed["type"])) from (
            errors[0] if errors else None
        )


def messages(response: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of a JSON or SSE response body."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return [response.json()] if response.content else []
    found: list[Any] = []
    data: list[str] = []
    for line in [*response.text.replace("\r\n", "\n").split("\n"), ""]:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            text = "\n".join(data)
            data = []
            if text:
                found.append(json.loads(text))
    return found


class RawMCP:
    """A minimal MCP client speaking JSON-RPC over plain HTTP, to see every status and header."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.session_id: str | None = None
        self._ids = itertools.count(1)

    def headers(self) -> dict[str, str]:
        headers = {"accept": ACCEPT, "content-type": "application/json"}
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
            headers["mcp-protocol-version"] = PROTOCOL_VERSION
        return headers

    async def post(self, message: dict[str, Any]) -> httpx.Response:
        return await self.client.post(self.url, headers=self.headers(), json=message)

    async def initialize(self) -> httpx.Response:
        """``initialize`` then ``notifications/initialized``; keeps the session id."""
        response = await self.post(
            {
                "jsonrpc": "2.0",
                "id": next(self._ids),
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test-client", "version": "1"},
                },
            }
        )
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        initialized = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert initialized.status_code == 202, initialized.text
        return response

    async def request(self, method: str, params: dict[str, Any] | None = None) -> httpx.Response:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            message["params"] = params
        return await self.post(message)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """The tool's structured result; fails the test on any error."""
        response = await self.request("tools/call", {"name": name, "arguments": arguments or {}})
        assert response.status_code == 200, response.text
        (answer,) = [m for m in messages(response) if "id" in m]
        assert "result" in answer, answer
        assert not answer["result"].get("isError"), answer
        return answer["result"]["structuredContent"]["result"]
