"""The server of the request, session, memory and scale benchmarks (bench/suite.py).

One SDK ``MCPServer`` (mcp 2.3.0) with two tools: ``echo`` returns its
argument (the cheapest call there is, so what is measured is the transport
and the middleware, not the tool), and ``ticks`` reports progress ``n`` times,
``interval`` seconds apart, each carrying the server's wall clock at the
moment of the emit, so a client on the same machine can time emit → receive.

Variants, all in the same kind of uvicorn process:

    python bench/app_server.py --port 8001                       # SDK stateful
    python bench/app_server.py --port 8001 --events              # + in-memory event store
    python bench/app_server.py --port 8001 --stateless           # SDK stateless
    python bench/app_server.py --port 8002 --store redis://127.0.0.1:6379/0 --prefix b:
    python bench/app_server.py --port 8002 --stateless --store memory://
    python bench/app_server.py --port 8003 --floor redis://127.0.0.1:6379/0   # bench/floor_app.py

With ``--store`` the app is wrapped in SessionMiddleware, in re-hydration mode
for the stateful app and stateless mode for the stateless one (set, not
guessed from the first initialize).

``--minimal`` serves, instead of the SDK, a few lines of JSON-RPC that answer
``initialize`` and ``tools/call`` with JSON and keep nothing (always
stateless): what is left in the process is then the middleware's own, which is
what the memory benchmark wants to see.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import OrderedDict

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.types import JSONRPCMessage
from starlette.types import ASGIApp, Receive, Scope, Send
from stream_server import store_options

from mcp_session_mw import SessionMiddleware

KEEP_ALIVE = 600
"""Idle seconds uvicorn keeps a connection: the load generator's connections live a whole run."""
MAX_EVENTS = 100_000


class MemoryEventStore(EventStore):
    """A bounded in-memory event store: what an SDK user adds for resumable streams.

    The SDK ships the interface only; this is the usual shape of one (events
    kept in arrival order, the oldest dropped past ``MAX_EVENTS``), and like
    any in-memory store it is lost on restart.
    """

    def __init__(self) -> None:
        self._events: OrderedDict[str, tuple[str, JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        if len(self._events) > MAX_EVENTS:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        if last_event_id not in self._events:
            return None
        stream_id = self._events[last_event_id][0]
        found = False
        for event_id, (sid, message) in list(self._events.items()):
            if found and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
            found = found or event_id == last_event_id
        return stream_id


def build_server() -> MCPServer:
    server = MCPServer("request-bench")

    @server.tool()
    async def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    async def ticks(n: int, interval: float, ctx: Context) -> str:
        """Report progress n times, interval seconds apart; each message is the emit time."""
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, message=repr(time.time()))
            if i < n:
                await anyio.sleep(interval)
        return f"sent {n}"

    return server


async def minimal_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A stateless MCP endpoint in a few lines: JSON answers, nothing kept."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    request = json.loads(body) if body else {}
    if scope["method"] != "POST" or "id" not in request:
        status, answer = 202, b""
    else:
        result = (
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "m", "version": "1"},
            }
            if request.get("method") == "initialize"
            else {"content": [{"type": "text", "text": "hi"}], "isError": False}
        )
        status = 200
        answer = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(answer)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def build_app(
    *,
    stateless: bool,
    events: bool,
    store: str | None,
    prefix: str | None,
    minimal: bool = False,
    floor: str | None = None,
) -> ASGIApp:
    if minimal:
        stateless = True
    sdk_app: ASGIApp = (
        minimal_app
        if minimal
        else build_server().streamable_http_app(
            stateless_http=stateless, event_store=MemoryEventStore() if events else None
        )
    )
    if floor is not None:
        from floor_app import FloorMiddleware, floor_backend

        return FloorMiddleware(sdk_app, floor_backend(floor, prefix))
    if store is None:
        return sdk_app
    return SessionMiddleware(
        sdk_app,
        store=store,
        store_options=store_options(store, prefix),
        mode="stateless" if stateless else "rehydrate",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stateless", action="store_true", help="the SDK app in stateless mode")
    parser.add_argument("--events", action="store_true", help="the SDK's resumability on")
    parser.add_argument("--store", help="wrap the app in SessionMiddleware on this store URL")
    parser.add_argument("--prefix", help="table prefix (SQL) or key prefix (Redis)")
    parser.add_argument("--minimal", action="store_true", help="a stateless JSON-RPC stub, no SDK")
    parser.add_argument(
        "--floor", help="wrap in bench/floor_app.py instead: 'memory', a redis:// or SQL URL"
    )
    args = parser.parse_args()
    app = build_app(
        stateless=args.stateless,
        events=args.events,
        store=args.store,
        prefix=args.prefix,
        minimal=args.minimal,
        floor=args.floor,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
