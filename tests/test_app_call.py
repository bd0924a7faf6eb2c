"""AppCall (what the app hears and where its answer goes) and the dict fast paths for headers."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from mcp_session_mw import MemoryStore, SessionMiddleware, logs
from mcp_session_mw.app_call import MSG_APP_RAISED, AppCall, _take_start_scan, take_start
from mcp_session_mw.asgi import RequestHeads, with_headers
from mcp_session_mw.jsonrpc import INTERNAL_ERROR, MSG_APP_FAILED
from mcp_session_mw.records import SessionRecord
from mcp_session_mw.session import Session
from mcp_session_mw.streams import StreamOptions
from mcp_session_mw.tasks import Tasks

pytestmark = pytest.mark.anyio

SESSION = b"mcp-session-id"


def new_session(store: MemoryStore) -> Session:
    now = time.time()
    record = SessionRecord(
        key="k",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
    )
    return Session("s" * 43, store, record)


def make_call(sent: list[Message], tg: Any, *, hold_404: bool = False) -> AppCall:
    store = MemoryStore()

    async def client_send(message: Message) -> None:
        sent.append(message)

    return AppCall(
        body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        send=client_send,
        store=store,
        session=new_session(store),
        request_id=1,
        protocol_version="2025-11-25",
        options=StreamOptions(),
        tasks=Tasks(tg),
        watcher=None,
        unrecorded=None,
        hold_404=hold_404,
    )


async def test_the_app_hears_its_body_then_nothing_until_its_response_is_complete() -> None:
    sent: list[Message] = []
    async with anyio.create_task_group() as tg:
        call = make_call(sent, tg)
        first = await call.receive()
        assert first == {
            "type": "http.request",
            "body": b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
            "more_body": False,
        }
        heard: list[Message] = []

        async def listen() -> None:
            heard.append(await call.receive())

        tg.start_soon(listen)
        await anyio.wait_all_tasks_blocked()
        assert heard == []  # nothing yet: the response is not complete
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (SESSION, b"the-apps-own")],
        }
        await call.send(start)
        await call.send({"type": "http.response.body", "body": b"{}", "more_body": True})
        await anyio.wait_all_tasks_blocked()
        assert heard == []
        await call.send({"type": "http.response.body", "body": b"", "more_body": False})
        await anyio.wait_all_tasks_blocked()
        assert heard == [{"type": "http.disconnect"}]
    assert (call.status, call.durable, call.held) == (200, None, False)
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2
    assert dict(sent[0]["headers"])[SESSION] == b"s" * 43  # the app's own id never leaves


async def test_a_held_404_sends_nothing() -> None:
    sent: list[Message] = []
    async with anyio.create_task_group() as tg:
        call = make_call(sent, tg, hold_404=True)
        await call.send({"type": "http.response.start", "status": 404, "headers": []})
        await call.send({"type": "http.response.body", "body": b"gone"})
    assert (call.held, call.status) == (True, 404)
    assert sent == []


async def test_after_the_cut_the_app_hears_a_disconnect_and_its_sends_go_nowhere() -> None:
    sent: list[Message] = []
    async with anyio.create_task_group() as tg:
        call = make_call(sent, tg)
        await call.receive()  # the body
        waiting: list[Message] = []

        async def listen() -> None:
            waiting.append(await call.receive())

        tg.start_soon(listen)
        await anyio.wait_all_tasks_blocked()
        call.cut()
        await anyio.wait_all_tasks_blocked()
        assert waiting == [{"type": "http.disconnect"}]  # a waiter is released
        assert await call.receive() == {"type": "http.disconnect"}
        await call.send({"type": "http.response.start", "status": 200, "headers": []})
        await call.send({"type": "http.response.body", "body": b"late"})
    assert sent == []


async def test_an_app_that_keeps_its_send_keeps_nothing_of_the_response() -> None:
    """An app frame caught in a reference cycle holds the AppCall only, emptied."""
    kept: list[Send] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = json.loads((await receive())["body"])
        if request.get("method") == "initialize":
            headers = [(b"content-type", b"application/json"), (SESSION, b"app-1")]
            result: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": {}}
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": result}
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
            return
        if "id" not in request:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        kept.append(send)
        frame = json.dumps(
            {"jsonrpc": "2.0", "id": request["id"], "result": {}}, separators=(",", ":")
        )
        headers = [(b"content-type", b"text/event-stream"), (SESSION, b"app-1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {
                "type": "http.response.body",
                "body": f"event: message\r\ndata: {frame}\r\n\r\n".encode(),
                "more_body": True,
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    middleware = SessionMiddleware(app, store=MemoryStore(), mode="rehydrate")
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {}},
        }
        response = await client.post("/mcp", json=init, headers=headers)
        session_headers = {**headers, "mcp-session-id": response.headers["mcp-session-id"]}
        answer = await client.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 5, "method": "ping"}, headers=session_headers
        )
    assert answer.status_code == 200
    assert '"id":5' in answer.text
    [send] = kept
    call = send.__self__  # type: ignore[attr-defined]
    assert isinstance(call, AppCall)
    assert call.durable is None
    assert (call._session, call._client_send, call._tasks) == (None, None, None)


# -- the dict fast paths ----------------------------------------------------------------


class Dropped(Exception):
    pass


@pytest.mark.parametrize("when", ["before the start", "after the start"])
async def test_an_app_that_raises_costs_that_response_alone(
    when: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the server's business: a JSON-RPC error before the start, the end of the body after."""
    caplog.set_level(logging.WARNING, "mcp_session_mw")
    logs.log_failure.reset()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = json.loads((await receive())["body"])
        headers = [(b"content-type", b"application/json"), (SESSION, b"app-1")]
        if request.get("method") == "initialize":
            result: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": {}}
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": result}
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
            return
        if when == "after the start":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"jsonrpc"', "more_body": True})
        raise Dropped("the upstream dropped")

    middleware = SessionMiddleware(app, store=MemoryStore(), mode="rehydrate")
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {}},
        }
        response = await client.post("/mcp", json=init, headers=headers)
        session_headers = {**headers, "mcp-session-id": response.headers["mcp-session-id"]}
        answers = [
            await client.post(
                "/mcp", json={"jsonrpc": "2.0", "id": 5, "method": "ping"}, headers=session_headers
            )
            for _ in range(2)
        ]
    for answer in answers:
        if when == "before the start":
            assert answer.status_code == 500
            assert answer.json() == {
                "jsonrpc": "2.0",
                "id": 5,
                "error": {"code": INTERNAL_ERROR, "message": MSG_APP_FAILED},
            }
        else:
            assert answer.status_code == 200
            assert answer.content == b'{"jsonrpc"'  # ended where it broke
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(MSG_APP_RAISED)]
    assert "Dropped: the upstream dropped" in line


