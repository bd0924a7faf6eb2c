"""Example 3: a FastMCP server with durable sessions, stateful or stateless.

FastMCP's ``http_app()`` is a Starlette app like the SDK's, so the middleware
wraps it unchanged. The tool ``count`` keeps its count in the middleware's
session, which survives restarts and is shared by every process on the store:

    python examples/03_fastmcp_server.py --port 8000
    python examples/03_fastmcp_server.py --port 8000 --stateless \\
        --store redis://127.0.0.1:6379/0

Needs ``pip install fastmcp`` (checked with fastmcp 4.1.2).
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from fastmcp import FastMCP

from mcp_session_mw import SessionMiddleware, Store, current_session


def build_server() -> FastMCP:
    server = FastMCP("counter")

    @server.tool
    async def count() -> int:
        """Count the calls made in this MCP session; the count is durable."""
        state = await current_session().update(lambda s: {**s, "calls": s.get("calls", 0) + 1})
        return int(state["calls"])

    return server


def build_app(store: Store | str | None = None, *, stateless: bool = False) -> SessionMiddleware:
    """FastMCP's app at /mcp, wrapped in the middleware; it runs the app's lifespan."""
    fastmcp_app = build_server().http_app(stateless_http=stateless)
    return SessionMiddleware(fastmcp_app, store=store, mode="stateless" if stateless else "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=os.environ.get("MCP_SESSION_STORE_URL"))
    parser.add_argument("--stateless", action="store_true", help="run FastMCP stateless")
    args = parser.parse_args()
    print(f"MCP endpoint: http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(build_app(args.store, stateless=args.stateless), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
