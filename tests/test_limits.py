"""Admission limits of SessionMiddleware: initialize_ttl, max_sessions, per principal, headers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
from starlette.datastructures import Headers
from starlette.types import Scope

from mcp_session_mw import ConfigurationError, MemoryStore, SessionMiddleware, Store, create_store
from mcp_session_mw.jsonrpc import (
    INVALID_PARAMS,
    MSG_BAD_INITIALIZE,
    MSG_HEADER_TOO_LARGE,
    MSG_PRINCIPAL_SESSION_LIMIT,
    MSG_SESSION_NOT_FOUND,
    MSG_TOO_MANY_SESSIONS,
    MSG_UNSUPPORTED_MEDIA_TYPE,
)
from mcp_session_mw.limits import INDEX_KIND, count_sessions, index_id

from .test_middleware import (
    HEADERS,
    INIT,
    assert_jsonrpc_error,
    build_sdk_app,
    call,
    initialize,
    serving,
)

pytestmark = pytest.mark.anyio


def user_of(scope: Scope) -> str | None:
    """Principal from an ``x-user`` header: stands in for real authentication."""
    return Headers(scope=scope).get("x-user")


def as_user(client: httpx.AsyncClient, user: str) -> httpx.AsyncClient:
    client.headers["x-user"] = user
    return client


async def try_initialize(client: httpx.AsyncClient, rid: int = 1) -> httpx.Response:
    return await client.post("/mcp", json={**INIT, "id": rid}, headers=HEADERS)


@asynccontextmanager
async def two_processes(store: Store, **options: Any) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two middleware instances (two "processes") over one store, each with its own app."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(serving(build_sdk_app(), store=store, **options))
            for _ in range(2)
        ]
        yield clients


@pytest.fixture(params=["memory", "sqlite"])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        store: Store = MemoryStore()
    else:
        store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# -- initialize_ttl ----------------------------------------------------------------------


async def test_a_session_gets_the_full_ttl_at_its_second_request() -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store, ttl=600, initialize_ttl=30) as client:
        response = await try_initialize(client)
        session_id = response.headers["mcp-session-id"]
        fresh = await store.load(session_id)
        assert fresh is not None
        assert fresh.ttl == 30
        assert fresh.expires_at - fresh.created_at == pytest.approx(30)
        await call(client, session_id, "count")
        used = await store.load(session_id)
        assert used is not None
        assert used.ttl == 600
        assert used.expires_at - used.last_accessed == pytest.approx(600)


def stepped_store() -> tuple[MemoryStore, list[float]]:
    """A memory store on a clock the test moves (the middleware reads the store's clock)."""
    store = MemoryStore()
    now = [time.time()]
    store._clock = lambda: now[0]
    return store, now


async def test_sessions_never_used_again_expire_after_initialize_ttl() -> None:
    store, now = stepped_store()
    async with serving(build_sdk_app(), store=store, ttl=600, initialize_ttl=0.3) as client:
        flood = [(await try_initialize(client, i)).headers["mcp-session-id"] for i in range(5)]
        kept = await initialize(client)  # initialize + notifications/initialized
        assert await count_sessions(store) == 6
        now[0] += 0.29
        assert await count_sessions(store) == 6
        now[0] += 0.02
        assert await count_sessions(store) == 1
        for session_id in flood:
            assert await store.load(session_id) is None
        assert await call(client, kept, "count") == "1"


async def test_initialize_ttl_none_gives_the_full_ttl_at_once() -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store, ttl=600, initialize_ttl=None) as client:
        session_id = (await try_initialize(client)).headers["mcp-session-id"]
        record = await store.load(session_id)
        assert record is not None
        assert record.ttl == 600


# -- max_sessions -------------------------------------------------------------------------


async def test_max_sessions_refuses_with_503_and_frees_on_delete() -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store, max_sessions=2) as client:
        first = await initialize(client)
        await initialize(client)
        refused = await try_initialize(client, 7)
        assert_jsonrpc_error(refused, 503, MSG_TOO_MANY_SESSIONS, 7)
        assert refused.headers["retry-after"] == "5"
        assert "mcp-session-id" not in refused.headers
        assert await count_sessions(store) == 2
        # Existing sessions keep working while the store is full.
        assert await call(client, first, "count") == "1"
        deleted = await client.delete("/mcp", headers={**HEADERS, "mcp-session-id": first})
        assert deleted.status_code == 200
        assert (await try_initialize(client)).status_code == 200


async def test_max_sessions_counts_other_processes_at_each_scan(shared_store: Store) -> None:
    async with two_processes(shared_store, max_sessions=3, session_count_interval=0.2) as clients:
        a, b = clients
        await initialize(a)
        await initialize(a)
        # b's first scan sees a's two sessions: one more fits.
        await initialize(b)
        assert_jsonrpc_error(await try_initialize(b, 2), 503, MSG_TOO_MANY_SESSIONS, 2)
        # a has not scanned since it created its two; once its count is stale it sees b's too.
        await anyio.sleep(0.3)
        assert_jsonrpc_error(await try_initialize(a, 3), 503, MSG_TOO_MANY_SESSIONS, 3)
    assert await count_sessions(shared_store) == 3


