"""mount_mcp: an MCP app under a path of FastAPI/Starlette, its lifespan run by the parent's."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_session_mw import (
    ConfigurationError,
    MemoryStore,
    SessionMiddleware,
    SessionMiddlewareError,
    current_session,
    mount_mcp,
)
from mcp_session_mw.mount import MSG_OPTIONS_IGNORED, MSG_ROOT_MOUNT, STATE_KEY

from .asgi_lifespan import BASE_URL, LifespanFailed, RawMCP, lifespan

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class RecordingStore(MemoryStore):
    """A memory store that notes when it is opened and closed, in a shared log."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def open(self) -> None:
        self.log.append("store open")
        await super().open()

    async def close(self) -> None:
        self.log.append("store close")
        await super().close()


def counter_server() -> MCPServer:
    server = MCPServer("counter")

    @server.tool()
    async def count() -> int:
        state = await current_session().update(lambda s: {**s, "calls": s.get("calls", 0) + 1})
        return int(state["calls"])

    return server


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


ParentFactory = Callable[[Any], Starlette]


def fastapi_parent(lifespan_context: Any) -> Starlette:
    return FastAPI(lifespan=lifespan_context)


def starlette_parent(lifespan_context: Any) -> Starlette:
    return Starlette(lifespan=lifespan_context)


PARENTS = [
    pytest.param(fastapi_parent, id="fastapi"),
    pytest.param(starlette_parent, id="starlette"),
]


def logging_lifespan(log: list[str], name: str, state: dict[str, Any] | None = None) -> Any:
    @asynccontextmanager
    async def run(app: object) -> AsyncIterator[dict[str, Any] | None]:
        log.append(f"{name} up")
        try:
            yield state
        finally:
            log.append(f"{name} down")

    return run


# -- the recommended shape: SDK app serving "/" mounted at /mcp ----------------------------


@pytest.mark.parametrize("make_parent", PARENTS)
async def test_mounted_sdk_app_counts_per_session(make_parent: ParentFactory) -> None:
    parent = make_parent(None)
    mount_mcp(
        parent,
        "/mcp",
        counter_server().streamable_http_app(streamable_http_path="/"),
        store=MemoryStore(),
    )
    async with lifespan(parent), client(parent) as http:
        first, second = RawMCP(http, "/mcp"), RawMCP(http, "/mcp/")
        await first.initialize()
        await second.initialize()
        assert first.session_id != second.session_id
        assert [await first.call_tool("count") for _ in range(3)] == [1, 2, 3]
        assert await second.call_tool("count") == 1


async def test_mount_point_is_served_without_a_redirect() -> None:
    parent = FastAPI()
    mount_mcp(parent, "/mcp", counter_server().streamable_http_app(streamable_http_path="/"))
    async with lifespan(parent), client(parent) as http:
        for url in ("/mcp", "/mcp/"):
            response = await http.delete(url, headers={"mcp-session-id": "unknown"})
            assert response.status_code == 404  # the middleware's answer, not a 307
            assert response.json()["error"]["message"] == "Session not found"
        elsewhere = await http.post("/mcp/other", json={})
        assert elsewhere.status_code == 404  # below the mount, not the MCP endpoint
        assert "error" not in elsewhere.text


async def test_plain_starlette_mount_is_what_mount_mcp_fixes() -> None:
    """The control: without mount_mcp the mount point redirects and the SDK never starts."""
    parent = FastAPI()
    app = counter_server().streamable_http_app(streamable_http_path="/")
    parent.mount("/mcp", SessionMiddleware(app, path="/", store=MemoryStore()))
    async with lifespan(parent), client(parent) as http:
        assert (await http.post("/mcp", json={})).status_code == 307
        with pytest.raises(RuntimeError):
            await RawMCP(http, "/mcp/").initialize()


# -- lifespans --------------------------------------------------------------------------


@pytest.mark.parametrize("make_parent", PARENTS)
async def test_child_lifespan_and_store_run_inside_the_parents(make_parent: ParentFactory) -> None:
    log: list[str] = []
    parent = make_parent(logging_lifespan(log, "parent"))
    child = Starlette(lifespan=logging_lifespan(log, "child"))
    mount_mcp(parent, "/mcp", child, store=RecordingStore(log))
    async with lifespan(parent):
        assert log == ["parent up", "store open", "child up"]
    assert log == [
        "parent up",
        "store open",
        "child up",
        "child down",
        "store close",
        "parent down",
    ]


