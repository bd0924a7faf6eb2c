"""FastAPI dependencies: a REST route reads the MCP session its request names."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import Scope

from mcp_session_mw import (
    ConfigurationError,
    MemoryStore,
    Session,
    SessionMiddleware,
    StoreUnavailableError,
    mount_mcp,
)
from mcp_session_mw.fastapi import (
    MSG_NO_MIDDLEWARE,
    MSG_SESSION_HEADER_REQUIRED,
    MSG_SESSION_NOT_FOUND,
    MSG_STORE_UNAVAILABLE,
    OptionalSessionDep,
    SessionDep,
    SessionStateDep,
)
from mcp_session_mw.records import SessionRecord

from .asgi_lifespan import BASE_URL, RawMCP, lifespan
from .test_mount import counter_server

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class ControlledStore(MemoryStore):
    """A memory store whose clock the test sets and whose server can be "down"."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0
        self.down = False

    def now(self) -> float:
        return super().now() + self.offset

    async def load(self, session_id: str) -> SessionRecord | None:
        if self.down:
            raise StoreUnavailableError("the store is down (test)")
        return await super().load(session_id)


def user_header(scope: Scope) -> str | None:
    """The principal: an ``x-user`` header, as an authentication layer would set it."""
    return Headers(scope=scope).get("x-user")


def build_api(store: MemoryStore, **options: Any) -> FastAPI:
    api = FastAPI()
    app = counter_server().streamable_http_app(streamable_http_path="/")
    mount_mcp(api, "/mcp", app, store=store, **options)

    @api.get("/api/session")
    async def session_route(session: SessionDep) -> dict[str, Any]:
        return {"calls": session.state.get("calls", 0), "client": session.client_info["name"]}

    @api.get("/api/state")
    async def state_route(state: SessionStateDep) -> dict[str, Any]:
        return state

    @api.get("/api/maybe")
    async def maybe_route(session: OptionalSessionDep) -> dict[str, Any]:
        return {"found": session is not None}

    return api


@pytest.fixture
def store() -> ControlledStore:
    return ControlledStore()


@pytest.fixture
async def http(store: ControlledStore) -> AsyncIterator[httpx.AsyncClient]:
    api = build_api(store, principal=user_header)
    async with (
        lifespan(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url=BASE_URL) as client,
    ):
        yield client


async def counted_session(http: httpx.AsyncClient, calls: int, user: str = "alice") -> str:
    http.headers["x-user"] = user
    mcp = RawMCP(http, "/mcp")
    await mcp.initialize()
    for _ in range(calls):
        await mcp.call_tool("count")
    assert mcp.session_id is not None
    return mcp.session_id


async def test_rest_route_sees_what_the_mcp_tool_wrote(http: httpx.AsyncClient) -> None:
    session_id = await counted_session(http, 2)
    headers = {"mcp-session-id": session_id}
    assert (await http.get("/api/session", headers=headers)).json() == {
        "calls": 2,
        "client": "raw-test-client",
    }
    assert (await http.get("/api/state", headers=headers)).json() == {"calls": 2}
    mcp = RawMCP(http, "/mcp")
    mcp.session_id = session_id
    await mcp.call_tool("count")
    assert (await http.get("/api/state", headers=headers)).json() == {"calls": 3}


