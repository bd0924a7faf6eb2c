"""The MCP server the official conformance suite (`conformance/run.sh`) is run against.

It is an ordinary MCPServer app from the `mcp` 2.3.0 SDK with every tool and
resource the handshake-lane scenarios we gate on call (server-initialize,
server-session-lifecycle, server-sse-polling, server-sse-multiple-streams, ping,
tools-call-with-progress, tools-call-elicitation, tools-call-sampling,
logging-set-level, tools-call-with-logging, resources-subscribe,
resources-unsubscribe). It exists so the suite measures the session layer, not a
toy server: run it bare to see what the SDK does alone, and wrapped in
`SessionMiddleware` to see what the middleware keeps or fixes.

Run it::

    python examples/05_conformance_server.py --host 127.0.0.1 --port 8001 [--stateless]
        [--no-middleware]

`build_app()` returns the bare SDK Starlette app; `wrap_app()` is the one place
the session middleware is put around it.

Where this file goes beyond plain MCPServer usage, and why:

1. MCPServer 2.3.0 has no decorator for `logging/setLevel`, `resources/subscribe`
   or `resources/unsubscribe`, and the SDK advertises the `logging` capability and
   `resources.subscribe` only when those methods have handlers. They are added on
   the low-level server through `mcp.session_manager.app.add_request_handler`,
   which is public (the session manager exists once `streamable_http_app()` ran).
2. The SDK ships no EventStore implementation, and SSE polling (SEP-1699) needs
   one: `ctx.close_sse_stream()` is a no-op without it. `MemoryEventStore` below
   is a small bounded one. The SDK keys event streams by JSON-RPC request id
   (and `_GET_stream` for every session's GET stream), so two sessions that use
   the same request id share a stream name; event ids here are globally unique,
   which keeps replay correct for the suite's one-session-at-a-time traffic but
   is exactly the weakness the durable middleware replaces.
3. The per-session log level and subscriptions live in a small bounded map keyed
   by the `Mcp-Session-Id` header the app sees, because MCPServer gives handlers
   no public per-session scratch space. In stateless mode there is no id, so the
   level is never narrowed and subscriptions are accepted but not remembered.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, get_args

import anyio
import uvicorn
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp

# Logging, sampling and elicitation are deprecated for protocol 2026-07-28 only;
# the handshake-lane scenarios this server exists for still use them.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

SERVER_NAME = "mcp-session-mw-conformance"
WATCHED_RESOURCE = "test://watched-resource"
SESSION_HEADER = "mcp-session-id"
RETRY_INTERVAL_MS = 1000
"""The SSE `retry` the SDK puts on priming events: how long a client waits before resuming."""
MAX_EVENTS = 10_000
MAX_SESSIONS_REMEMBERED = 1_024
STEP_DELAY = 0.05
"""The suite's logging and progress scenarios ask for ~50 ms between notifications."""
RECONNECT_DELAY = 0.2
"""How long test_reconnection keeps working after cutting its stream: the result comes after."""

LOG_LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)
NO_MIDDLEWARE_NOTICE = "mcp_session_mw.SessionMiddleware is not available; serving the bare SDK app"


class MemoryEventStore(EventStore):
    """A bounded in-process event store so the SDK can prime, cut and replay SSE streams."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self._ids = itertools.count(1)
        self._events: deque[tuple[int, StreamId, types.JSONRPCMessage | None]] = deque(
            maxlen=max_events
        )

    async def store_event(
        self, stream_id: StreamId, message: types.JSONRPCMessage | None
    ) -> EventId:
        number = next(self._ids)
        self._events.append((number, stream_id, message))
        return str(number)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        if not last_event_id.isdigit():
            return None
        after = int(last_event_id)
        stream_id = next((s for n, s, _ in self._events if n == after), None)
        if stream_id is None:
            return None
        for number, stream, message in list(self._events):
            if number > after and stream == stream_id and message is not None:
                await send_callback(EventMessage(message, str(number)))
        return stream_id


@dataclass
class SessionMemory:
    """What one app session asked for: its minimum log level and its subscriptions."""

    level: types.LoggingLevel | None = None
    subscriptions: set[str] = field(default_factory=set)


class SessionMemories:
    """Bounded map from the app's session id to its SessionMemory (oldest dropped first)."""

    def __init__(self, limit: int = MAX_SESSIONS_REMEMBERED) -> None:
        self._limit = limit
        self._items: OrderedDict[str, SessionMemory] = OrderedDict()

    def get(self, session_id: str | None) -> SessionMemory:
        if session_id is None:
            return SessionMemory()
        memory = self._items.get(session_id)
        if memory is None:
            memory = self._items[session_id] = SessionMemory()
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        self._items.move_to_end(session_id)
        return memory


class UserInfo(BaseModel):
    """The form tools-call-elicitation expects the server to request."""

    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


def _session_id_of(request: object) -> str | None:
    return request.headers.get(SESSION_HEADER) if isinstance(request, Request) else None


def _tool_session_id(ctx: Context) -> str | None:
    headers = ctx.headers
    return headers.get(SESSION_HEADER) if headers is not None else None


