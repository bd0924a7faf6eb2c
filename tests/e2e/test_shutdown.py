"""End to end: a tool running when its uvicorn process gets SIGTERM finishes, and its answer counts.

Each test runs ``examples/08_cluster_server.py`` (the SDK's stateful app behind
the middleware) in a child process on one SQLite file, calls its ``stream``
tool (4 steps, 0.5 s apart: about 2 s), and sends the process SIGTERM once the
call's response has begun. With the default grace the tool finishes: its
result reaches the client whose connection is still open, or, when the client
had left, is stored and a resume through another process on the same store
gets it. A tool that outlives the grace is ended with the no-response error.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_session_mw.streams import MSG_NO_RESPONSE

from .server import ServerProcess, server_process

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EXAMPLE = "examples/08_cluster_server.py"
HANDSHAKE = "2025-11-25"
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": HANDSHAKE,
}
STEPS, DELAY_MS = 4, 500
"""The tool runs about STEPS * DELAY_MS = 2 s."""
TIMEOUT = 30.0
"""Bounds a hang on a loaded machine; nothing here waits on it to pass."""


@contextmanager
def instance(tmp_path: Path, *extra: str) -> Iterator[ServerProcess]:
    store = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    with server_process([EXAMPLE, "--store", store, *extra]) as server:
        yield server


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "e2e-shutdown", "version": "1"},
        },
    }
    opened = await http.post(f"{url}/mcp", json=initialize, headers=HEADERS)
    assert opened.status_code == 200, opened.text
    headers = {**HEADERS, "mcp-session-id": opened.headers["mcp-session-id"]}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(f"{url}/mcp", json=initialized, headers=headers)).status_code == 202
    return headers


CALL = {
    "jsonrpc": "2.0",
    "id": 5,
    "method": "tools/call",
    "params": {"name": "stream", "arguments": {"n": STEPS, "delay_ms": DELAY_MS}},
}


def messages(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            found.append(json.loads(line[5:]))
    return found


def answer(text: str) -> dict[str, Any]:
    [found] = [m for m in messages(text) if m.get("id") == 5]
    return found


def exited(server: ServerProcess) -> float:
    """Wait for the process to exit; seconds it took."""
    began = time.monotonic()
    server.proc.wait(timeout=TIMEOUT)
    return time.monotonic() - began


async def call_and_sigterm(
    http: httpx.AsyncClient, server: ServerProcess, headers: dict[str, str], *, stay: bool
) -> tuple[str, float]:
    """Start the call, SIGTERM the server once the response began; (what was read, seconds)."""
    text = ""
    signalled = False
    began = time.monotonic()
    async with http.stream("POST", f"{server.url}/mcp", json=CALL, headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_text():
            text += chunk
            if not signalled and "id: " in text:  # the priming event: the call is running
                if not stay:
                    break  # the client leaves; its connection closes
                server.proc.send_signal(signal.SIGTERM)
                signalled = True
    if not signalled:
        server.proc.send_signal(signal.SIGTERM)
    return text, time.monotonic() - began


async def test_sigterm_lets_a_running_tool_answer_its_open_connection(tmp_path: Path) -> None:
    with instance(tmp_path) as server, anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            headers = await open_session(http, server.url)
            text, took = await call_and_sigterm(http, server, headers, stay=True)
        took_to_exit = exited(server)
    result = answer(text)
    assert "result" in result, (result, server.output())
    assert json.loads(result["result"]["content"][0]["text"])["steps"] == STEPS
    assert took >= STEPS * DELAY_MS / 1000 * 0.75, "the tool ran to its end"
    assert took_to_exit < 10, server.output()


async def test_sigterm_stores_the_answer_of_a_client_that_left_for_a_resume_elsewhere(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(TIMEOUT * 2):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            with instance(tmp_path) as first:
                headers = await open_session(http, first.url)
                text, _ = await call_and_sigterm(http, first, headers, stay=False)
                exited(first)
            last_event_id = text.split("id: ", 1)[1].split("\n", 1)[0]
            with instance(tmp_path) as second:
                resume = {**headers, "accept": "text/event-stream", "last-event-id": last_event_id}
                resumed = await http.get(f"{second.url}/mcp", headers=resume)
    assert resumed.status_code == 200
    result = answer(resumed.text)
    assert "result" in result, (result, resumed.text)
    assert json.loads(result["result"]["content"][0]["text"])["steps"] == STEPS


async def test_a_tool_that_outlives_the_grace_is_answered_with_an_error(tmp_path: Path) -> None:
    with instance(tmp_path, "--shutdown-grace", "0.5") as server, anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            headers = await open_session(http, server.url)
            text, took = await call_and_sigterm(http, server, headers, stay=True)
        exited(server)
    error = answer(text).get("error")
    assert error == {"code": -32603, "message": MSG_NO_RESPONSE}, text
    assert took < STEPS * DELAY_MS / 1000, "ended by the grace, before the tool's end"
