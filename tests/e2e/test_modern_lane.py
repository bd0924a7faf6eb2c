"""End to end: the SDK's own client on the 2026-07-28 lane against two processes on one store.

Two ``examples/10_modern_server.py`` processes share a store (Redis,
PostgreSQL, SQLite). A listen stream on one gets what the other publishes
(and only what it asked for); a multi-round ``requestState`` begun on one
process finishes on the other across a key rotation; a single-use token and a
state handle are the same on both. The handshake lane runs beside it on the
same store.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated, ServerEvent
from mcp_types import Implementation, TextContent

from mcp_session_mw.modern.keyring import generate_key, retire_key, rotate_keys
from mcp_session_mw.stores import Store, create_store

from ..services import POSTGRES_URL, REDIS_URL, need_service
from .server import run_server

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EXAMPLE = "examples/10_modern_server.py"
MODERN = "2026-07-28"
CLIENT_INFO = Implementation(name="e2e-modern-client", version="1.0")
TEST_TIMEOUT = 60.0
"""Bounds a hang on a loaded two-core machine; nothing here measures speed."""
HTTP_TIMEOUT = 15.0
KEY_REFRESH = 0.1
INVALID_STATE = "Invalid or expired requestState"


class Lane:
    """One store namespace for a test: its URL, its options, and how to reach it from here."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:10]
        self.kind = kind
        self.channel = f"bus{tag}"
        if kind == "sqlite":
            self.url, self.options = f"sqlite+aiosqlite:///{tmp_path / 'lane.db'}", {}
        elif kind == "postgresql":
            need_service("postgresql")
            self.url, self.options = POSTGRES_URL, {"table_prefix": f"m{tag}_"}
        else:
            need_service("redis")
            self.url, self.options = REDIS_URL, {"prefix": f"test:m{tag}:"}

    def store(self) -> Store:
        return create_store(self.url, **self.options)

    def args(self) -> list[str]:
        options = [f"--store-option={k}={v}" for k, v in self.options.items()]
        return [
            EXAMPLE,
            f"--store={self.url}",
            f"--key-refresh={KEY_REFRESH}",
            f"--bus-channel={self.channel}",
            *options,
        ]

    async def destroy(self) -> None:
        store = self.store()
        await store.open()
        if self.kind == "postgresql":
            await store.drop_schema()  # type: ignore[attr-defined]
        elif self.kind == "redis":
            await store.purge()  # type: ignore[attr-defined]
        await store.close()


@asynccontextmanager
async def admin(lane: Lane) -> AsyncIterator[Store]:
    """The operator's own connection to the lane's store (as the CLI has)."""
    store = lane.store()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["redis", "postgresql", "sqlite"])
def lane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lane]:
    spec = Lane(request.param, tmp_path)

    async def first_key() -> None:
        async with admin(spec) as store:
            await generate_key(store)

    anyio.run(first_key)
    try:
        yield spec
    finally:
        anyio.run(spec.destroy)


@pytest.fixture
def servers(lane: Lane) -> Iterator[tuple[str, str]]:
    with ExitStack() as stack:
        first = stack.enter_context(run_server(lane.args()))
        second = stack.enter_context(run_server(lane.args()))
        yield f"{first}/mcp", f"{second}/mcp"


class Alternating(httpx2.AsyncBaseTransport):
    """Sends the n-th ``tools/call`` of a tool to ``routes[n]``, running ``before[n]`` first."""

    def __init__(self, tool: str, routes: list[str]) -> None:
        self.tool, self.routes = tool, [httpx2.URL(r) for r in routes]
        self.before: dict[int, Callable[[], Awaitable[None]]] = {}
        self.calls: list[httpx2.Request] = []
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        target = self.routes[0]
        if request.method == "POST":
            body = json.loads(request.content or b"{}")
            params = body.get("params") if isinstance(body, dict) else None
            if isinstance(params, dict) and params.get("name") == self.tool:
                index = len(self.calls)
                self.calls.append(request)
                if index in self.before:
                    await self.before[index]()
                target = self.routes[min(index, len(self.routes) - 1)]
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def modern_client(
    url: str, transport: httpx2.AsyncBaseTransport | None = None
) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(transport=transport, timeout=HTTP_TIMEOUT) as http,
        Client(
            streamable_http_client(url, http_client=http), mode=MODERN, client_info=CLIENT_INFO
        ) as client,
    ):
        yield client


