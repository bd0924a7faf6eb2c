"""End to end: an app that fails mid-response costs that response, never the process's other work.

Two uvicorn processes of ``tests/e2e/faulty_server.py`` (the SDK's stateful app
behind a fault switch, in the middleware) share one SQLite file. The process
under test, ``faulty``, is made to fail in one way per test: the app raises
from a response body after the response started, from an app session's GET
stream, or while the middleware re-creates a session in it. The failing
request's client gets a clear error (a stream's client: the events stored so
far, then the JSON-RPC error for its request), and afterwards, in that same
process, new sessions, sessions re-created from the store (made on the other
process), resumes by ``Last-Event-ID`` and the GET stream all still work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_session_mw.app_call import MSG_APP_RAISED
from mcp_session_mw.jsonrpc import INTERNAL_ERROR, MSG_APP_SESSION_FAILED
from mcp_session_mw.rehydrate import MSG_RECREATE_FAILED
from mcp_session_mw.relay import PUMP
from mcp_session_mw.streams import MSG_NO_RESPONSE
from mcp_session_mw.tasks import MSG_TASK_FAILED

from .faulty_server import FAULT_HEADER, WATCHED
from .server import ServerProcess, server_process

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SERVER = "tests/e2e/faulty_server.py"
HANDSHAKE = "2025-11-25"
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": HANDSHAKE,
}
FAULT = FAULT_HEADER.decode()
TIMEOUT = 30.0
"""Bounds a hang on a loaded machine; nothing here waits on it to pass."""
REPEATS = 3
"""Each fault is caused this many times: one log line says so, not one each."""
NOTIFY_TRIES = 40
NOTIFY_PAUSE = 0.25
"""The app session's GET stream is opened by the middleware in the background:
``notify`` is called until its notification shows on the client's GET stream."""
PUMP_FAILED = MSG_TASK_FAILED.format(PUMP)


@dataclass
class Pair:
    faulty: ServerProcess
    other: ServerProcess


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    store = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    with ExitStack() as stack:
        faulty = stack.enter_context(server_process([SERVER, "--store", store]))
        other = stack.enter_context(server_process([SERVER, "--store", store]))
        yield Pair(faulty, other)


def messages(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[5:])
        for line in text.replace("\r\n", "\n").splitlines()
        if line.startswith("data:") and line[5:].strip()
    ]


def call(request_id: int, tool: str, **arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": {"progressToken": request_id}},
    }


def answer_to(text: str, request_id: int) -> dict[str, Any]:
    [found] = [m for m in messages(text) if m.get("id") == request_id and "method" not in m]
    return found


async def open_session(
    http: httpx.AsyncClient, url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "e2e-contained", "version": "1"},
        },
    }
    opened = await http.post(f"{url}/mcp", json=initialize, headers={**HEADERS, **(extra or {})})
    assert opened.status_code == 200, opened.text
    headers = {**HEADERS, "mcp-session-id": opened.headers["mcp-session-id"]}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(f"{url}/mcp", json=initialized, headers=headers)).status_code == 202
    return headers


