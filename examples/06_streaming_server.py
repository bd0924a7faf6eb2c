"""Example 6: a long-running streaming tool whose SSE stream survives the client leaving.

The tool ``stream`` reports ``n`` progress notifications, then returns. Every
event goes into the session store before it is sent, so a client whose
connection breaks resumes with ``GET`` + ``Last-Event-ID`` and gets the rest and
the result exactly once, from this process or any other on the same store:

    python examples/06_streaming_server.py --port 8000 --store redis://127.0.0.1:6379/0
    python examples/06_streaming_server.py --port 8001 --store redis://127.0.0.1:6379/0

Arguments of ``stream`` that exist to show (and test) resumption:

- ``cut_after``: after that many notifications the tool ends its client's
  connection with ``current_session().close_sse_streams()`` (SEP-1699 polling)
  and keeps working; the client resumes by GET.
- ``hold_at``: after that many notifications the tool waits until the session
  state has ``"release": true`` (set by anyone with access to the store), so a
  test can act while the producer is provably still mid-stream.

Each progress message names the process id that produced it, so it is visible
which process made an event that another process delivered.
"""

from __future__ import annotations

import argparse
import os

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

from mcp_session_mw import SessionMiddleware, current_session

HOLD_POLL_SECONDS = 0.05


def build_server() -> MCPServer:
    server = MCPServer("streaming")

    @server.tool()
    async def stream(
        n: int,
        ctx: Context,
        delay_ms: int = 0,
        cut_after: int | None = None,
        hold_at: int | None = None,
    ) -> str:
        """Report progress 1..n of n, ``delay_ms`` apart, then return; see the module docstring."""
        session = current_session()
        for step in range(1, n + 1):
            await ctx.report_progress(step, n, f"step {step} of {n} by pid {os.getpid()}")
            if step == cut_after:
                await session.close_sse_streams()
            if step == hold_at:
                # The flag is written to the store by another process: poll it.
                while not (await session.refresh()).get("release"):  # noqa: ASYNC110
                    await anyio.sleep(HOLD_POLL_SECONDS)
            if delay_ms:
                await anyio.sleep(delay_ms / 1000)
        return f"streamed {n}"

    return server


def build_app(
    store: str | None = None,
    *,
    stateless: bool = False,
    host: str = "127.0.0.1",
    stream_lease: float = 10.0,
    store_options: dict[str, str] | None = None,
) -> SessionMiddleware:
    """The SDK app for the server above, wrapped in the middleware."""
    sdk_app = build_server().streamable_http_app(stateless_http=stateless, host=host)
    return SessionMiddleware(
        sdk_app, store=store, stream_lease=stream_lease, store_options=store_options
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
    parser.add_argument("--stateless", action="store_true", help="run the SDK app stateless")
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
    args = parser.parse_args()
    app = build_app(
        args.store,
        stateless=args.stateless,
        host=args.host,
        stream_lease=args.stream_lease,
        store_options=dict(args.store_option) or None,
    )
    print(f"MCP endpoint: http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