async def test_missing_header_is_400(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/session")
    assert response.status_code == 400
    assert response.json() == {"detail": MSG_SESSION_HEADER_REQUIRED}


@pytest.mark.parametrize(
    "headers",
    [
        [("mcp-session-id", "never-minted")],
        [("mcp-session-id", "x" * 200)],
        [("mcp-session-id", "has space")],
        [("mcp-session-id", "a"), ("mcp-session-id", "b")],
    ],
    ids=["unknown", "too-long", "malformed", "twice"],
)
async def test_unusable_ids_are_one_404(
    http: httpx.AsyncClient, headers: list[tuple[str, str]]
) -> None:
    await counted_session(http, 0)
    response = await http.get("/api/session", headers=headers)
    assert response.status_code == 404
    assert response.json() == {"detail": MSG_SESSION_NOT_FOUND}
    assert (await http.get("/api/maybe", headers=headers)).json() == {"found": False}


async def test_expired_session_is_404(http: httpx.AsyncClient, store: ControlledStore) -> None:
    session_id = await counted_session(http, 1)
    headers = {"mcp-session-id": session_id}
    assert (await http.get("/api/session", headers=headers)).status_code == 200
    store.offset = 3600 + 1  # the middleware's default ttl, plus a second
    response = await http.get("/api/session", headers=headers)
    assert response.status_code == 404
    assert response.json() == {"detail": MSG_SESSION_NOT_FOUND}


async def test_another_principals_session_is_404(http: httpx.AsyncClient) -> None:
    session_id = await counted_session(http, 1, user="alice")
    headers = {"mcp-session-id": session_id}
    assert (await http.get("/api/state", headers={**headers, "x-user": "alice"})).status_code == 200
    response = await http.get("/api/state", headers={**headers, "x-user": "mallory"})
    assert response.status_code == 404
    assert response.json() == {"detail": MSG_SESSION_NOT_FOUND}


async def test_store_down_is_503(http: httpx.AsyncClient, store: ControlledStore) -> None:
    session_id = await counted_session(http, 1)
    store.down = True
    for route in ("/api/session", "/api/maybe"):
        response = await http.get(route, headers={"mcp-session-id": session_id})
        assert response.status_code == 503
        assert response.json() == {"detail": MSG_STORE_UNAVAILABLE}
        assert response.headers["retry-after"] == "1"


async def test_optional_session(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/maybe")).json() == {"found": False}
    session_id = await counted_session(http, 0)
    found = await http.get("/api/maybe", headers={"mcp-session-id": session_id})
    assert found.json() == {"found": True}


async def test_rest_reads_do_not_extend_the_session(
    http: httpx.AsyncClient, store: ControlledStore
) -> None:
    session_id = await counted_session(http, 1)
    before = await store.load(session_id)
    store.offset = 600  # past the touch interval
    assert (await http.get("/api/state", headers={"mcp-session-id": session_id})).status_code == 200
    assert await store.load(session_id) == before


async def test_app_without_a_mounted_middleware_is_a_configuration_error() -> None:
    api = FastAPI()

    @api.get("/api/state")
    async def state_route(state: SessionStateDep) -> dict[str, Any]:
        return state  # pragma: no cover

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        with pytest.raises(ConfigurationError, match=re.escape(MSG_NO_MIDDLEWARE)):
            await client.get("/api/state", headers={"mcp-session-id": "abc"})


async def test_inside_a_request_the_middleware_handles_the_current_session_is_used() -> None:
    """A FastAPI app behind the middleware gets the ContextVar session, no app.state needed."""
    inner = FastAPI()
    seen: list[Session] = []

    @inner.post("/")
    async def rpc(session: SessionDep, state: SessionStateDep) -> dict[str, Any]:
        seen.append(session)
        return {"jsonrpc": "2.0", "id": 1, "result": {"state": state}}

    app = SessionMiddleware(inner, store=MemoryStore(), path="/", mode="stateless")
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        mcp = RawMCP(client, "/")
        initialized = await mcp.post({"jsonrpc": "2.0", "id": 1, "method": "initialize"})
        mcp.session_id = initialized.headers["mcp-session-id"]
        response = await mcp.request("ping")
        assert response.json()["result"] == {"state": {}}
    assert [s.id for s in seen] == [mcp.session_id, mcp.session_id]


# -- example 02 -------------------------------------------------------------------------------


async def test_example_02_rest_route_reads_the_mcp_session() -> None:
    spec = importlib.util.spec_from_file_location("example_02", EXAMPLES / "02_fastapi_mount.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    api = example.build_app("memory://")
    transport = httpx.ASGITransport(app=api)
    async with lifespan(api), httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        mcp = RawMCP(client, "/mcp")
        await mcp.initialize()
        assert await mcp.call_tool("count") == 1
        assert mcp.session_id is not None
        response = await client.get("/api/session", headers={"mcp-session-id": mcp.session_id})
        assert response.json() == {
            "calls": 1,
            "client": "raw-test-client",
            "protocol_version": "2025-06-18",
        }
