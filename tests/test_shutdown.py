"""Graceful shutdown in process: the lifespan shutdown waits for requests in the app.

The uvicorn side (SIGTERM, sse-starlette ending SSE responses) is tested with
real processes in tests/e2e/test_shutdown.py; here the server is the test,
which sends ``lifespan.shutdown`` while a tool runs, as a server that does not
wait for running requests itself would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette

from mcp_session_mw import ConfigurationError, MemoryStore, SessionMiddleware
from mcp_session_mw.shutdown import hold_sse_endings, release_sse_endings

from .asgi_lifespan import BASE_URL, RawMCP, lifespan, messages

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0
"""Bounds a hang; no test here waits on it to pass."""


class Tool:
    """A tool that runs until the test releases it."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    def app(self) -> Starlette:
        server = MCPServer("shutdown")

        @server.tool()
        async def slow() -> str:
            self.started.set()
            await self.release.wait()
            return "done"

        return server.streamable_http_app()


@asynccontextmanager
async def client(middleware: SessionMiddleware) -> AsyncIterator[RawMCP]:
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        raw = RawMCP(http, f"{BASE_URL}/mcp")
        await raw.initialize()
        yield raw


async def test_lifespan_shutdown_waits_for_a_running_tool_then_the_app_shuts_down() -> None:
    tool = Tool()
    middleware = SessionMiddleware(tool.app(), store=MemoryStore(), shutdown_grace_seconds=5)
    events: list[str] = []
    answers: list[httpx.Response] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            async with lifespan(middleware), client(middleware) as raw:

                async def call() -> None:
                    answers.append(await raw.request("tools/call", {"name": "slow"}))

                async def release_later() -> None:
                    await anyio.sleep(0.3)
                    events.append("released")
                    tool.release.set()

                tg.start_soon(call)
                await tool.started.wait()
                tg.start_soon(release_later)
            events.append("shut down")
    [answer] = [m for m in messages(answers[0]) if "id" in m]
    assert answer["result"]["structuredContent"]["result"] == "done", answer
    assert events == ["released", "shut down"]
    assert middleware.drain.running == 0


async def test_a_tool_still_running_after_the_grace_is_answered_with_an_error() -> None:
    tool = Tool()
    middleware = SessionMiddleware(tool.app(), store=MemoryStore(), shutdown_grace_seconds=0.3)
    answers: list[httpx.Response] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            async with lifespan(middleware), client(middleware) as raw:

                async def call() -> None:
                    answers.append(await raw.request("tools/call", {"name": "slow"}))

                tg.start_soon(call)
                await tool.started.wait()
                began = anyio.current_time()
            took = anyio.current_time() - began
    [answer] = [m for m in messages(answers[0]) if "id" in m]
    assert "error" in answer, answer
    assert 0.3 <= took < 3, "the shutdown went on after the grace"


@pytest.mark.parametrize("grace", [10.0, 0.0])
async def test_sse_starlette_is_held_only_while_the_lifespan_runs_with_a_grace(
    grace: float,
) -> None:
    assert AppStatus.enable_automatic_graceful_drain is True
    middleware = SessionMiddleware(Tool().app(), store=MemoryStore(), shutdown_grace_seconds=grace)
    async with lifespan(middleware):
        assert AppStatus.enable_automatic_graceful_drain is (grace == 0)
    assert AppStatus.enable_automatic_graceful_drain is True


def test_holds_are_counted() -> None:
    hold_sse_endings()
    hold_sse_endings()
    release_sse_endings()
    assert AppStatus.enable_automatic_graceful_drain is False
    release_sse_endings()
    assert AppStatus.enable_automatic_graceful_drain is True
    release_sse_endings()  # one too many: no effect
    assert AppStatus.enable_automatic_graceful_drain is True


@pytest.mark.parametrize("grace", [-1.0, float("nan"), float("inf")])
def test_a_grace_that_is_not_seconds_is_refused(grace: float) -> None:
    with pytest.raises(ConfigurationError, match="shutdown_grace_seconds"):
        SessionMiddleware(Tool().app(), store=MemoryStore(), shutdown_grace_seconds=grace)
