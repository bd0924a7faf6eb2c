"""Example 9: both protocol lanes on one store — durable sessions and the modern seams.

Clients on a handshake revision (2024-11-05 … 2025-11-25) get the middleware's
durable sessions; clients on 2026-07-28 pass through it to the SDK, whose
shared seams live on the same store: the subscription bus, the requestState
key ring, the single-use guard and state handles. Run two on one store:

    mcp-session-mw keys generate --store redis://127.0.0.1:6379/0
    python examples/10_modern_server.py --port 8001 --store redis://127.0.0.1:6379/0
    python examples/10_modern_server.py --port 8002 --store redis://127.0.0.1:6379/0

Tools:

- ``announce``: publishes ``tools`` (tools/list_changed) or a resource URI
  (resources/updated) on the bus; listen streams on every process get it.
- ``two_step``: answers ``input_required`` with ``requestState`` on the first
  round and finishes on the second, which may reach another process: the
  state is sealed with the shared key ring.
- ``redeem``: takes a one-time token; a replay is refused on any process.
- ``remember`` / ``recall``: mint a state handle for ``user`` and read it back.
  The demo takes the principal as an argument; a real server takes it from
  authentication (the SDK's ``authenticated_principal``).
- ``keyring``: the key ids and roles this process has cached (never secrets).
- ``count``: a handshake-lane session counter, as in example 1.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import InputRequiredResult
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_session_mw import SessionMiddleware, create_store, current_session
from mcp_session_mw.modern import (
    HandleNotFoundError,
    SingleUseGuard,
    StateHandles,
    StoreKeyRing,
    StoreSubscriptionBus,
)
from mcp_session_mw.stores import Store

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def build_server(bus: StoreSubscriptionBus, ring: StoreKeyRing, store: Store) -> MCPServer:
    once = SingleUseGuard(store)
    handles = StateHandles(store)
    server = MCPServer(
        "modern-demo",
        subscriptions=bus,
        request_state_security=ring.security(ttl=300),
    )

    @server.tool()
    async def announce(what: str) -> str:
        """Publish tools/list_changed (``tools``) or resources/updated for a URI."""
        await bus.publish(ToolsListChanged() if what == "tools" else ResourceUpdated(uri=what))
        return f"published {what} from pid {os.getpid()}"

    @server.tool()
    async def two_step(ctx: Context) -> Any:
        """First round: input_required with requestState; second round: done."""
        if ctx.request_state is None:
            return InputRequiredResult(request_state=f"begun by pid {os.getpid()}")
        return f"{ctx.request_state}, finished by pid {os.getpid()}"

    @server.tool()
    async def redeem(token: str) -> str:
        """Accept a one-time token once, on whichever process sees it first."""
        return "accepted" if await once(token, 600) else "replayed"

    @server.tool()
    async def remember(user: str, note: str) -> str:
        """Mint a state handle holding ``note`` for ``user`` (10 minutes)."""
        return await handles.mint({"note": note}, principal=user, ttl=600)

    @server.tool()
    async def recall(user: str, handle: str) -> str:
        """Read a state handle back; another user's handle is unknown."""
        try:
            held = await handles.load(handle, principal=user)
        except HandleNotFoundError as exc:
            return f"refused: {exc}"
        return str(held.state["note"])

    @server.tool()
    async def keyring() -> list[str]:
        """The key ids and roles this process has cached, primary first."""
        return [f"{info.key_id}:{info.role}" for info in ring.keys]

    @server.tool()
    async def count() -> int:
        """Count this session's calls (handshake lane only: the modern lane has no session)."""
        state = await current_session().update(lambda s: {**s, "calls": s.get("calls", 0) + 1})
        return int(state["calls"])

    return server


class ModernSeams:
    """Starts the key ring and the bus once the middleware has opened the store, stops them first.

    Pure ASGI around the lifespan only: every request passes straight through.
    """

    def __init__(self, app: ASGIApp, bus: StoreSubscriptionBus, ring: StoreKeyRing) -> None:
        self.app, self.bus, self.ring = app, bus, ring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.ring.aclose()
                await self.bus.aclose()
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.ring.start()
                await self.bus.start()
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)


def build_app(
    store_url: str,
    *,
    key_refresh: float = 5.0,
    bus_channel: str = "mcp-session-mw-bus",
    store_options: dict[str, str] | None = None,
) -> ASGIApp:
    """One store for both lanes: the middleware's sessions and the modern seams."""
    store = create_store(store_url, **(store_options or {}))
    bus = StoreSubscriptionBus(store, channel=bus_channel)
    ring = StoreKeyRing(store, refresh_interval=key_refresh)
    sdk_app = build_server(bus, ring, store).streamable_http_app()
    return ModernSeams(SessionMiddleware(sdk_app, store=store), bus, ring)


def _option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--store", default=os.environ.get("MCP_SESSION_STORE_URL", "sqlite+aiosqlite:///./s.db")
    )
    parser.add_argument(
        "--key-refresh", type=float, default=5.0, help="seconds between key ring reads"
    )
    parser.add_argument("--bus-channel", default="mcp-session-mw-bus")
    parser.add_argument(
        "--store-option",
        type=_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a store constructor option, e.g. table_prefix=demo_ or prefix=demo: (repeatable)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    app = build_app(
        args.store,
        key_refresh=args.key_refresh,
        bus_channel=args.bus_channel,
        store_options=dict(args.store_option),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