def build_server(memories: SessionMemories) -> MCPServer:
    """The MCPServer with the suite's tools and resources (low-level handlers come later)."""
    mcp: MCPServer = MCPServer(SERVER_NAME, version="1.0.0")

    @mcp.resource(WATCHED_RESOURCE, name="watched-resource", mime_type="text/plain")
    def watched_resource() -> str:
        """A resource clients subscribe to (resources-subscribe, resources-unsubscribe)."""
        return "This resource is watched for updates."

    @mcp.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info log notifications about 50 ms apart (tools-call-with-logging)."""
        level = memories.get(_tool_session_id(ctx)).level
        for index, text in enumerate(
            ("Tool execution started", "Tool processing data", "Tool execution completed")
        ):
            if index:
                await anyio.sleep(STEP_DELAY)
            if level is None or LOG_LEVELS.index("info") >= LOG_LEVELS.index(level):
                await ctx.info(text)
        return "Tool with logging executed successfully"

    @mcp.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100 (tools-call-with-progress)."""
        for index, done in enumerate((0, 50, 100)):
            if index:
                await anyio.sleep(STEP_DELAY)
            await ctx.report_progress(done, 100, f"{done}% done")
        return "Tool with progress executed successfully"

    @mcp.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's model to answer `prompt` (tools-call-sampling)."""
        wanted = types.ClientCapabilities(sampling=types.SamplingCapability())
        if not ctx.session.check_client_capability(wanted):
            raise ValueError("The client did not declare the sampling capability")
        result = await ctx.session.create_message(
            messages=[
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=prompt)
                )
            ],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else content.model_dump_json()
        return f"LLM response: {text}"

    @mcp.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user for a username and email (tools-call-elicitation)."""
        wanted = types.ClientCapabilities(elicitation=types.ElicitationCapability())
        if not ctx.session.check_client_capability(wanted):
            raise ValueError("The client did not declare the elicitation capability")
        answer = await ctx.elicit(message, schema=UserInfo)
        content: dict[str, Any] | None = (
            answer.data.model_dump() if answer.action == "accept" else None
        )
        return f"User response: action={answer.action}, content={json.dumps(content)}"

    @mcp.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Cuts its own SSE stream, then answers, so the client must resume (server-sse-polling)."""
        await ctx.close_sse_stream()
        await anyio.sleep(RECONNECT_DELAY)
        return "Reconnection test completed successfully"

    @mcp.tool()
    async def update_watched_resource(ctx: Context) -> str:
        """Notifies this session of a change to the watched resource, if it subscribed.

        Not used by the suite; it lets session tests check that a subscription
        survives (the notification rides the session's GET stream).
        """
        if WATCHED_RESOURCE not in memories.get(_tool_session_id(ctx)).subscriptions:
            return "not subscribed"
        await ctx.session.send_resource_updated(WATCHED_RESOURCE)
        return "notified"

    return mcp


def add_session_handlers(mcp: MCPServer, memories: SessionMemories) -> None:
    """Serve logging/setLevel and resources/(un)subscribe (divergence 1 in the module docstring)."""

    async def set_level(
        ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        memories.get(_session_id_of(ctx.request)).level = params.level
        return types.EmptyResult()

    async def subscribe(
        ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        memories.get(_session_id_of(ctx.request)).subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        memories.get(_session_id_of(ctx.request)).subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    lowlevel = mcp.session_manager.app
    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe
    )


def build_app(stateless: bool = False, host: str = "127.0.0.1") -> Starlette:
    """The bare SDK Starlette app serving /mcp: stateful by default, with SSE resumability.

    `host` only feeds the SDK's DNS-rebinding protection, which it turns on for
    loopback hosts (Host must be 127.0.0.1:*, localhost:* or [::1]:*).
    """
    memories = SessionMemories()
    mcp = build_server(memories)
    if stateless:
        # The SDK ignores event_store and retry_interval in stateless mode anyway.
        app = mcp.streamable_http_app(stateless_http=True, host=host)
    else:
        app = mcp.streamable_http_app(
            event_store=MemoryEventStore(), retry_interval=RETRY_INTERVAL_MS, host=host
        )
    add_session_handlers(mcp, memories)
    return app


def wrap_app(app: Starlette) -> ASGIApp:
    """THE place the session middleware goes around the app.

    Until `mcp_session_mw.SessionMiddleware` exists this serves the bare app and
    says so on stderr.
    """
    try:
        from mcp_session_mw import (  # type: ignore[attr-defined,unused-ignore]
            SessionMiddleware,
        )
    except ImportError:
        print(NO_MIDDLEWARE_NOTICE, file=sys.stderr)
        return app
    store = os.environ.get("MCP_SESSION_STORE_URL", "memory://")
    wrapped: ASGIApp = SessionMiddleware(app, store=store)
    return wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--stateless", action="store_true", help="run the SDK in stateless mode")
    parser.add_argument(
        "--no-middleware",
        action="store_true",
        help="serve the bare SDK app, without SessionMiddleware",
    )
    args = parser.parse_args(argv)
    app = build_app(stateless=args.stateless, host=args.host)
    served: ASGIApp = app if args.no_middleware else wrap_app(app)
    uvicorn.run(served, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