NAMES = st.sampled_from(
    [
        b"mcp-session-id",
        b"content-type",
        b"content-length",
        b"mcp-protocol-version",
        b"accept",
        b"last-event-id",
        b"host",
        b"x-other",
        b"Mcp-Session-Id",
        b"Content-Type",
        b"Content-Length",
    ]
)
VALUES = st.sampled_from([b"", b"a", b"text/event-stream", b"application/json", b"caf\xe9", b"7"])
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=8)


def scanned(raw: list[tuple[bytes, bytes]]) -> RequestHeads:
    heads = RequestHeads([])
    heads._scan(raw)
    return heads


@settings(max_examples=300, deadline=None)
@given(HEADERS)
def test_request_heads_read_by_name_as_in_one_pass(raw: list[tuple[bytes, bytes]]) -> None:
    fast, slow = RequestHeads(raw), scanned(raw)
    for name in ("version", "accept", "session_ids", "content_types", "last_event_ids"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert (fast.named is None) == (len({name for name, _ in raw}) != len(raw))


@settings(max_examples=300, deadline=None)
@given(HEADERS, st.dictionaries(st.sampled_from([SESSION, b"mcp-protocol-version"]), VALUES))
def test_with_headers_from_the_dict_as_from_the_list(
    raw: list[tuple[bytes, bytes]], set_headers: dict[bytes, bytes]
) -> None:
    scope = {"type": "http", "headers": raw}
    drop = frozenset({SESSION})
    fast = with_headers(scope, set_headers, drop, RequestHeads(raw).named)
    slow = with_headers(scope, set_headers, drop)
    assert sorted(fast["headers"]) == sorted(slow["headers"])
    assert scope["headers"] is raw  # the request's own scope is left as it was


@settings(max_examples=300, deadline=None)
@given(HEADERS, st.sampled_from([200, 202, 404]))
def test_the_response_start_rewritten_from_a_dict_as_in_one_pass(
    raw: list[tuple[bytes, bytes]], status: int
) -> None:
    fast: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": raw}
    slow: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": raw}
    assert take_start(fast, "durable") == _take_start_scan(slow, raw, "durable")
    assert fast["headers"] == slow["headers"]