async def text_of(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def cached_roles(client: Client) -> list[str]:
    result = await client.call_tool("keyring", {})
    assert not result.is_error, result
    assert result.structured_content is not None
    roles = result.structured_content["result"]
    assert isinstance(roles, list)
    return [str(role) for role in roles]


async def until_both_cache(clients: list[Client], expected: list[str]) -> None:
    """Wait (bounded) until every process's cached ring reads ``expected``."""
    for client in clients:
        while await cached_roles(client) != expected:  # noqa: ASYNC110 - another process's clock
            await anyio.sleep(KEY_REFRESH)


async def test_listen_on_one_process_gets_what_the_other_publishes(
    servers: tuple[str, str],
) -> None:
    first, second = servers
    received: list[ServerEvent] = []
    with anyio.fail_after(TEST_TIMEOUT):
        async with (
            modern_client(first) as publisher,
            modern_client(second) as listener,
            listener.listen(resource_subscriptions=["file:///wanted"]) as sub,
        ):
            # Neither of the first two is asked for: the SDK's filter keeps them off.
            await text_of(publisher, "announce", {"what": "tools"})
            await text_of(publisher, "announce", {"what": "file:///other"})
            await text_of(publisher, "announce", {"what": "file:///wanted"})
            async for event in sub:
                received.append(event)
                break
    assert received == [ResourceUpdated(uri="file:///wanted")]


async def test_request_state_finishes_on_the_other_process_across_a_rotation(
    lane: Lane, servers: tuple[str, str]
) -> None:
    first, second = servers
    route = Alternating("two_step", [first, second])
    with anyio.fail_after(TEST_TIMEOUT):
        async with (
            admin(lane) as store,
            modern_client(first) as on_first,
            modern_client(second) as on_second,
        ):
            both = [on_first, on_second]
            (old,) = [r.split(":")[0] for r in await cached_roles(on_first)]

            async def rotate_between_rounds() -> None:
                # The first round's state is sealed under the old key; rotate now.
                new = await generate_key(store)
                await until_both_cache(both, [f"{old}:primary", f"{new.key_id}:staged"])
                await rotate_keys(store)
                await until_both_cache(both, [f"{new.key_id}:primary", f"{old}:retiring"])

            route.before[1] = rotate_between_rounds
            async with modern_client(first, route) as client:
                answer = await text_of(client, "two_step", {})
            begun, finished = answer.split(", ")
            assert begun.split()[-1] != finished.split()[-1], "both rounds on one process"

            # Retire the old key: the state it sealed is refused, on either process.
            replay = route.calls[1]
            await retire_key(store, old)
            await until_both_cache(both, [f"{(await cached_roles(on_first))[0]}"])
            async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                for url in servers:
                    response = await http.post(url, content=replay.content, headers=replay.headers)
                    assert INVALID_STATE in response.text, response.text


async def test_a_single_use_token_is_refused_on_the_other_process(
    servers: tuple[str, str],
) -> None:
    token = secrets.token_urlsafe(16)
    with anyio.fail_after(TEST_TIMEOUT):
        async with modern_client(servers[0]) as one, modern_client(servers[1]) as two:
            assert await text_of(one, "redeem", {"token": token}) == "accepted"
            assert await text_of(two, "redeem", {"token": token}) == "replayed"
            assert await text_of(one, "redeem", {"token": token}) == "replayed"


async def test_a_handle_from_another_principal_is_refused(servers: tuple[str, str]) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with modern_client(servers[0]) as one, modern_client(servers[1]) as two:
            handle = await text_of(one, "remember", {"user": "alice", "note": "n-1"})
            assert await text_of(two, "recall", {"user": "alice", "handle": handle}) == "n-1"
            refused = await text_of(two, "recall", {"user": "mallory", "handle": handle})
            missing = await text_of(two, "recall", {"user": "alice", "handle": "A" * 43})
    assert refused == missing
    assert refused.startswith("refused:")


async def test_the_handshake_lane_keeps_its_sessions_beside_it(servers: tuple[str, str]) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with (
            httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http,
            Client(
                streamable_http_client(servers[0], http_client=http),
                mode="legacy",
                client_info=CLIENT_INFO,
            ) as legacy,
        ):
            counts = [await legacy.call_tool("count", {}) for _ in range(2)]
    assert [c.structured_content for c in counts] == [{"result": 1}, {"result": 2}]
