"""A full process keeps serving: app sessions are a cache, whatever the app's own cap."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from mcp_session_mw import ConfigurationError, MemoryStore, SessionMiddleware, Store, create_store
from mcp_session_mw.jsonrpc import MSG_APP_SESSION_FAILED
from mcp_session_mw.rehydrate import LocalSession, LocalSessions

from .asgi_lifespan import lifespan
from .test_middleware import HEADERS, INIT, assert_jsonrpc_error, call, initialize

pytestmark = pytest.mark.anyio


class AppSpy:
    """The SDK app with a session cap, and what the middleware asked of it.

    ``opened`` are the app session ids the app handed out, ``closed`` those the
    middleware ended by DELETE; the app's 503s ("Too many open sessions") are counted.
    """

    def __init__(self, max_sessions: int | None) -> None:
        server = MCPServer("full")

        @server.tool()
        async def echo() -> str:
            return "ok"

        self.app: Starlette = server.streamable_http_app(max_sessions=max_sessions)
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.refused = 0
        self.closed_one = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "DELETE":
            app_id = Headers(scope=scope).get("mcp-session-id")
            if app_id is not None:
                self.closed.append(app_id)
                self.closed_one.set()

        async def spy(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 503:
                    self.refused += 1
                app_id = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if app_id is not None and app_id not in self.opened:
                    self.opened.append(app_id)
            await send(message)

        await self.app(scope, receive, spy)

    @property
    def open_now(self) -> int:
        return len(set(self.opened) - set(self.closed))


@asynccontextmanager
async def processes(
    store: Store, caps: list[int | None], **options: Any
) -> AsyncIterator[list[tuple[httpx.AsyncClient, AppSpy]]]:
    """One middleware "process" per cap, over one store, each with its own capped app."""
    async with AsyncExitStack() as stack:
        out = []
        for cap in caps:
            spy = AppSpy(cap)
            middleware = SessionMiddleware(spy, store=store, **options)
            await stack.enter_async_context(lifespan(middleware))
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=middleware),
                    base_url="http://127.0.0.1:8000",
                )
            )
            out.append((client, spy))
        yield out


@pytest.fixture(params=["memory", "sqlite"])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        store: Store = MemoryStore()
    else:
        store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'full.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("local", [2, 3, 50], ids=["equal", "one-above", "far-above"])
async def test_initialize_succeeds_on_a_process_whose_app_is_full(local: int) -> None:
    """max_local_sessions at, or above, the app's cap: every initialize still succeeds."""
    async with processes(MemoryStore(), [2], max_local_sessions=local) as [(client, spy)]:
        sessions = [await initialize(client) for _ in range(6)]
        assert spy.open_now <= 2
        # Every session still answers, the evicted ones re-created on the way.
        for session_id in reversed(sessions):
            assert await call(client, session_id, "echo") == "ok"
        assert spy.open_now <= 2


async def test_a_session_from_another_instance_is_served_by_a_full_process(
    shared_store: Store,
) -> None:
    """Sessions made on a re-hydrate on b, whose app holds two at most: none gets 500."""
    async with processes(shared_store, [None, 2]) as [(a, _), (b, spy)]:
        sessions = [await initialize(a) for _ in range(5)]
        for _ in range(2):
            for session_id in sessions:
                assert await call(b, session_id, "echo") == "ok"
        assert spy.open_now <= 2
        assert spy.refused >= 1  # the cap was reached, and answered by making room


async def test_the_least_recently_used_app_session_is_evicted() -> None:
    """The app full: the session no request used for longest is the one closed."""
    async with processes(MemoryStore(), [2], max_local_sessions=10) as [(client, spy)]:
        first = await initialize(client)
        await initialize(client)
        assert await call(client, first, "echo") == "ok"  # the second is now the LRU one
        opened = list(spy.opened)
        await initialize(client)
        assert spy.closed == [opened[1]]


async def test_a_full_app_with_nothing_of_ours_to_evict_answers_503() -> None:
    """Sessions the app holds for others cannot be closed: a 503 the client can retry."""
    async with processes(MemoryStore(), [1]) as [(client, spy)]:
        # A session opened behind the middleware's back fills the app.
        raw = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=spy.app), base_url="http://127.0.0.1:8000"
        )
        async with raw:
            taken = await raw.post("/mcp", json=INIT, headers=HEADERS)
            assert taken.status_code == 200
            refused = await client.post("/mcp", json=INIT, headers=HEADERS)
            assert refused.status_code == 503
            assert "mcp-session-id" not in refused.headers


async def test_idle_app_sessions_are_closed_and_re_created_on_use() -> None:
    store = MemoryStore()
    now = [time.time()]
    store._clock = lambda: now[0]
    async with processes(store, [None], app_session_idle_timeout=4) as [(client, spy)]:
        session_id = await initialize(client)
        assert await call(client, session_id, "echo") == "ok"
        assert spy.closed == []
        now[0] += 10  # past the idle timeout on the store's clock
        with anyio.fail_after(10):
            await spy.closed_one.wait()
        assert spy.closed == spy.opened
        assert await call(client, session_id, "echo") == "ok"  # re-created
        assert spy.open_now == 1


def test_a_busy_entry_is_never_evicted() -> None:
    """A request running on a session keeps its app session, whatever the map's size."""
    now = [0.0]
    local = LocalSessions(2, lambda: now[0])
    entries = {name: LocalSession(None, f"app-{name}") for name in "abc"}
    for name in "ab":
        assert local.put(name, entries[name]) == []
    entries["a"].busy = 1
    assert local.put("c", entries["c"]) == [entries["b"]]  # a is older, but busy
    assert local.evict_one(keep="c") is None  # only a and c are left: busy, and kept
    entries["c"].busy = 1
    assert local.make_room() == []  # nothing may go: the map stays full, both are busy
    now[0] = 100.0
    assert local.idle(10) == []
    entries["a"].busy = 0
    assert local.idle(10) == [entries["a"]]
    assert len(local) == 1  # c, busy, stays


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_bad_app_session_idle_timeout_raises(value: float) -> None:
    with pytest.raises(ConfigurationError):
        SessionMiddleware(Starlette(), store=MemoryStore(), app_session_idle_timeout=value)


async def test_a_re_creation_on_an_app_full_of_foreign_sessions_is_503_with_retry_after() -> None:
    """Nothing of ours to close: the client is told to come back, not given a 500."""
    store = MemoryStore()
    async with processes(store, [None, 1]) as [(a, _), (b, spy)]:
        session_id = await initialize(a)
        raw = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=spy.app), base_url="http://127.0.0.1:8000"
        )
        async with raw:
            assert (await raw.post("/mcp", json=INIT, headers=HEADERS)).status_code == 200
            refused = await b.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
                headers={**HEADERS, "mcp-session-id": session_id},
            )
            assert_jsonrpc_error(refused, 503, MSG_APP_SESSION_FAILED, 7)
            assert refused.headers["retry-after"] == "1"
