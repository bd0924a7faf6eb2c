"""The server of the durable-streams benchmark (bench/streaming.py starts it).

One SDK ``MCPServer`` with a tool, ``stream``, that sends ``n`` progress
notifications as fast as the SDK lets it and then returns. ``--bare`` serves the
SDK's own stateful Streamable HTTP app; otherwise the same app is wrapped in
SessionMiddleware on ``--store``, so every notification is parsed, stored and
forwarded by the middleware. Both run in the same kind of uvicorn process, so
the only difference between the two timings is the middleware.

    python bench/stream_server.py --port 8001 --bare
    python bench/stream_server.py --port 8002 --store redis://127.0.0.1:6379/0 --prefix b1:
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import ASGIApp

from mcp_session_mw import SessionMiddleware


def build_server() -> MCPServer:
    server = MCPServer("stream-bench")

    @server.tool()
    async def stream(n: int, ctx: Context) -> str:
        """Report progress n times, back to back, then return."""
        for i in range(1, n + 1):
            await ctx.report_progress(i, n)
        return f"sent {n}"

    return server


def store_options(url: str, prefix: str | None) -> dict[str, str]:
    """The option that keeps this run's tables or keys apart from everyone else's."""
    if prefix is None:
        return {}
    if url.startswith(("redis", "rediss", "unix")):
        return {"prefix": prefix}
    if url.startswith(("memory", "dynamodb")):  # a DynamoDB run has a table of its own
        return {}
    return {"table_prefix": prefix}


def build_app(store: str | None, prefix: str | None) -> ASGIApp:
    sdk_app = build_server().streamable_http_app()
    if store is None:
        return sdk_app
    return SessionMiddleware(sdk_app, store=store, store_options=store_options(store, prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--store", help="store URL for SessionMiddleware")
    group.add_argument("--bare", action="store_true", help="the SDK app alone, no middleware")
    parser.add_argument("--prefix", help="table prefix (SQL) or key prefix (Redis)")
    args = parser.parse_args()
    app = build_app(None if args.bare else args.store, args.prefix)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
