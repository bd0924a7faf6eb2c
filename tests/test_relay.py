"""The reply inbox of an app session follows the store only while a server request is pending.

Two middlewares (two "processes") in front of two SDK apps share one store.
A session lives in process A's app; its tool asks the client for input
(elicitation). The client's reply reaches A directly or process B, which hands
it over through the store to A's inbox. Store reads of the reply stream are
counted by a thin store subclass, so an inbox that runs when nothing is
pending shows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel
from starlette.applications import Starlette

from mcp_session_mw import MemoryStore, SessionMiddleware, relay
from mcp_session_mw.errors import SessionNotFoundError
from mcp_session_mw.records import SessionRecord, StoredEvent
from mcp_session_mw.relay import PENDING_KEY, REPLY_STREAM_PREFIX, AppSessionWorker

from .asgi_lifespan import ACCEPT, BASE_URL, PROTOCOL_VERSION, lifespan, messages

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

FOLLOW_TIMEOUT = 0.2
"""The inbox's quiet wait in these tests (the module's is seconds)."""
WAIT = 10.0


class CountingStore(MemoryStore):
    """A memory store that counts waits on reply streams."""

    def __init__(self) -> None:
        super().__init__()
        self.reply_waits = 0

    async def wait_events(
        self, session_id: str, stream_id: str, after_seq: int, timeout: float, limit: int = 1000
    ) -> list[StoredEvent]:
        if stream_id.startswith(REPLY_STREAM_PREFIX):
            self.reply_waits += 1
        return await super().wait_events(session_id, stream_id, after_seq, timeout, limit)


class Name(BaseModel):
    name: str


def build_app() -> Starlette:
    server = MCPServer("relay")

    @server.tool()
    async def ask(ctx: Context) -> str:
        answer = await ctx.elicit("Your name?", schema=Name)
        return f"{answer.action}:{answer.data.name if answer.action == 'accept' else ''}"

    @server.tool()
    async def plain() -> str:
        return "plain"

    return server.streamable_http_app()


class Process:
    def __init__(self, middleware: SessionMiddleware, client: httpx.AsyncClient) -> None:
        self.middleware = middleware
        self.client = client

    async def post(self, session_id: str | None, message: dict[str, Any]) -> httpx.Response:
        headers = {"accept": ACCEPT, "content-type": "application/json"}
        if session_id is not None:
            headers["mcp-session-id"] = session_id
            headers["mcp-protocol-version"] = PROTOCOL_VERSION
        return await self.client.post("/mcp", content=json.dumps(message), headers=headers)

    def worker(self, session_id: str) -> AppSessionWorker:
        local = self.middleware._locals.get(session_id)
        assert local is not None
        assert local.worker is not None
        return local.worker


@asynccontextmanager
async def processes(store: CountingStore) -> AsyncIterator[tuple[Process, Process]]:
    async with AsyncExitStack() as stack:
        found: list[Process] = []
        for _ in range(2):
            middleware = SessionMiddleware(build_app(), store=store, mode="rehydrate")
            await stack.enter_async_context(lifespan(middleware))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url=BASE_URL)
            )
            found.append(Process(middleware, client))
        yield found[0], found[1]


async def open_session(process: Process) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"elicitation": {}},
            "clientInfo": {"name": "relay-test", "version": "1"},
        },
    }
    response = await process.post(None, init)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    done = await process.post(session_id, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert done.status_code == 202, done.text
    return session_id


async def call(process: Process, session_id: str, tool: str, rid: int) -> str:
    response = await process.post(
        session_id,
        {
            "jsonrpc": "2.0",
            "id": rid,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {}},
        },
    )
    assert response.status_code == 200, response.text
    [answer] = [m for m in messages(response) if m.get("id") == rid]
    return str(answer["result"]["content"][0]["text"])


async def pending_request_id(store: CountingStore, session_id: str) -> Any:
    """The id the client sees on the one server request pending in the session."""
    with anyio.fail_after(WAIT):
        while True:
            record = await store.load(session_id)
            assert record is not None
            table = record.meta.get(PENDING_KEY)
            if isinstance(table, dict) and table:
                [key] = table
                return json.loads(key)
            await anyio.sleep(0.01)


async def until(condition: Any) -> None:
    """Poll ``condition`` (state of another task, no event to wait on) for up to WAIT seconds."""
    with anyio.fail_after(WAIT):
        while True:
            if condition():
                return
            await anyio.sleep(0.02)


@pytest.fixture
def short_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "FOLLOW_TIMEOUT", FOLLOW_TIMEOUT)


@pytest.mark.parametrize("reply_to", ["other", "owner"])
@pytest.mark.usefixtures("short_follow")
async def test_the_inbox_runs_only_while_a_server_request_is_pending(reply_to: str) -> None:
    store = CountingStore()
    async with processes(store) as (owner, other):
        session_id = await open_session(owner)
        assert await call(owner, session_id, "plain", 2) == "plain"
        worker = owner.worker(session_id)
        await anyio.sleep(3 * FOLLOW_TIMEOUT)
        assert not worker.following
        assert store.reply_waits == 0

        result: list[str] = []
        async with anyio.create_task_group() as tg:

            async def ask() -> None:
                result.append(await call(owner, session_id, "ask", 3))

            tg.start_soon(ask)
            request_id = await pending_request_id(store, session_id)
            assert str(request_id).startswith("mcpmw-")
            assert worker.following
            await until(lambda: store.reply_waits > 0)
            reply = {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": {"action": "accept", "content": {"name": "alice"}},
            }
            answered = await (other if reply_to == "other" else owner).post(session_id, reply)
            assert answered.status_code == 202, answered.text
        assert result == ["accept:alice"]

        await until(lambda: not worker.following)
        waits = store.reply_waits
        await anyio.sleep(3 * FOLLOW_TIMEOUT)
        assert store.reply_waits == waits
        record = await store.load(session_id)
        assert record is not None
        assert record.meta.get(PENDING_KEY) == {}
        # A later request starts it again, and the hand-over still works.
        assert await call(owner, session_id, "plain", 4) == "plain"
        async with anyio.create_task_group() as tg:

            async def ask_again() -> None:
                result.append(await call(owner, session_id, "ask", 5))

            tg.start_soon(ask_again)
            request_id = await pending_request_id(store, session_id)
            assert worker.following
            reply = {"jsonrpc": "2.0", "id": request_id, "result": {"action": "decline"}}
            answered = await other.post(session_id, reply)
            assert answered.status_code == 202, answered.text
        assert result == ["accept:alice", "decline:"]
        await until(lambda: not worker.following)


async def test_a_reply_for_a_deleted_session_is_not_taken_for_an_outage() -> None:
    """hand_over tells a session that went away (-> 404) from a store that is down (-> 503)."""
    store = MemoryStore()
    with pytest.raises(SessionNotFoundError):
        await relay.hand_over(store, "gone", "proc-a", b"{}", '"k"', WAIT)
    session_id = "alive"
    now = store.now()
    await store.create(
        session_id,
        SessionRecord(
            key="",
            protocol_version=PROTOCOL_VERSION,
            created_at=now,
            last_accessed=now,
            expires_at=now + 60,
            ttl=60,
            meta={PENDING_KEY: {'"k"': ["proc-a", 7]}},
        ),
    )

    async def delete_soon() -> None:
        await anyio.sleep(0.1)
        await store.delete(session_id)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(delete_soon)
            with pytest.raises(SessionNotFoundError):
                await relay.hand_over(store, session_id, "proc-a", b"{}", '"k"', WAIT)


class GroupKiller(Exception):
    """Raised by a task started on the middleware's group directly, bypassing containment."""


