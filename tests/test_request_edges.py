"""Edges of a request: OPTIONS, and the resume of a stream max_streams_per_session removed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.middleware.cors import CORSMiddleware

from mcp_session_mw import MemoryStore, SessionMiddleware, Store
from mcp_session_mw.streams import EVENTS_LOST, MSG_EVENTS_LOST

from .asgi_lifespan import lifespan
from .test_full_process import AppSpy, processes
from .test_middleware import HEADERS, build_sdk_app, initialize, messages, serving

pytestmark = pytest.mark.anyio


async def test_options_opens_no_app_session_and_leaks_no_app_id() -> None:
    async with processes(MemoryStore(), [None]) as [(client, spy)]:
        for _ in range(5):
            plain = await client.options("/mcp")
            assert plain.status_code == 204
            assert "OPTIONS" in plain.headers["allow"]
            assert "mcp-session-id" not in plain.headers
        assert spy.opened == []
        # A preflight is the app's (here: no CORS layer, so the SDK refuses it).
        preflight = {"origin": "http://127.0.0.1:8000", "access-control-request-method": "POST"}
        for _ in range(3):
            answer = await client.options("/mcp", headers=preflight)
            assert "mcp-session-id" not in answer.headers
        assert spy.open_now == 0  # whatever it opened for them is closed


async def test_a_preflight_is_answered_by_the_apps_cors_layer() -> None:
    spy = AppSpy(None)
    cors = CORSMiddleware(spy, allow_origins=["http://example.test"], allow_methods=["POST"])
    middleware = SessionMiddleware(cors, store=MemoryStore())
    async with (
        lifespan(middleware),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=middleware), base_url="http://127.0.0.1:8000"
        ) as client,
    ):
        answer = await client.options(
            "/mcp",
            headers={"origin": "http://example.test", "access-control-request-method": "POST"},
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://example.test"
        assert spy.opened == []


async def test_a_removed_streams_resume_is_events_lost_on_every_backend(store: Store) -> None:
    async with serving(build_sdk_app(), store=store, max_streams_per_session=1) as client:
        session_id = await initialize(client)
        headers = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
        stream_ids = []
        for rid in range(2):
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

        async def resume(event_id: str) -> httpx.Response:
            return await client.get(
                "/mcp",
                headers={**headers, "accept": "text/event-stream", "last-event-id": event_id},
            )

        gone = await resume(f"{stream_ids[0]}.1")
        assert gone.status_code == 200
        lost: list[dict[str, Any]] = messages(gone)
        assert lost == [
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": EVENTS_LOST, "message": MSG_EVENTS_LOST},
            }
        ]
        kept = await resume(f"{stream_ids[1]}.0")
        assert kept.status_code == 200
        assert '"text":"2"' in kept.text
        assert (await resume("0123456789abcdef.1")).status_code == 400
