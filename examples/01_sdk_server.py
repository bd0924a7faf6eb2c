"""Example 1: the official SDK server, unchanged and stateful, with durable sessions.

The tool ``count`` counts calls per session in the middleware's session state,
so the count survives a restart of this process and is shared by every
process on the same store.

    python examples/01_sdk_server.py --port 8000            # SQLite file ./mcp_sessions.db
    MCP_SESSION_STORE_URL=redis://127.0.0.1:6379/0 python examples/01_sdk_server.py
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from mcp_session_mw import SessionMiddleware, current_session


def build_server() -> MCPServer:
    server = MCPServer("counter")

    @server.tool()
    async def count() -> int:
        """Count the calls made in this MCP session; the count is durable."""
        state = await current_session().update(lambda s: {**s, "calls": s.get("calls", 0) + 1})
        return int(state["calls"])

    @server.tool()
    async def whoami() -> str:
        """The protocol version and client this session was opened with."""
        session = current_session()
        return f"{session.client_info.get('name', '?')} on {session.protocol_version}"

    return server


def build_app(store: str | None = None, *, stateless: bool = False) -> ASGIApp:
    """The SDK's Starlette app for the server above, wrapped in the middleware."""
    sdk_app = build_server().streamable_http_app(stateless_http=stateless)
    return SessionMiddleware(sdk_app, store=store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=os.environ.get("MCP_SESSION_STORE_URL"))
    parser.add_argument("--stateless", action="store_true", help="run the SDK app stateless")
    args = parser.parse_args()
    print(f"MCP endpoint: http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(build_app(args.store, stateless=args.stateless), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