async def test_a_refused_initialize_never_reaches_the_app() -> None:
    calls: list[str] = []
    sdk_app = build_sdk_app()

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["method"])
        await sdk_app(scope, receive, send)

    middleware = SessionMiddleware(spy, store=MemoryStore(), max_sessions=1)
    async with sdk_app.router.lifespan_context(sdk_app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            await initialize(client)
            seen = len(calls)
            assert (await try_initialize(client)).status_code == 503
            assert len(calls) == seen


# -- max_sessions_per_principal ---------------------------------------------------------------


async def test_per_principal_limit_is_429_with_retry_after_and_per_principal() -> None:
    store = MemoryStore()
    async with serving(
        build_sdk_app(), store=store, principal=user_of, max_sessions_per_principal=2
    ) as client:
        as_user(client, "alice")
        first = await initialize(client)
        await initialize(client)
        refused = await try_initialize(client, 9)
        assert_jsonrpc_error(refused, 429, MSG_PRINCIPAL_SESSION_LIMIT, 9)
        assert int(refused.headers["retry-after"]) >= 1
        assert "mcp-session-id" not in refused.headers
        as_user(client, "bob")
        await initialize(client)  # bob has slots of his own
        as_user(client, "alice")
        deleted = await client.delete("/mcp", headers={**HEADERS, "mcp-session-id": first})
        assert deleted.status_code == 200
        await initialize(client)  # the deleted session's slot is free again
        assert_jsonrpc_error(await try_initialize(client, 4), 429, MSG_PRINCIPAL_SESSION_LIMIT, 4)


async def test_per_principal_limit_holds_across_processes_and_races(shared_store: Store) -> None:
    async with two_processes(
        shared_store, principal=user_of, max_sessions_per_principal=3
    ) as clients:
        for client in clients:
            as_user(client, "carol")
        statuses: list[int] = []

        async def attempt(client: httpx.AsyncClient, rid: int) -> None:
            statuses.append((await try_initialize(client, rid)).status_code)

        async with anyio.create_task_group() as tg:
            for rid in range(8):
                tg.start_soon(attempt, clients[rid % 2], rid)
        assert sorted(statuses) == [200] * 3 + [429] * 5
    assert await count_sessions(shared_store) == 3


async def test_unused_sessions_free_their_principal_slots() -> None:
    store, now = stepped_store()
    async with serving(
        build_sdk_app(),
        store=store,
        principal=user_of,
        max_sessions_per_principal=1,
        initialize_ttl=0.3,
    ) as client:
        as_user(client, "dave")
        assert (await try_initialize(client)).status_code == 200
        refused = await try_initialize(client)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        now[0] += 0.31
        assert (await try_initialize(client)).status_code == 200


async def test_the_index_is_no_session_and_no_client_can_reach_it() -> None:
    store = MemoryStore()
    async with serving(
        build_sdk_app(),
        store=store,
        principal=user_of,
        max_sessions_per_principal=5,
        max_sessions=10,
    ) as client:
        as_user(client, "erin")
        session_id = await initialize(client)
        index = await store.load(index_id("erin"))
        assert index is not None
        assert index.meta["kind"] == INDEX_KIND
        assert list(index.meta["sessions"]) == [store.key(session_id)]
        assert await count_sessions(store) == 1
        assert await store.count_active() == 2
        probe = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 3, "method": "ping"},
            headers={**HEADERS, "mcp-session-id": index_id("erin")},
        )
        assert_jsonrpc_error(probe, 404, MSG_SESSION_NOT_FOUND, 3)


async def test_touches_keep_the_principal_slot_and_the_index_alive() -> None:
    """A session used past its first expiry still holds its slot; the index outlives it."""
    store, now = stepped_store()
    async with serving(
        build_sdk_app(),
        store=store,
        principal=user_of,
        max_sessions_per_principal=1,
        ttl=0.6,
        initialize_ttl=0.3,
        touch_interval=0,
    ) as client:
        as_user(client, "frank")
        session_id = await initialize(client)
        for _ in range(4):  # 1.2 s in all: past initialize_ttl, ttl and the first index life
            now[0] += 0.3
            assert await call(client, session_id, "count")
        assert (await try_initialize(client)).status_code == 429
        index = await store.load(index_id("frank"))
        assert index is not None
        assert index.expires_at > store.now() + 0.6


