"""Example 8: one instance of a cluster — a counter and a streaming tool that name their process.

Run several of these on one shared store behind a load balancer (``make
cluster-demo`` starts three behind nginx, see ``cluster/``); a client's session
and its streams work on whichever instance each request reaches:

    python examples/08_cluster_server.py --port 8001 --store redis://127.0.0.1:6379/0
    python examples/08_cluster_server.py --port 8002 --store redis://127.0.0.1:6379/0

Tools:

- ``count``: adds one to this session's counter in the session store and
  returns ``{"count": n, "pid": pid}``, so a client can check both that no
  call was lost or repeated and which process answered it.
- ``stream``: reports progress 1..n (each message names the producing
  process), ``delay_ms`` apart, then returns ``{"steps": n, "pid": pid}``.
  With ``hold_at`` it stops after that many steps until the session state has
  ``"release": true``, so a test can act while the producer is provably
  mid-stream (for instance, kill it).
"""

from __future__ import annotations

import argparse
import logging
import os

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

from mcp_session_mw import SessionMiddleware, current_session

HOLD_POLL_SECONDS = 0.05
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
PROGRESS_MESSAGE = "step {step} of {n} by pid {pid}"
"""The last word is the producer's pid; clients parse it."""


def build_server() -> MCPServer:
    server = MCPServer("cluster")

    @server.tool()
    async def count() -> dict[str, int]:
        """Count this session's calls in the shared session state; say which process counted."""
        state = await current_session().update(lambda s: {**s, "calls": s.get("calls", 0) + 1})
        return {"count": int(state["calls"]), "pid": os.getpid()}

    @server.tool()
    async def stream(
        n: int, ctx: Context, delay_ms: int = 0, hold_at: int | None = None
    ) -> dict[str, int]:
        """Report progress 1..n of n, ``delay_ms`` apart, then return; see the module docstring."""
        session = current_session()
        pid = os.getpid()
        for step in range(1, n + 1):
            await ctx.report_progress(step, n, PROGRESS_MESSAGE.format(step=step, n=n, pid=pid))
            if step == hold_at:
                # The flag is written to the store by another process: poll it.
                while not (await session.refresh()).get("release"):  # noqa: ASYNC110
                    await anyio.sleep(HOLD_POLL_SECONDS)
            if delay_ms:
                await anyio.sleep(delay_ms / 1000)
        return {"steps": n, "pid": pid}

    return server


def build_app(
    store: str | None = None,
    *,
    host: str = "127.0.0.1",
    stream_lease: float = 10.0,
    store_options: dict[str, str] | None = None,
    shutdown_grace_seconds: float = 10.0,
) -> SessionMiddleware:
    """The SDK's ordinary stateful app for the server above, wrapped in the middleware."""
    sdk_app = build_server().streamable_http_app(host=host)
    return SessionMiddleware(
        sdk_app,
        store=store,
        stream_lease=stream_lease,
        store_options=store_options,
        shutdown_grace_seconds=shutdown_grace_seconds,
    )


def _option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=os.environ.get("MCP_SESSION_STORE_URL"))
    parser.add_argument(
        "--stream-lease",
        type=float,
        default=10.0,
        help="seconds after which a stream this process stops renewing counts as orphaned",
    )
    parser.add_argument(
        "--store-option",
        type=_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a store constructor option, e.g. table_prefix=demo_ or prefix=demo: (repeatable)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds running tools get to finish after SIGTERM before their calls are ended",
    )
    args = parser.parse_args()
    # Plain log lines, configured before MCPServer() would install its own
    # (rich) handler: rendering a rich traceback of a store error takes seconds
    # of event-loop time on a small machine, and during a store outage every
    # request logs one.
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    app = build_app(
        args.store,
        host=args.host,
        stream_lease=args.stream_lease,
        store_options=dict(args.store_option) or None,
        shutdown_grace_seconds=args.shutdown_grace,
    )
    print(f"MCP endpoint: http://{args.host}:{args.port}/mcp (pid {os.getpid()})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