async def streams_to_its_end(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    sent = await http.post(f"{url}/mcp", json=call(7, "stream", n=3), headers=headers)
    assert sent.status_code == 200, sent.text
    assert answer_to(sent.text, 7)["result"]["content"][0]["text"] == "streamed 3"


async def resumes(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    """Leave a running call after its first event; a resume by Last-Event-ID gets the rest."""
    text = ""
    request = call(8, "stream", n=4, delay_ms=200)
    async with http.stream("POST", f"{url}/mcp", json=request, headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_text():
            text += chunk
            if "notifications/progress" in text:
                break  # the client leaves; the tool runs on
    last_event_id = text.split("id: ")[-1].split("\n", 1)[0]
    resume = {**headers, "accept": "text/event-stream", "last-event-id": last_event_id}
    resumed = await http.get(f"{url}/mcp", headers=resume)
    assert resumed.status_code == 200, resumed.text
    assert answer_to(resumed.text, 8)["result"]["content"][0]["text"] == "streamed 4"
    progress = [m["params"]["progress"] for m in messages(text + resumed.text) if "params" in m]
    assert progress == [1, 2, 3, 4]


async def get_stream_works(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    """A notification the app sends without a request reaches the client's GET stream."""
    heard = anyio.Event()
    get_headers = {**headers, "accept": "text/event-stream"}

    async def listen() -> None:
        async with http.stream("GET", f"{url}/mcp", headers=get_headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if WATCHED in line:
                    heard.set()
                    return

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        for _ in range(NOTIFY_TRIES):
            notified = await http.post(f"{url}/mcp", json=call(9, "notify"), headers=headers)
            assert notified.status_code == 200, notified.text
            with anyio.move_on_after(NOTIFY_PAUSE):
                await heard.wait()
            if heard.is_set():
                break
        tg.cancel_scope.cancel()
    assert heard.is_set(), f"no resources/updated on the GET stream after {NOTIFY_TRIES} calls"


async def all_still_works(http: httpx.AsyncClient, pair: Pair) -> None:
    url = pair.faulty.url
    fresh = await open_session(http, url)
    await streams_to_its_end(http, url, fresh)
    await resumes(http, url, fresh)
    await get_stream_works(http, url, fresh)
    # Made on the other process: the faulty one re-creates it in its app.
    recreated = await open_session(http, pair.other.url)
    await streams_to_its_end(http, url, recreated)
    await get_stream_works(http, url, recreated)


def assert_logged_once(server: ServerProcess, message: str) -> None:
    output = server.output()
    assert output.count(message) == 1, output
    assert "Traceback" not in output, output


async def test_an_app_raising_from_a_started_body_costs_that_response_alone(pair: Pair) -> None:
    url = pair.faulty.url
    with anyio.fail_after(TIMEOUT * 2):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            headers = await open_session(http, url)
            for _ in range(REPEATS):
                failing = {**headers, FAULT: "body"}
                sent = await http.post(f"{url}/mcp", json=call(5, "stream", n=2), headers=failing)
                assert sent.status_code == 200
                got = messages(sent.text)
                # The event sent before the fault, then the error for the request.
                assert [m.get("method") for m in got] == ["notifications/progress", None]
                assert got[-1] == {
                    "jsonrpc": "2.0",
                    "id": 5,
                    "error": {"code": INTERNAL_ERROR, "message": MSG_NO_RESPONSE},
                }
                # A resume of that stream gets the same, from the store.
                last_event_id = sent.text.split("id: ")[1].split("\n", 1)[0]
                resume = {**headers, "accept": "text/event-stream", "last-event-id": last_event_id}
                resumed = await http.get(f"{url}/mcp", headers=resume)
                assert messages(resumed.text) == got
            await streams_to_its_end(http, url, headers)
            await all_still_works(http, pair)
    assert_logged_once(pair.faulty, MSG_APP_RAISED)


async def test_an_app_raising_from_its_get_stream_costs_that_stream_alone(pair: Pair) -> None:
    url = pair.faulty.url
    with anyio.fail_after(TIMEOUT * 2):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            # The app session's GET stream fails for a session made here...
            broken = await open_session(http, url, {FAULT: "get"})
            # ... and for sessions re-created here (made on the other process).
            for _ in range(REPEATS):
                elsewhere = await open_session(http, pair.other.url)
                first = {**elsewhere, FAULT: "get"}
                await streams_to_its_end(http, url, first)
            # The session whose GET stream failed still answers, and the
            # middleware opened the app's GET stream again.
            await streams_to_its_end(http, url, broken)
            await get_stream_works(http, url, broken)
            await all_still_works(http, pair)
    assert_logged_once(pair.faulty, PUMP_FAILED)


async def test_an_app_raising_while_a_session_is_re_created_costs_that_request_alone(
    pair: Pair,
) -> None:
    url = pair.faulty.url
    with anyio.fail_after(TIMEOUT * 2):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            elsewhere = await open_session(http, pair.other.url)
            for _ in range(REPEATS):
                failing = {**elsewhere, FAULT: "recreate"}
                sent = await http.post(f"{url}/mcp", json=call(6, "stream", n=2), headers=failing)
                assert sent.status_code == 500, sent.text
                assert sent.json() == {
                    "jsonrpc": "2.0",
                    "id": 6,
                    "error": {"code": INTERNAL_ERROR, "message": MSG_APP_SESSION_FAILED},
                }
            # The same session is re-created once the app lets it.
            await streams_to_its_end(http, url, elsewhere)
            await get_stream_works(http, url, elsewhere)
            await all_still_works(http, pair)
    assert_logged_once(pair.faulty, MSG_RECREATE_FAILED)