@pytest.mark.usefixtures("short_follow")
async def test_a_background_group_that_ends_is_replaced_and_its_workers_run_again() -> None:
    store = CountingStore()
    async with processes(store) as (owner, other):
        held = await open_session(owner)
        worker = owner.worker(held)
        await until(lambda: worker._tasks is not None)
        tasks = owner.middleware.lifespan.background
        assert tasks is not None
        group = tasks._group
        assert group is not None

        async def kill() -> None:
            raise GroupKiller

        group.start_soon(kill)
        await until(lambda: tasks.replaced == 1 and worker._tasks is not None)
        assert tasks._group is not group
        # The worker of the session held before runs again: a reply still reaches the app.
        result: list[str] = []
        async with anyio.create_task_group() as tg:

            async def ask() -> None:
                result.append(await call(owner, held, "ask", 3))

            tg.start_soon(ask)
            request_id = await pending_request_id(store, held)
            reply = {"jsonrpc": "2.0", "id": request_id, "result": {"action": "decline"}}
            answered = await other.post(held, reply)
            assert answered.status_code == 202, answered.text
        assert result == ["decline:"]
        # New and re-created sessions start their workers in the new group.
        fresh = await open_session(owner)
        assert await call(owner, fresh, "plain", 4) == "plain"
        elsewhere = await open_session(other)
        assert await call(owner, elsewhere, "plain", 5) == "plain"
        await until(lambda: owner.worker(elsewhere)._tasks is not None)
