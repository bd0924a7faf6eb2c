"""Sessions bound to the principal of the MCP SDK's bearer-token auth (examples/07).

The SDK app authenticates inside itself, so SessionMiddleware must learn the
caller itself (``bearer_principal``) or sit inside an authentication layer of
its own (``AuthenticationMiddleware`` outside it). Both are checked here, and
so is the pitfall they fix.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.types import ASGIApp

from mcp_session_mw import MemoryStore, SessionMiddleware
from mcp_session_mw.jsonrpc import MSG_SESSION_NOT_FOUND
from mcp_session_mw.principal import bearer_principal, resolve_principal, token_principal
from mcp_session_mw.stores import Store

from .test_middleware import HEADERS, INIT, assert_jsonrpc_error, messages

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "07_auth_server.py"
ALICE = 'token:{"client_id":"demo-client","issuer":"https://auth.example.com","subject":"alice"}'


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_07_auth_server", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def find_sdk_app(app: ASGIApp) -> Any:
    """The SDK's Starlette app inside the middleware (to run its lifespan)."""
    assert isinstance(app, SessionMiddleware)
    return app.app


@asynccontextmanager
async def client_for(app: ASGIApp, sdk_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with sdk_app.router.lifespan_context(sdk_app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            yield client


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


async def open_session(client: httpx.AsyncClient, token: str) -> str:
    response = await client.post("/mcp", json=INIT, headers={**HEADERS, **bearer(token)})
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    notified = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**HEADERS, **bearer(token), "mcp-session-id": session_id},
    )
    assert notified.status_code == 202, notified.text
    return session_id


async def call_tool(
    client: httpx.AsyncClient, session_id: str, token: str | None, tool: str, rid: int = 2
) -> httpx.Response:
    return await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": rid,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {}},
        },
        headers={**HEADERS, **bearer(token), "mcp-session-id": session_id},
    )


def tool_text(response: httpx.Response, rid: int = 2) -> str:
    assert response.status_code == 200, response.text
    [message] = [m for m in messages(response) if m.get("id") == rid]
    assert "result" in message, message
    return str(message["result"]["content"][0]["text"])


async def test_alice_keeps_her_session_bob_gets_404_and_no_token_gets_the_sdks_401() -> None:
    store = MemoryStore()
    app = example.build_app(store)
    async with client_for(app, find_sdk_app(app)) as client:
        session_id = await open_session(client, "alice-1")
        assert tool_text(await call_tool(client, session_id, "alice-1", "count")) == "1"
        record = await store.load(session_id)
        assert record is not None
        assert record.principal == ALICE

        stolen = await call_tool(client, session_id, "bob-1", "count", rid=3)
        assert_jsonrpc_error(stolen, 404, MSG_SESSION_NOT_FOUND, 3)

        refreshed = await call_tool(client, session_id, "alice-2", "count")
        assert tool_text(refreshed) == "2"
        assert tool_text(await call_tool(client, session_id, "alice-2", "owner")) == ALICE

        for token in (None, "alice-old", "forged"):
            challenged = await call_tool(client, session_id, token, "count")
            assert challenged.status_code == 401, challenged.text
            assert challenged.headers["www-authenticate"].startswith("Bearer ")
            assert "mcp-session-id" not in challenged.headers
        gone = await client.delete(
            "/mcp", headers={**HEADERS, **bearer("bob-1"), "mcp-session-id": session_id}
        )
        assert gone.status_code == 404
        resumed = await client.get(
            "/mcp",
            headers={"accept": "text/event-stream", "mcp-session-id": session_id},
        )
        assert resumed.status_code == 401

        bobs = await open_session(client, "bob-1")
        assert tool_text(await call_tool(client, bobs, "bob-1", "count")) == "1"
        theirs = await call_tool(client, bobs, "alice-1", "count", rid=4)
        assert_jsonrpc_error(theirs, 404, MSG_SESSION_NOT_FOUND, 4)
        assert tool_text(await call_tool(client, session_id, "alice-1", "count")) == "3"

        refused = await client.post("/mcp", json=INIT, headers=HEADERS)
        assert refused.status_code == 401
        assert "mcp-session-id" not in refused.headers


