"""A test server whose app fails on demand: the SDK's stateful app behind a fault switch.

Run it like the example servers (see :func:`tests.e2e.server.run_server`)::

    python tests/e2e/faulty_server.py --store sqlite+aiosqlite:///s.db --host 127.0.0.1 --port 8000

The request header ``x-fault`` picks a failure; the app raises
:class:`UpstreamDropped` (what a proxy's read error looks like to the
middleware). The requests the middleware itself sends to the app carry the
headers of the client request that caused them, so a fault can be aimed at
them too:

- ``body``: a ``tools/call`` is answered with an SSE response whose first
  event is a progress notification; then the app raises.
- ``get``: the app session's GET stream (which the middleware opens for a
  session it creates or re-creates on that request) sends one log message,
  then the app raises; once per app session: the next GET reaches the app.
- ``recreate``: the ``initialize`` by which the middleware re-creates the
  session in the app raises.

Tools: ``stream`` (progress 1..n, ``delay_ms`` apart, then ``streamed n``) and
``notify`` (a ``resources/updated`` for :data:`WATCHED`, which the SDK sends on
the session's GET stream).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_session_mw import SessionMiddleware
from mcp_session_mw.logs import log_failure
from mcp_session_mw.rehydrate import RECREATE_REQUEST_ID

FAULT_HEADER = b"x-fault"
WATCHED = "test://watched"
BEFORE_FAULT = "sent before the fault"
"""The data of the log message the faulty GET stream sends before it raises."""
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
QUIET_SECONDS = 3600.0
"""The failure log's rate limit here (see mcp_session_mw.logs): longer than any test."""


class UpstreamDropped(Exception):
    """What the app raises: the upstream it forwards to dropped the connection."""


def build_server() -> MCPServer:
    server = MCPServer("faulty")

    @server.tool()
    async def stream(n: int, ctx: Context, delay_ms: int = 0) -> str:
        """Report progress 1..n of n, ``delay_ms`` apart, then return."""
        for step in range(1, n + 1):
            await ctx.report_progress(step, n, f"step {step} of {n}")
            if delay_ms:
                await anyio.sleep(delay_ms / 1000)
        return f"streamed {n}"

    @server.tool()
    async def notify(ctx: Context) -> str:
        """Send this session a ``resources/updated`` on its GET stream."""
        await ctx.session.send_resource_updated(WATCHED)
        return "notified"

    return server


def _event(message: Mapping[str, object]) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


_SSE_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
}


class Faulty:
    """Pure ASGI: passes every request to ``app`` unless its ``x-fault`` header says otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._failed_gets: set[bytes] = set()
        """App session ids whose GET stream failed once already."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = None
        if scope["type"] == "http":
            fault = dict(scope["headers"]).get(FAULT_HEADER)
        if fault is None:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        app_id = dict(scope["headers"]).get(b"mcp-session-id", b"")
        if fault == b"get" and method == "GET" and app_id not in self._failed_gets:
            self._failed_gets.add(app_id)
            await send(_SSE_START)
            log = {"level": "info", "data": BEFORE_FAULT}
            note = {"jsonrpc": "2.0", "method": "notifications/message", "params": log}
            await send({"type": "http.response.body", "body": _event(note), "more_body": True})
            raise UpstreamDropped("the upstream dropped the GET stream")
        if method != "POST" or fault not in (b"body", b"recreate"):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        request = json.loads(body)
        if fault == b"recreate" and request.get("id") == RECREATE_REQUEST_ID:
            raise UpstreamDropped("the upstream dropped the re-created initialize")
        if fault == b"body" and request.get("method") == "tools/call":
            await send(_SSE_START)
            progress = {"progressToken": 0, "progress": 1, "total": 2, "message": "step 1 of 2"}
            step = {"jsonrpc": "2.0", "method": "notifications/progress", "params": progress}
            await send({"type": "http.response.body", "body": _event(step), "more_body": True})
            raise UpstreamDropped("the upstream dropped the response")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def build_app(store: str, host: str) -> SessionMiddleware:
    return SessionMiddleware(Faulty(build_server().streamable_http_app(host=host)), store=store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    # One line per kind of failure for the whole run, however slow the machine:
    # a test counts them.
    log_failure.interval = QUIET_SECONDS
    uvicorn.run(
        build_app(args.store, args.host), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
