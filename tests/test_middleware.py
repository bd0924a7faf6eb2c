"""SessionMiddleware in process, in front of the official SDK app (stateful and stateless)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from mcp_session_mw import MemoryStore, SessionMiddleware, StoreUnavailableError, current_session
from mcp_session_mw.jsonrpc import (
    MSG_BODY_TOO_LARGE,
    MSG_INITIALIZE_BATCHED,
    MSG_PARSE_ERROR,
    MSG_SESSION_NOT_FOUND,
    MSG_SESSION_REQUIRED,
    MSG_STORE_UNAVAILABLE,
)
from mcp_session_mw.records import SessionRecord
from mcp_session_mw.session import current_session_or_none
from mcp_session_mw.streams import EVENTS_LOST, MSG_EVENTS_LOST

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1/mcp"
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {"roots": {}},
        "clientInfo": {"name": "unit", "version": "9"},
    },
}


def build_sdk_app(stateless: bool = False) -> Starlette:
    server = MCPServer("unit")

    @server.tool()
    async def count() -> int:
        state = await current_session().update(lambda s: {**s, "n": s.get("n", 0) + 1})
        return int(state["n"])

    @server.tool()
    async def session_info() -> str:
        session = current_session()
        return f"{session.client_info.get('name')}|{session.protocol_version}"

    return server.streamable_http_app(stateless_http=stateless)


@asynccontextmanager
async def serving(sdk_app: Starlette, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The SDK app, its lifespan running, wrapped in the middleware, behind an httpx client."""
    middleware = SessionMiddleware(sdk_app, **options)
    async with sdk_app.router.lifespan_context(sdk_app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            yield client


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """JSON-RPC messages of a JSON or SSE response body."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        out = []
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                out.append(json.loads(line[5:]))
        return out
    return [response.json()] if response.content else []


async def initialize(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> str:
    response = await client.post("/mcp", json=body or INIT, headers=HEADERS)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    notified = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**HEADERS, "mcp-session-id": session_id},
    )
    assert notified.status_code == 202, notified.text
    return session_id


async def call(client: httpx.AsyncClient, session_id: str, tool: str, rid: int = 2) -> Any:
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": rid,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {}},
        },
        headers={**HEADERS, "mcp-session-id": session_id},
    )
    assert response.status_code == 200, response.text
    [message] = [m for m in messages(response) if m.get("id") == rid]
    assert "result" in message, message
    return message["result"]["content"][0]["text"]


def assert_jsonrpc_error(response: httpx.Response, status: int, message: str, rid: object) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == rid
    assert body["error"]["message"] == message


@pytest.fixture(params=[False, True], ids=["stateful", "stateless"])
def stateless(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_initialize_mints_a_durable_id_and_counts(stateless: bool) -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(stateless), store=store) as client:
        session_id = await initialize(client)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)
        assert [await call(client, session_id, "count", i) for i in range(3)] == ["1", "2", "3"]
        assert await call(client, session_id, "session_info") == "unit|2025-06-18"
    record = await store.load(session_id)
    assert record is not None
    assert record.state == {"n": 3}
    assert record.client_info == {"name": "unit", "version": "9"}
    assert record.capabilities == {"roots": {}}
    assert (record.protocol_version, record.requested_protocol_version) == ("2025-06-18",) * 2


async def test_client_sent_id_is_never_adopted() -> None:
    async with serving(build_sdk_app(), store=MemoryStore()) as client:
        chosen = "attacker-chosen-session-id"
        response = await client.post(
            "/mcp", json=INIT, headers={**HEADERS, "mcp-session-id": chosen}
        )
        assert response.status_code == 200
        assert response.headers["mcp-session-id"] != chosen
        rejected = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 5, "method": "ping"},
            headers={**HEADERS, "mcp-session-id": chosen},
        )
        assert_jsonrpc_error(rejected, 404, MSG_SESSION_NOT_FOUND, 5)


async def test_the_apps_own_id_never_reaches_the_client() -> None:
    sdk_app = build_sdk_app()
    seen: list[str] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        async def spy_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        seen.append(value.decode())
            await send(message)

        await sdk_app(scope, receive, spy_send)

    middleware = SessionMiddleware(spy, store=MemoryStore())
    async with sdk_app.router.lifespan_context(sdk_app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            session_id = await initialize(client)
            await call(client, session_id, "count")
    assert seen, "the stateful SDK app should issue its own ids"
    assert session_id not in seen


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 400, MSG_SESSION_REQUIRED),
        ({"mcp-session-id": "unknown-but-well-formed"}, 404, MSG_SESSION_NOT_FOUND),
        ({"mcp-session-id": "has space"}, 404, MSG_SESSION_NOT_FOUND),
        ({"mcp-session-id": "x" * 129}, 404, MSG_SESSION_NOT_FOUND),
    ],
)
async def test_requests_without_a_valid_session(
    headers: dict[str, str], status: int, message: str
) -> None:
    async with serving(build_sdk_app(), store=MemoryStore()) as client:
        response = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": "req-7", "method": "tools/list"},
            headers={**HEADERS, **headers},
        )
        assert_jsonrpc_error(response, status, message, "req-7")


async def test_expired_session_is_404() -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store, ttl=0.2) as client:
        session_id = await initialize(client)
        import anyio

        await anyio.sleep(0.4)
        response = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 3, "method": "ping"},
            headers={**HEADERS, "mcp-session-id": session_id},
        )
        assert_jsonrpc_error(response, 404, MSG_SESSION_NOT_FOUND, 3)


async def test_bad_bodies() -> None:
    async with serving(build_sdk_app(), store=MemoryStore(), max_body_size=1000) as client:
        parse = await client.post("/mcp", content=b"{not json", headers=HEADERS)
        assert_jsonrpc_error(parse, 400, MSG_PARSE_ERROR, None)
        assert parse.json()["error"]["code"] == -32700
        utf8 = await client.post("/mcp", content=b'{"a":"\xff"}', headers=HEADERS)
        assert_jsonrpc_error(utf8, 400, MSG_PARSE_ERROR, None)
        huge = await client.post("/mcp", content=b"[" + b"1," * 1000 + b"1]", headers=HEADERS)
        assert_jsonrpc_error(huge, 413, MSG_BODY_TOO_LARGE, None)
        batch = await client.post("/mcp", json=[INIT], headers=HEADERS)
        assert_jsonrpc_error(batch, 400, MSG_INITIALIZE_BATCHED, None)
    async with serving(build_sdk_app(), store=MemoryStore()) as client:
        deep = await client.post("/mcp", content=b"[" * 100_000 + b"]" * 100_000, headers=HEADERS)
        assert_jsonrpc_error(deep, 400, MSG_PARSE_ERROR, None)


async def test_delete_then_404(stateless: bool) -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(stateless), store=store) as client:
        session_id = await initialize(client)
        deleted = await client.delete("/mcp", headers={**HEADERS, "mcp-session-id": session_id})
        assert deleted.status_code == 200
        assert await store.load(session_id) is None
        again = await client.delete("/mcp", headers={**HEADERS, "mcp-session-id": session_id})
        assert_jsonrpc_error(again, 404, MSG_SESSION_NOT_FOUND, None)
        response = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 9, "method": "ping"},
            headers={**HEADERS, "mcp-session-id": session_id},
        )
        assert_jsonrpc_error(response, 404, MSG_SESSION_NOT_FOUND, 9)


async def test_modern_lane_passes_through() -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store) as client:
        response = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={**HEADERS, "mcp-protocol-version": "2026-07-28"},
        )
        assert "mcp-session-id" not in response.headers
        assert response.status_code != 400 or response.json()["error"]["message"] != (
            MSG_SESSION_REQUIRED
        )
    assert await store.count_active() == 0


async def test_other_paths_pass_through() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = SessionMiddleware(app, store=MemoryStore())
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        assert (await client.post("/health", content=b"x")).status_code == 204
        assert (await client.post("/mcp", json={})).status_code == 400


async def test_restart_rehydrates_the_session(stateless: bool) -> None:
    """A second app (a restarted process) on the same store serves the old id."""
    store = MemoryStore()
    async with serving(build_sdk_app(stateless), store=store) as first:
        session_id = await initialize(first)
        assert await call(first, session_id, "count") == "1"
    async with serving(build_sdk_app(stateless), store=store) as second:
        assert await call(second, session_id, "count") == "2"
        assert await call(second, session_id, "session_info") == "unit|2025-06-18"
        assert await call(second, session_id, "count") == "3"


async def test_app_forgetting_its_session_is_retried_once() -> None:
    """If the app answers 404 (its session idled out), re-create and retry transparently."""
    store = MemoryStore()
    sdk_app = build_sdk_app()
    middleware = SessionMiddleware(sdk_app, store=store)
    async with sdk_app.router.lifespan_context(sdk_app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            session_id = await initialize(client)
            assert await call(client, session_id, "count") == "1"
            local = middleware._locals.get(session_id)
            assert local is not None
            assert local.app_id is not None
            app_id = local.app_id
            # End the app's session behind the middleware's back.
            gone = await httpx.AsyncClient(
                transport=httpx.ASGITransport(app=sdk_app), base_url="http://127.0.0.1:8000"
            ).delete("/mcp", headers={**HEADERS, "mcp-session-id": app_id})
            assert gone.status_code == 200
            assert await call(client, session_id, "count") == "2"
            assert local.app_id not in (None, app_id)


async def test_protocol_version_header_added_from_record() -> None:
    seen: list[str | None] = []
    sdk_app = build_sdk_app(stateless=True)

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            seen.append((headers.get(b"mcp-protocol-version") or b"").decode() or None)
        await sdk_app(scope, receive, send)

    middleware = SessionMiddleware(spy, store=MemoryStore(), mode="stateless")
    async with sdk_app.router.lifespan_context(sdk_app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            session_id = await initialize(client)
            await call(client, session_id, "count")
    assert seen[-1] == "2025-06-18"


class DownStore(MemoryStore):
    """A memory store whose server has gone away, for the 503 mapping."""

    down = False

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        if self.down:
            raise StoreUnavailableError("store is down")
        return await super()._get(key, now)

    async def _insert(self, record: SessionRecord) -> None:
        if self.down:
            raise StoreUnavailableError("store is down")
        await super()._insert(record)


async def test_store_down_is_503_and_heals() -> None:
    store = DownStore()
    async with serving(build_sdk_app(), store=store) as client:
        session_id = await initialize(client)
        store.down = True
        response = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 4, "method": "ping"},
            headers={**HEADERS, "mcp-session-id": session_id},
        )
        assert_jsonrpc_error(response, 503, MSG_STORE_UNAVAILABLE, 4)
        assert response.headers["retry-after"] == "1"
        init = await client.post("/mcp", json=INIT, headers=HEADERS)
        assert_jsonrpc_error(init, 503, MSG_STORE_UNAVAILABLE, 1)
        assert "mcp-session-id" not in init.headers
        store.down = False
        assert await call(client, session_id, "count") == "1"


async def test_principal_mismatch_is_404() -> None:
    who = {"principal": "alice"}
    async with serving(
        build_sdk_app(), store=MemoryStore(), principal=lambda scope: who["principal"]
    ) as client:
        session_id = await initialize(client)
        assert await call(client, session_id, "count") == "1"
        who["principal"] = "mallory"
        response = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 6, "method": "ping"},
            headers={**HEADERS, "mcp-session-id": session_id},
        )
        assert_jsonrpc_error(response, 404, MSG_SESSION_NOT_FOUND, 6)


async def test_touch_is_throttled() -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store, touch_interval=3600) as client:
        session_id = await initialize(client)
        before = await store.load(session_id)
        await call(client, session_id, "count")
        after = await store.load(session_id)
        assert before is not None
        assert after is not None
        assert after.last_accessed == before.last_accessed
    async with serving(build_sdk_app(), store=store, touch_interval=0) as client:
        await call(client, session_id, "count")
        touched = await store.load(session_id)
        assert touched is not None
        assert touched.last_accessed > before.last_accessed


async def test_streams_per_session_are_capped_oldest_first() -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store, max_streams_per_session=2) as client:
        session_id = await initialize(client)
        headers = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
        stream_ids = []
        for rid in range(3):
            response = await client.post(
                "/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": rid,
                    "method": "tools/call",
                    "params": {"name": "count", "arguments": {}},
                },
                headers=headers,
            )
            ids = [
                line[3:].strip() for line in response.text.splitlines() if line.startswith("id:")
            ]
            stream_ids.append(ids[-1].split(".")[0])
        assert len(set(stream_ids)) == 3
        assert await store.load_stream(session_id, stream_ids[0]) is None
        for kept_id in stream_ids[1:]:
            assert await store.load_stream(session_id, kept_id) is not None
        # The two kept are the ones noted: keeping one drops the older.
        assert await store.record_streams(session_id, [], keep=1) == [stream_ids[1]]
        gone = await client.get(
            "/mcp",
            headers={
                **headers,
                "accept": "text/event-stream",
                "last-event-id": f"{stream_ids[0]}.0",
            },
        )
        # The same "events lost" error as a trimmed stream's (its request id went with it).
        assert gone.status_code == 200
        [lost] = messages(gone)
        assert lost == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": EVENTS_LOST, "message": MSG_EVENTS_LOST},
        }
        unknown = await client.get(
            "/mcp",
            headers={
                **headers,
                "accept": "text/event-stream",
                "last-event-id": "0123456789abcdef.3",
            },
        )
        assert unknown.status_code == 400  # never a stream of this session: unknown
        kept = await client.get(
            "/mcp",
            headers={
                **headers,
                "accept": "text/event-stream",
                "last-event-id": f"{stream_ids[2]}.0",
            },
        )
        assert kept.status_code == 200
        assert '"text":"3"' in kept.text


async def test_stateless_mode_keeps_a_session_only_while_it_is_busy() -> None:
    """No per-session memory for idle sessions: only a busy one, or its streams to record."""
    store = MemoryStore()
    sdk_app = build_sdk_app(stateless=True)
    during: list[bool] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        session = current_session_or_none()
        if scope["type"] == "http" and session is not None:
            local = middleware._locals.get(session.id)
            during.append(local is not None and local.session is session)
        await sdk_app(scope, receive, send)

    # Streams are recorded in the session two at a time (20 // RECORD_EVERY).
    middleware = SessionMiddleware(spy, store=store, mode="stateless", max_streams_per_session=20)
    async with sdk_app.router.lifespan_context(sdk_app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            session_id = await initialize(client)
            assert len(middleware._locals) == 0
            assert await call(client, session_id, "count") == "1"
            # One stream not yet recorded: kept, without the handle and its record.
            local = middleware._locals.get(session_id)
            assert local is not None
            assert local.session is None
            assert len(local.unrecorded_streams) == 1
            assert await call(client, session_id, "count") == "2"
            assert len(middleware._locals) == 0
            assert await call(client, session_id, "session_info") == "unit|2025-06-18"
            # Exactly the two streams were noted in the store: keeping one drops one.
            assert len(await store.record_streams(session_id, [], keep=1)) == 1
    # initialize runs on a provisional handle; every later request on the kept one.
    assert during == [False, True, True, True, True]