async def test_a_restarted_process_serves_alices_session_under_auth() -> None:
    store = MemoryStore()
    first = example.build_app(store)
    async with client_for(first, find_sdk_app(first)) as client:
        session_id = await open_session(client, "alice-1")
        assert tool_text(await call_tool(client, session_id, "alice-1", "count")) == "1"
    second = example.build_app(store)  # a fresh SDK app: it re-creates the session
    async with client_for(second, find_sdk_app(second)) as client:
        assert tool_text(await call_tool(client, session_id, "alice-2", "count")) == "2"
        stolen = await call_tool(client, session_id, "bob-1", "count", rid=5)
        assert_jsonrpc_error(stolen, 404, MSG_SESSION_NOT_FOUND, 5)


def sdk_app_with_auth(store: Store) -> tuple[Any, Any]:
    verifier = example.StaticTokenVerifier(example.demo_tokens())
    server = example.build_server(verifier, "http://127.0.0.1:8000/mcp")
    return server.streamable_http_app(), verifier


async def test_default_principal_inside_the_sdks_auth_sees_nobody() -> None:
    """The pitfall: scope["user"] is set by the SDK app only after the middleware ran."""
    store = MemoryStore()
    sdk_app, _ = sdk_app_with_auth(store)
    app = SessionMiddleware(sdk_app, store=store)  # default_principal
    async with client_for(app, sdk_app) as client:
        session_id = await open_session(client, "alice-1")
        record = await store.load(session_id)
        assert record is not None
        assert record.principal is None  # not bound: bob could use it
        assert tool_text(await call_tool(client, session_id, "bob-1", "count")) == "1"


async def test_default_principal_with_authentication_outside_the_middleware() -> None:
    """The other order: Starlette's AuthenticationMiddleware with the SDK's backend outside."""
    store = MemoryStore()
    sdk_app, verifier = sdk_app_with_auth(store)
    app = AuthenticationMiddleware(
        SessionMiddleware(sdk_app, store=store), backend=BearerAuthBackend(verifier)
    )
    async with client_for(app, sdk_app) as client:
        session_id = await open_session(client, "alice-1")
        record = await store.load(session_id)
        assert record is not None
        assert record.principal == ALICE  # the same principal bearer_principal gives
        stolen = await call_tool(client, session_id, "bob-1", "count", rid=6)
        assert_jsonrpc_error(stolen, 404, MSG_SESSION_NOT_FOUND, 6)
        assert tool_text(await call_tool(client, session_id, "alice-2", "count")) == "1"


async def test_principal_functions_may_be_async_and_tokens_name_their_parts() -> None:
    async def async_principal(scope: Any) -> str | None:
        return "async-user"

    assert await resolve_principal(async_principal, {"type": "http"}) == "async-user"
    assert await resolve_principal(lambda scope: "sync-user", {"type": "http"}) == "sync-user"
    assert await resolve_principal(None, {"type": "http"}) is None

    token = example.access_token("t", "carol")
    assert json.loads(str(token_principal(token)).removeprefix("token:")) == {
        "client_id": "demo-client",
        "issuer": "https://auth.example.com",
        "subject": "carol",
    }
    principal = bearer_principal(example.StaticTokenVerifier({"t": token}))
    scope = {"type": "http", "headers": [(b"authorization", b"bearer t")]}
    assert await principal(scope) == token_principal(token)
    for header in (b"Basic t", b"Bearer ", b"Bearer other"):
        assert await principal({"type": "http", "headers": [(b"authorization", header)]}) is None
    assert await principal({"type": "http", "headers": []}) is None
