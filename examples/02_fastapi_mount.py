"""Example 2: example 1's MCP server mounted in a FastAPI app, next to a REST route.

The MCP endpoint is ``/mcp``. ``GET /api/session`` with the same
``Mcp-Session-Id`` header reads the session the MCP tool ``count`` writes to,
through the ``get_session`` dependency:

    python examples/02_fastapi_mount.py --port 8000
    curl -H "Mcp-Session-Id: <id from initialize>" http://127.0.0.1:8000/api/session

``mount_mcp`` runs the SDK app's lifespan (its session manager) and opens and
closes the session store inside FastAPI's lifespan; ``app.mount`` alone would not.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import uvicorn
from fastapi import FastAPI

from mcp_session_mw import Store, mount_mcp
from mcp_session_mw.fastapi import SessionDep


def _example_1() -> ModuleType:
    """Example 1 as a module (its file name starts with a digit, so no plain import)."""
    spec = importlib.util.spec_from_file_location(
        "mcp_session_mw_example_01", Path(__file__).with_name("01_sdk_server.py")
    )
    if spec is None or spec.loader is None:
        raise ImportError("examples/01_sdk_server.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_app(store: Store | str | None = None, *, host: str = "127.0.0.1") -> FastAPI:
    api = FastAPI(title="counter")
    # Serve the SDK app at "/" so that, mounted at /mcp, its endpoint is /mcp.
    sdk_app = _example_1().build_server().streamable_http_app(streamable_http_path="/", host=host)
    mount_mcp(api, "/mcp", sdk_app, store=store)

    @api.get("/api/session")
    async def session_info(session: SessionDep) -> dict[str, object]:
        """What the MCP session holds, without echoing its id."""
        return {
            "calls": session.state.get("calls", 0),
            "client": session.client_info.get("name"),
            "protocol_version": session.protocol_version,
        }

    return api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default=os.environ.get("MCP_SESSION_STORE_URL"))
    args = parser.parse_args()
    print(f"MCP endpoint: http://{args.host}:{args.port}/mcp", flush=True)
    print(f"REST route:   http://{args.host}:{args.port}/api/session", flush=True)
    uvicorn.run(build_app(args.store, host=args.host), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
