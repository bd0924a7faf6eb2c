"""Example 9: durable sessions for an MCP server in any language, through the proxy.

``SessionMiddleware(UpstreamApp(url))`` is what ``mcp-session-mw proxy
--upstream URL`` runs: every request goes to the upstream server over HTTP,
and the middleware gives it durable sessions and resumable streams on the
store (``MCP_SESSION_STORE_URL``, default SQLite). Point it at your server::

    python examples/09_proxy_server.py --upstream http://127.0.0.1:3000/mcp --port 8000

Without ``--upstream`` it starts a stand-in upstream in the same process (a
stateful server on the Python SDK, on a free port), so the example runs with
nothing else installed; the upstream could be written with any SDK.
Needs the ``proxy`` extra.
"""

from __future__ import annotations

import argparse
import os
import socket
from functools import partial

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

from mcp_session_mw import SessionMiddleware
from mcp_session_mw.proxy import UpstreamApp


def stand_in_upstream() -> MCPServer:
    """Any stateful Streamable HTTP server would do; this one says which process answered."""
    server = MCPServer("stand-in-upstream")

    @server.tool()
    def hello() -> str:
        """Greets from the upstream process."""
        return f"hello from upstream pid {os.getpid()}"

    return server


async def serve(host: str, port: int, upstream: str | None) -> None:
    async with anyio.create_task_group() as tg:
        if upstream is None:
            listening = socket.socket()  # bound now: requests wait in its backlog until served
            listening.bind((host, 0))
            listening.listen()
            app = stand_in_upstream().streamable_http_app(host=host)
            stand_in = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
            tg.start_soon(partial(stand_in.serve, sockets=[listening]))
            upstream = f"http://{host}:{listening.getsockname()[1]}/mcp"
        store = os.environ.get("MCP_SESSION_STORE_URL", "sqlite+aiosqlite:///./mcp_sessions.db")
        proxy = SessionMiddleware(UpstreamApp(upstream, timeout=30.0), store=store)
        config = uvicorn.Config(proxy, host=host, port=port, log_level="info")
        tg.start_soon(uvicorn.Server(config).serve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", help="the upstream MCP endpoint (default: a stand-in)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    anyio.run(serve, args.host, args.port, args.upstream)


if __name__ == "__main__":
    main()
