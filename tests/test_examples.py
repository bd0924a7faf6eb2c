"""Every example under examples/ starts and serves one tool call (a smoke test).

Each script runs in its own process under uvicorn on a free loopback port (see
``tests/e2e/server.py``), on a SQLite file of the test's own, so no example needs
an outside service. The client is plain httpx speaking JSON-RPC: ``initialize``,
``notifications/initialized``, ``tools/list``, then one ``tools/call`` of the
first tool that takes no required arguments (or the call in ``CALLS``). A new
example is picked up by the glob below; one that needs more than the defaults
gets a row in ``EXTRA_HEADERS`` or ``CALLS``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from .e2e.server import REPO_ROOT, run_server

pytestmark = pytest.mark.e2e

PROTOCOL_VERSION = "2025-06-18"
EXAMPLES = sorted(path.name for path in (REPO_ROOT / "examples").glob("[0-9][0-9]_*.py"))
EXTRA_HEADERS: dict[str, dict[str, str]] = {
    "07_auth_server.py": {"authorization": "Bearer alice-1"},  # one of its demo tokens
}
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "06_streaming_server.py": ("stream", {"n": 3}),  # its only tool needs n
    "10_modern_server.py": ("count", {}),  # the handshake lane's tool of the two-lane example
}
TIMEOUT = 30.0


def rpc_messages(response: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of a JSON or SSE body."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return [response.json()]
    found: list[Any] = []
    data: list[str] = []
    for line in [*response.text.replace("\r\n", "\n").split("\n"), ""]:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            if "".join(data):
                found.append(json.loads("\n".join(data)))
            data = []
    return found


def answer_to(response: httpx.Response, request_id: int) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    (answer,) = [m for m in rpc_messages(response) if m.get("id") == request_id]
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


def test_every_example_is_covered() -> None:
    assert len(EXAMPLES) >= 7
    for name in [*EXTRA_HEADERS, *CALLS]:
        assert name in EXAMPLES, f"{name} is gone; drop its row"


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_serves_a_tool_call(example: str, tmp_path: Path) -> None:
    env = {"MCP_SESSION_STORE_URL": f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"}
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        **EXTRA_HEADERS.get(example, {}),
    }
    with run_server([f"examples/{example}"], env) as base, httpx.Client(timeout=TIMEOUT) as http:
        url = f"{base}/mcp"
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "examples-smoke-test", "version": "1"},
            },
        }
        opened = http.post(url, headers=headers, json=initialize)
        assert answer_to(opened, 1)["protocolVersion"] == PROTOCOL_VERSION
        headers["mcp-session-id"] = opened.headers["mcp-session-id"]
        headers["mcp-protocol-version"] = PROTOCOL_VERSION
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert http.post(url, headers=headers, json=initialized).status_code == 202

        listed = http.post(
            url, headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        )
        tools = answer_to(listed, 2)["tools"]
        simple = [t["name"] for t in tools if not t.get("inputSchema", {}).get("required")]
        if example in CALLS:
            name, arguments = CALLS[example]
            assert name in [t["name"] for t in tools]
        else:
            assert simple, f"{example} has no tool callable without arguments: add it to CALLS"
            name, arguments = simple[0], {}
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        result = answer_to(http.post(url, headers=headers, json=call), 3)
        assert result.get("isError") is not True, result
        assert http.delete(url, headers=headers).status_code == 200