async def test_no_principal_is_not_limited_per_principal() -> None:
    async with serving(
        build_sdk_app(), store=MemoryStore(), principal=user_of, max_sessions_per_principal=1
    ) as client:
        for rid in range(3):
            assert (await try_initialize(client, rid)).status_code == 200


# -- headers, content types, initialize shapes --------------------------------------------------


async def test_an_overlong_header_is_431() -> None:
    async with serving(build_sdk_app(), store=MemoryStore(), max_header_size=100) as client:
        response = await client.post("/mcp", json=INIT, headers={**HEADERS, "x-padding": "p" * 100})
        assert_jsonrpc_error(response, 431, MSG_HEADER_TOO_LARGE, None)
        assert (await try_initialize(client)).status_code == 200
    async with serving(build_sdk_app(), store=MemoryStore()) as client:
        response = await client.post(
            "/mcp", json=INIT, headers={**HEADERS, "authorization": "Bearer " + "t" * 8192}
        )
        assert_jsonrpc_error(response, 431, MSG_HEADER_TOO_LARGE, None)
    async with serving(build_sdk_app(), store=MemoryStore(), max_header_size=None) as client:
        response = await client.post(
            "/mcp", json=INIT, headers={**HEADERS, "authorization": "Bearer " + "t" * 8192}
        )
        assert response.status_code == 200  # no limit: the header is the app's business


async def test_the_header_limit_holds_on_the_modern_lane_too() -> None:
    """The limit is applied before the lane is told, so a modern-lane request gets it too."""
    modern = {**HEADERS, "mcp-protocol-version": "2026-07-28"}
    async with serving(build_sdk_app(), store=MemoryStore(), max_header_size=100) as client:
        response = await client.post("/mcp", json=INIT, headers={**modern, "x-padding": "p" * 100})
        assert_jsonrpc_error(response, 431, MSG_HEADER_TOO_LARGE, None)
        passed = await client.post("/mcp", json=INIT, headers=modern)
        assert passed.status_code != 431  # within the limit: the app's to answer


async def test_a_post_without_content_type_is_415() -> None:
    async with serving(build_sdk_app(), store=MemoryStore()) as client:
        body = json.dumps(INIT).encode()
        response = await client.post("/mcp", content=body, headers={"accept": HEADERS["accept"]})
        assert "content-type" not in response.request.headers
        assert_jsonrpc_error(response, 415, MSG_UNSUPPORTED_MEDIA_TYPE, None)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
async def test_a_body_that_is_not_json_is_415(content_type: str) -> None:
    async with serving(build_sdk_app(), store=MemoryStore()) as client:
        response = await client.post(
            "/mcp", json=INIT, headers={**HEADERS, "content-type": content_type}
        )
        assert_jsonrpc_error(response, 415, MSG_UNSUPPORTED_MEDIA_TYPE, None)


async def test_json_with_parameters_is_accepted() -> None:
    async with serving(build_sdk_app(), store=MemoryStore()) as client:
        response = await client.post(
            "/mcp",
            json=INIT,
            headers={**HEADERS, "content-type": "application/json; charset=utf-8"},
        )
        assert response.status_code == 200


PARAMS = cast(dict[str, Any], INIT["params"])


@pytest.mark.parametrize(
    "body",
    [
        {**INIT, "jsonrpc": "1.0"},
        {k: v for k, v in INIT.items() if k != "id"},
        {**INIT, "id": {"nested": 1}},
        {**INIT, "params": []},
        {**INIT, "params": {**PARAMS, "protocolVersion": 20250618}},
        {**INIT, "params": {**PARAMS, "protocolVersion": "v" * 65}},
        {**INIT, "params": {**PARAMS, "clientInfo": "unit"}},
        {**INIT, "params": {**PARAMS, "capabilities": None}},
    ],
)
async def test_malformed_initialize_is_400_and_stores_nothing(body: dict[str, Any]) -> None:
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store) as client:
        response = await client.post("/mcp", json=body, headers=HEADERS)
        assert response.status_code == 400
        assert response.json()["error"] == {"code": INVALID_PARAMS, "message": MSG_BAD_INITIALIZE}
    assert store._records == {}


async def test_an_initialize_the_app_answers_with_an_error_mints_no_session() -> None:
    """The SDK answers an initialize without params with 200 and a JSON-RPC error."""
    store = MemoryStore()
    async with serving(build_sdk_app(), store=store, max_sessions=1) as client:
        response = await client.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize"}, headers=HEADERS
        )
        assert "mcp-session-id" not in response.headers
        assert "error" in response.text
        assert store._records == {}
        await initialize(client)  # the refused one gave its slot back


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"initialize_ttl": 0},
        {"max_sessions": 0},
        {"max_sessions_per_principal": -1},
        {"session_count_interval": 0},
        {"max_header_size": 0},
    ],
)
def test_bad_limit_options_raise(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SessionMiddleware(build_sdk_app(), store=MemoryStore(), **options)
