"""Example 4: a stateless SDK server that still has sessions.

``stateless_http=True`` makes the SDK forget everything between requests:
any process can serve any request, but there is no session to keep state in.
Wrapped in the middleware with ``mode="stateless"``, the client still gets an
``Mcp-Session-Id``, and the tool ``count`` keeps counting per session because
the count lives in the middleware's store, not in the app:

    python examples/04_stateless_server.py --port 8000 --store sqlite+aiosqlite:///sessions.db

Stateless apps lose the SDK's GET stream, elicitation and sampling; prefer
example 1 (re-hydration) unless the app is stateless already.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from mcp.server.mcpserver import MCPServer

from mcp_session_mw import SessionMiddleware, Store, current_session


def build_server() -> MCPServer:
    server = MCPServer("stateless-counter")

    @server.tool()
    async def count() -> int:
        """Count the calls made in this MCP session, although the app keeps no session."""
        state = await current_session().update(lambda s: {**s, "calls": s.get("calls", 0) + 1})
        return int(state["calls"])

    return server


def build_app(store: Store | str | None = None, *, host: str = "127.0.0.1") -> SessionMiddleware:
    sdk_app = build_server().streamable_http_app(stateless_http=True, host=host)
    return SessionMiddleware(sdk_app, store=store, mode="stateless")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=os.environ.get("MCP_SESSION_STORE_URL"))
    args = parser.parse_args()
    print(f"MCP endpoint: http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(build_app(args.store, host=args.host), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
