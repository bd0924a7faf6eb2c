"""logging/setLevel and resources/(un)subscribe survive re-creation of the app session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from mcp_session_mw import MemoryStore
from mcp_session_mw.setup_replay import record_setup, setup_requests

from .test_middleware import HEADERS, initialize, messages, serving

pytestmark = pytest.mark.anyio

INIT_1125 = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "setup", "version": "1"},
    },
}


def _example_05() -> ModuleType:
    path = Path(__file__).parent.parent / "examples" / "05_conformance_server.py"
    spec = importlib.util.spec_from_file_location("mcp_session_mw_example_05", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


EXAMPLE = _example_05()


async def rpc(
    client: httpx.AsyncClient, session_id: str, method: str, params: dict[str, Any], rid: int
) -> list[dict[str, Any]]:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params},
        headers={**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"},
    )
    assert response.status_code == 200, response.text
    return messages(response)


def tool_text(found: list[dict[str, Any]], rid: int) -> str:
    [result] = [m for m in found if m.get("id") == rid]
    return str(result["result"]["content"][0]["text"])


def log_lines(found: list[dict[str, Any]]) -> list[str]:
    return [m["params"]["data"] for m in found if m.get("method") == "notifications/message"]


async def test_setup_is_replayed_into_a_recreated_app_session() -> None:
    store = MemoryStore()
    uri = EXAMPLE.WATCHED_RESOURCE
    async with serving(EXAMPLE.build_app(), store=store) as first:
        session_id = await initialize(first, INIT_1125)
        assert (
            len(
                log_lines(
                    await rpc(
                        first,
                        session_id,
                        "tools/call",
                        {"name": "test_tool_with_logging", "arguments": {}},
                        2,
                    )
                )
            )
            == 3
        )
        await rpc(first, session_id, "logging/setLevel", {"level": "error"}, 3)
        await rpc(first, session_id, "resources/subscribe", {"uri": uri}, 4)
        assert (
            log_lines(
                await rpc(
                    first,
                    session_id,
                    "tools/call",
                    {"name": "test_tool_with_logging", "arguments": {}},
                    5,
                )
            )
            == []
        )
    # A "restarted" process: a fresh app that never saw setLevel or subscribe.
    async with serving(EXAMPLE.build_app(), store=store) as second:
        found = await rpc(
            second, session_id, "tools/call", {"name": "test_tool_with_logging", "arguments": {}}, 6
        )
        assert log_lines(found) == [], "the logging level was lost on re-creation"
        found = await rpc(
            second,
            session_id,
            "tools/call",
            {"name": "update_watched_resource", "arguments": {}},
            7,
        )
        assert tool_text(found, 7) == "notified", "the subscription was lost on re-creation"
        await rpc(second, session_id, "resources/unsubscribe", {"uri": uri}, 8)
    async with serving(EXAMPLE.build_app(), store=store) as third:
        found = await rpc(
            third, session_id, "tools/call", {"name": "update_watched_resource", "arguments": {}}, 9
        )
        assert tool_text(found, 9) == "not subscribed"
    record = await store.load(session_id)
    assert record is not None
    assert record.meta["setup"] == {"level": "error", "subscriptions": []}


def test_record_and_replay_are_inverse() -> None:
    meta: dict[str, Any] = {"other": 1}
    for message in (
        {"method": "logging/setLevel", "id": 1, "params": {"level": "debug"}},
        {"method": "resources/subscribe", "id": 2, "params": {"uri": "a://1"}},
        {"method": "resources/subscribe", "id": 3, "params": {"uri": "a://2"}},
        {"method": "resources/subscribe", "id": 4, "params": {"uri": "a://1"}},
        {"method": "resources/unsubscribe", "id": 5, "params": {"uri": "a://2"}},
        {"method": "logging/setLevel", "id": 6, "params": {"level": "warning"}},
    ):
        meta = record_setup(meta, message)
    assert meta["other"] == 1
    assert [(r["method"], r["params"]) for r in setup_requests(meta)] == [
        ("logging/setLevel", {"level": "warning"}),
        ("resources/subscribe", {"uri": "a://1"}),
    ]
    assert len({r["id"] for r in setup_requests(meta)}) == 2
    assert setup_requests({}) == []