async def test_lifespan_states_are_merged_for_routes() -> None:
    async def read_state(request: Request) -> JSONResponse:
        return JSONResponse({"parent": request.state.parent, "child": request.state.child})

    log: list[str] = []
    parent = Starlette(
        routes=[Route("/state", read_state)],
        lifespan=logging_lifespan(log, "parent", {"parent": "p"}),
    )
    child = Starlette(lifespan=logging_lifespan(log, "child", {"child": "c"}))
    mount_mcp(parent, "/mcp", child, store=MemoryStore())
    async with lifespan(parent) as state:
        assert state == {"parent": "p", "child": "c"}

        async def as_a_server_would(scope: Scope, receive: Receive, send: Send) -> None:
            await parent({**scope, "state": dict(state)}, receive, send)

        async with client(as_a_server_would) as http:
            assert (await http.get("/state")).json() == {"parent": "p", "child": "c"}


async def test_child_startup_failure_fails_the_parents_startup() -> None:
    @asynccontextmanager
    async def broken(app: object) -> AsyncIterator[None]:
        raise OSError("port in use")
        yield  # pragma: no cover

    log: list[str] = []
    parent = FastAPI(lifespan=logging_lifespan(log, "parent"))
    mount_mcp(parent, "/mcp", Starlette(lifespan=broken), store=RecordingStore(log))
    with pytest.raises(LifespanFailed, match="failed to start") as failure:
        async with lifespan(parent):
            pass  # pragma: no cover
    assert isinstance(failure.value.__cause__, SessionMiddlewareError)
    assert "port in use" in str(failure.value.__cause__)
    assert log == ["parent up", "store open", "store close", "parent down"]


async def test_app_without_lifespan_support_still_gets_its_store_closed() -> None:
    async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise TypeError("http only")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    log: list[str] = []
    parent = FastAPI()
    mount_mcp(parent, "/mcp", http_only, store=RecordingStore(log), path="/")
    async with lifespan(parent), client(parent) as http:
        assert (await http.get("/mcp/anything")).status_code == 204
    assert log == ["store open", "store close"]


# -- configuration ---------------------------------------------------------------------------


def test_records_the_first_middleware_on_app_state() -> None:
    parent = FastAPI()
    first = mount_mcp(parent, "/one", Starlette(), store=MemoryStore())
    second = mount_mcp(parent, "/two", Starlette(), store=MemoryStore())
    assert first is not second
    assert getattr(parent.state, STATE_KEY) is first
    assert first.path == "/"


def test_an_existing_middleware_is_mounted_as_is() -> None:
    parent = Starlette()
    middleware = SessionMiddleware(Starlette(), store=MemoryStore(), path=None)
    assert mount_mcp(parent, "/mcp/", middleware) is middleware
    with pytest.raises(ConfigurationError, match=MSG_OPTIONS_IGNORED):
        mount_mcp(parent, "/again", middleware, ttl=5)


@pytest.mark.parametrize("path", ["/", "", "mcp"])
def test_mount_path_must_be_a_sub_path(path: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        mount_mcp(Starlette(), path, Starlette(), store=MemoryStore())
    if path.startswith("/"):
        assert str(error.value) == MSG_ROOT_MOUNT


def test_an_app_that_does_not_serve_the_handled_path_is_refused() -> None:
    sdk_default = counter_server().streamable_http_app()  # serves /mcp, not /
    with pytest.raises(ConfigurationError, match="streamable_http_path='/'"):
        mount_mcp(FastAPI(), "/mcp", sdk_default, store=MemoryStore())


async def test_an_app_at_the_sdk_default_path_works_nested() -> None:
    parent = FastAPI()
    mount_mcp(
        parent, "/mcp", counter_server().streamable_http_app(), store=MemoryStore(), path="/mcp"
    )
    async with lifespan(parent), client(parent) as http:
        mcp = RawMCP(http, "/mcp/mcp")
        await mcp.initialize()
        assert await mcp.call_tool("count") == 1


# -- examples 03 (FastMCP) and 04 (stateless SDK app) --------------------------------------


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_example_03_fastmcp_counts(stateless: bool) -> None:
    pytest.importorskip("fastmcp", reason="example 3 needs fastmcp (pip install fastmcp)")
    app = load_example("03_fastmcp_server").build_app("memory://", stateless=stateless)
    async with lifespan(app), client(app) as http:
        mcp = RawMCP(http, "/mcp")
        await mcp.initialize()
        assert [await mcp.call_tool("count") for _ in range(2)] == [1, 2]
    assert app.mode == ("stateless" if stateless else "rehydrate")


async def test_example_04_stateless_app_keeps_state_in_the_middleware() -> None:
    example = load_example("04_stateless_server")
    store = MemoryStore()
    first, second = example.build_app(store), example.build_app(store)  # two "processes"
    async with lifespan(first), client(first) as http:
        mcp = RawMCP(http, "/mcp")
        await mcp.initialize()
        assert [await mcp.call_tool("count") for _ in range(2)] == [1, 2]
    async with lifespan(second), client(second) as http:
        mcp.client = http
        assert await mcp.call_tool("count") == 3
