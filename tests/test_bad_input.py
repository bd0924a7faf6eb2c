"""Hostile and malformed requests against the running app, on the memory and SQLite stores.

Every request here must get a 4xx whose body is a JSON-RPC error (never a 500,
never an exception out of the app), and must leave the store exactly as it
was: the store's full contents (the memory store's dicts; every row of the
SQLite file, dumped as SQL) are compared before and after, byte for byte. Two
real sessions with stored streams exist during the battery; requests naming
them are ones the middleware must refuse before writing (``touch_interval`` is
pinned high, so a legitimate lookup does not write either).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_session_mw import MemoryStore, Store, create_store
from mcp_session_mw.jsonrpc import (
    MSG_BAD_EVENT_ID,
    MSG_BAD_INITIALIZE,
    MSG_BODY_TOO_LARGE,
    MSG_HEADER_TOO_LARGE,
    MSG_INITIALIZE_BATCHED,
    MSG_METHOD_NOT_ALLOWED,
    MSG_NOT_ACCEPTABLE,
    MSG_NOT_JSON_RPC,
    MSG_PARSE_ERROR,
    MSG_SESSION_NOT_FOUND,
    MSG_SESSION_REQUIRED,
    MSG_UNSUPPORTED_MEDIA_TYPE,
    finite_float,
    not_json,
    parse_json,
)

from .test_middleware import HEADERS, INIT, build_sdk_app, initialize, messages, serving

pytestmark = pytest.mark.anyio

MAX_BODY = 64 * 1024
VALID = "{valid}"
"""Replaced by a live session's id."""
OTHER_EVENT = "{other_event}"
"""Replaced by an event id of the *other* live session."""
UNKNOWN = "Q" * 43
"""An id of the minted shape that names no session."""
PING = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"}).encode()
SSE_ACCEPT = {"accept": "text/event-stream"}

HeaderValue = str | bytes


@dataclass(frozen=True)
class Case:
    """One bad request and what it must get (``message`` None: the app's own refusal)."""

    name: str
    status: int
    message: str | None
    method: str = "POST"
    headers: list[tuple[str, HeaderValue]] = field(default_factory=list)
    body: bytes | None = PING
    defaults: bool = True
    """Send the usual content-type/accept headers first (duplicates come after them)."""


def post_as(session_id: HeaderValue, status: int = 404, **kw: Any) -> dict[str, Any]:
    return {"headers": [("mcp-session-id", session_id)], "status": status, **kw}


def resume(last_event_id: HeaderValue, session_id: HeaderValue = VALID) -> list[tuple[str, Any]]:
    return [*SSE_ACCEPT.items(), ("mcp-session-id", session_id), ("last-event-id", last_event_id)]


def nested(depth: int) -> bytes:
    return b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * depth + b"]" * depth + b"}"


def init_with(**params: Any) -> bytes:
    body = {**INIT, "params": {**INIT["params"], **params}}  # type: ignore[dict-item]
    return json.dumps(body).encode()


NF = MSG_SESSION_NOT_FOUND
CASES: list[Case] = [
    # -- session ids --------------------------------------------------------------------
    Case("id-missing", 400, MSG_SESSION_REQUIRED),
    Case("id-empty", **post_as(""), message=NF),
    Case("id-unknown", **post_as(UNKNOWN), message=NF),
    Case("id-one-short", **post_as("Q" * 42), message=NF),
    Case("id-one-long", **post_as("Q" * 44), message=NF),
    Case("id-valid-plus-char", **post_as(VALID + "x"), message=NF),
    Case("id-128", **post_as("Q" * 128), message=NF),
    Case("id-5000", **post_as("Q" * 5000), message=NF),
    Case("id-over-header-limit", **post_as("Q" * 9000, 431), message=MSG_HEADER_TOO_LARGE),
    Case("id-utf8", **post_as("é".encode() * 21 + b"Q"), message=NF),
    Case("id-latin1-byte", **post_as(b"\xff" * 43), message=NF),
    Case("id-fullwidth", **post_as("\uff31".encode() * 43), message=NF),
    Case("id-crlf-injection", **post_as(VALID + "\r\nx-admin: 1"), message=NF),
    Case("id-lf", **post_as(VALID + "\n"), message=NF),
    Case("id-cr", **post_as("Q" * 42 + "\r"), message=NF),
    Case("id-nul", **post_as("Q" * 42 + "\x00"), message=NF),
    Case("id-nul-after-valid", **post_as(VALID + "\x00"), message=NF),
    Case("id-space", **post_as(" " + VALID), message=NF),
    Case("id-tab", **post_as("Q" * 21 + "\t" + "Q" * 21), message=NF),
    Case("id-sql-quote", **post_as("' OR '1'='1' --"), message=NF),
    Case("id-sql-minted-shape", **post_as("--" + "Q" * 41), message=NF),
    Case("id-sql-like-wildcards", **post_as("_" * 43), message=NF),
    Case("id-sql-percent", **post_as("%" * 43), message=NF),
    Case("id-sql-semicolon", **post_as("Q" * 30 + "';DROP TABLE x;"), message=NF),
    Case("id-redis-glob", **post_as("*"), message=NF),
    Case("id-redis-hashtag", **post_as("{" + "Q" * 41 + "}"), message=NF),
    Case("id-redis-protocol", **post_as("\r\n*1\r\n$8\r\nFLUSHALL\r\n"), message=NF),
    Case("id-redis-key-sep", **post_as("sess:" + "Q" * 38), message=NF),
    Case("id-path", **post_as("../../../../etc/passwd"), message=NF),
    Case("id-index-record", **post_as("principal-index user:x"), message=NF),
    Case(
        "id-duplicated",
        404,
        NF,
        headers=[("mcp-session-id", VALID), ("mcp-session-id", VALID)],
    ),
    Case(
        "id-valid-and-junk",
        404,
        NF,
        headers=[("mcp-session-id", VALID), ("mcp-session-id", UNKNOWN)],
    ),
    # -- Last-Event-ID (on a live session) ---------------------------------------------------
    Case("lei-empty", 400, MSG_BAD_EVENT_ID, "GET", resume("")),
    Case("lei-crlf", 400, MSG_BAD_EVENT_ID, "GET", resume("get.1\r\nx: y")),
    Case("lei-lf", 400, MSG_BAD_EVENT_ID, "GET", resume("get.1\n")),
    Case("lei-nul", 400, MSG_BAD_EVENT_ID, "GET", resume("get.1\x00")),
    Case("lei-space", 400, MSG_BAD_EVENT_ID, "GET", resume("get.1 ")),
    Case("lei-negative", 400, MSG_BAD_EVENT_ID, "GET", resume("get.-1")),
    Case("lei-leading-zero", 400, MSG_BAD_EVENT_ID, "GET", resume("get.01")),
    Case("lei-no-seq", 400, MSG_BAD_EVENT_ID, "GET", resume("get.")),
    Case("lei-huge-seq", 400, MSG_BAD_EVENT_ID, "GET", resume("get." + "9" * 30)),
    Case("lei-overlong", 400, MSG_BAD_EVENT_ID, "GET", resume("f" * 16 + "." + "1" * 40)),
    Case("lei-unknown-stream", 400, MSG_BAD_EVENT_ID, "GET", resume("0123456789abcdef.1")),
    Case("lei-other-session", 400, MSG_BAD_EVENT_ID, "GET", resume(OTHER_EVENT)),
    Case("lei-utf8", 400, MSG_BAD_EVENT_ID, "GET", resume("gét.1".encode())),
    Case("lei-sql", 400, MSG_BAD_EVENT_ID, "GET", resume("get.1' OR '1'='1")),
    Case("lei-redis", 400, MSG_BAD_EVENT_ID, "GET", resume("{get}.1")),
    Case("lei-upper-hex", 400, MSG_BAD_EVENT_ID, "GET", resume("0123456789ABCDEF.1")),
    Case(
        "lei-duplicated",
        400,
        MSG_BAD_EVENT_ID,
        "GET",
        [*resume(OTHER_EVENT), ("last-event-id", "get.0")],
    ),
    Case("lei-unknown-session", 404, NF, "GET", resume("get.1", UNKNOWN)),
    Case("lei-bad-session", 404, NF, "GET", resume("get.1", "x\r\n")),
    Case("get-no-session", 400, MSG_SESSION_REQUIRED, "GET", list(SSE_ACCEPT.items())),
    Case(
        "get-not-sse",
        406,
        MSG_NOT_ACCEPTABLE,
        "GET",
        [("accept", "application/json"), ("mcp-session-id", VALID)],
        None,
        defaults=False,
    ),
    # -- bodies ----------------------------------------------------------------------------
    Case("utf8-invalid", 400, MSG_PARSE_ERROR, body=b'{"jsonrpc":"2.0","method":"\xff"}'),
    Case("utf8-overlong", 400, MSG_PARSE_ERROR, body=b'{"m":"\xc0\xaf"}'),
    Case("utf8-truncated", 400, MSG_PARSE_ERROR, body=b'{"m":"\xe2\x82"}'),
    Case("utf8-garbage", 400, MSG_PARSE_ERROR, body=b"\xff\xfe\xfd"),
    Case("nul-bytes", 400, MSG_PARSE_ERROR, body=b"\x00" * 64),
    Case("empty-body", 400, MSG_PARSE_ERROR, body=b""),
    Case("truncated-json", 400, MSG_PARSE_ERROR, body=PING[:-3]),
    Case("trailing-garbage", 400, MSG_PARSE_ERROR, body=PING + b"}"),
    Case("two-documents", 400, MSG_PARSE_ERROR, body=PING + PING),
    Case("deep-arrays", 400, MSG_PARSE_ERROR, body=b"[" * 10_000 + b"]" * 10_000),
    Case("deep-objects", 400, MSG_PARSE_ERROR, body=b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    Case("deep-params", 400, MSG_PARSE_ERROR, body=nested(10_000)),
    Case("huge-int", 400, MSG_PARSE_ERROR, body=b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b"}"),
    Case("huge-body", 413, MSG_BODY_TOO_LARGE, body=b" " * (MAX_BODY + 1)),
    Case("huge-string", 413, MSG_BODY_TOO_LARGE, body=b'"' + b"a" * MAX_BODY + b'"'),
    Case(
        "text-plain",
        415,
        MSG_UNSUPPORTED_MEDIA_TYPE,
        headers=[("content-type", "text/plain")],
        defaults=False,
    ),
    Case(
        "multipart",
        415,
        MSG_UNSUPPORTED_MEDIA_TYPE,
        headers=[("content-type", "multipart/form-data; boundary=x")],
        defaults=False,
    ),
    Case(
        "json-lookalike",
        415,
        MSG_UNSUPPORTED_MEDIA_TYPE,
        headers=[("content-type", "application/json-seq")],
        defaults=False,
    ),
    Case(
        "content-type-duplicated",
        415,
        MSG_UNSUPPORTED_MEDIA_TYPE,
        headers=[("content-type", "text/html")],
        body=json.dumps(INIT).encode(),
    ),
    # -- JSON-RPC shapes and batches ---------------------------------------------------------
    Case("shape-null", 400, MSG_NOT_JSON_RPC, body=b"null"),
    Case("shape-number", 400, MSG_NOT_JSON_RPC, body=b"42"),
    Case("shape-string", 400, MSG_NOT_JSON_RPC, body=b'"initialize"'),
    Case("shape-true", 400, MSG_NOT_JSON_RPC, body=b"true"),
    Case("shape-nan", 400, MSG_PARSE_ERROR, body=b"NaN"),
    Case("shape-empty-object", 400, MSG_SESSION_REQUIRED, body=b"{}"),
    Case("shape-method-number", **post_as(VALID, 400), message=None, body=b'{"method":5}'),
    Case("shape-unknown-session", **post_as(UNKNOWN), message=NF, body=b'{"id":[1]}'),
    Case(
        "shape-nan-id",
        **post_as(UNKNOWN, 400),
        message=MSG_PARSE_ERROR,
        body=b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
    ),
    Case("batch-empty", **post_as(UNKNOWN), message=NF, body=b"[]"),
    Case("batch-junk", **post_as(UNKNOWN), message=NF, body=b"[1,null,{}]"),
    Case(
        "batch-no-session", 400, MSG_SESSION_REQUIRED, body=b"[" + b",".join([PING] * 1000) + b"]"
    ),
    Case(
        "batch-initialize",
        400,
        MSG_INITIALIZE_BATCHED,
        body=b"[" + json.dumps(INIT).encode() + b"]",
    ),
    Case(
        "batch-initialize-later",
        400,
        MSG_INITIALIZE_BATCHED,
        body=b"[" + PING + b"," + json.dumps(INIT).encode() + b"]",
    ),
    Case(
        "init-jsonrpc-1",
        400,
        MSG_BAD_INITIALIZE,
        body=json.dumps({**INIT, "jsonrpc": "1.0"}).encode(),
    ),
    Case("init-no-id", 400, MSG_BAD_INITIALIZE, body=json.dumps({**INIT, "id": None}).encode()),
    Case(
        "init-long-id", 400, MSG_BAD_INITIALIZE, body=json.dumps({**INIT, "id": "i" * 300}).encode()
    ),
    Case("init-bool-id", 400, MSG_BAD_INITIALIZE, body=json.dumps({**INIT, "id": True}).encode()),
    Case(
        "init-params-list",
        400,
        MSG_BAD_INITIALIZE,
        body=json.dumps({**INIT, "params": [1]}).encode(),
    ),
    Case("init-version-int", 400, MSG_BAD_INITIALIZE, body=init_with(protocolVersion=20250618)),
    Case("init-version-empty", 400, MSG_BAD_INITIALIZE, body=init_with(protocolVersion="")),
    Case("init-version-long", 400, MSG_BAD_INITIALIZE, body=init_with(protocolVersion="9" * 65)),
    Case("init-client-info-list", 400, MSG_BAD_INITIALIZE, body=init_with(clientInfo=["x"])),
    Case("init-capabilities-str", 400, MSG_BAD_INITIALIZE, body=init_with(capabilities="all")),
    # Well-formed for the middleware; the SDK app refuses them itself.
    Case("init-infinity", 400, MSG_PARSE_ERROR, body=init_with(clientInfo={"name": 1e999})),
    Case(
        "init-float-overflow",
        400,
        MSG_PARSE_ERROR,
        body=init_with(capabilities={"x": "1e999"}).replace(b'"1e999"', b"1e999"),
    ),
    Case("init-lone-surrogate", 400, None, body=init_with(clientInfo={"name": "\ud800"})),
    Case("init-unknown-version", 400, None, headers=[("mcp-protocol-version", "1999-01-01")]),
    # -- other methods and lanes -------------------------------------------------------------
    Case("delete-no-session", 400, MSG_SESSION_REQUIRED, "DELETE", body=None),
    Case("delete-unknown", 404, NF, "DELETE", [("mcp-session-id", UNKNOWN)], None),
    Case("delete-crlf", 404, NF, "DELETE", [("mcp-session-id", VALID + "\r\n")], None),
    Case("delete-duplicated", 404, NF, "DELETE", [("mcp-session-id", VALID)] * 2, None),
    Case("put", 405, MSG_METHOD_NOT_ALLOWED, "PUT", [("mcp-session-id", VALID)]),
    Case("patch", 405, MSG_METHOD_NOT_ALLOWED, "PATCH"),
    Case("trace", 405, MSG_METHOD_NOT_ALLOWED, "TRACE", body=None),
    Case("version-garbage", 400, None, headers=[("mcp-protocol-version", b"\xff\x00garbage")]),
    Case("header-flood", 431, MSG_HEADER_TOO_LARGE, headers=[("x-pad", "p" * 8200)]),
]


@dataclass
class World:
    client: httpx.AsyncClient
    store: Store
    valid: str
    other_event: str


def stream_event_id(response: httpx.Response) -> str:
    ids = [line[3:].strip() for line in response.text.splitlines() if line.startswith("id:")]
    assert ids, response.text
    return ids[-1]


async def open_session_with_stream(client: httpx.AsyncClient) -> tuple[str, str]:
    """A live session that made a tool call (so it has a stored stream): (id, last event id)."""
    session_id = await initialize(client)
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "count", "arguments": {}},
        },
        headers={**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"},
    )
    assert response.status_code == 200, response.text
    assert any("result" in m for m in messages(response))
    return session_id, stream_event_id(response)


async def snapshot(store: Store) -> str:
    """The store's complete contents as one string; equal strings mean an unchanged store."""
    if isinstance(store, MemoryStore):
        streams = {
            key: {sid: (s.state, s.events) for sid, s in sorted(by_id.items())}
            for key, by_id in sorted(store._streams.items())
        }
        return repr((sorted(store._records.items()), store._sorted_keys, streams))
    database = store.engine.url.database  # type: ignore[attr-defined]
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return "\n".join(conn.iterdump())


@pytest.fixture(params=["memory", "sqlite"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    if request.param == "memory":
        store: Store = MemoryStore()
    else:
        store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'battery.db'}")
    async with serving(
        build_sdk_app(), store=store, touch_interval=3600, max_body_size=MAX_BODY
    ) as client:
        valid, _ = await open_session_with_stream(client)
        _, other_event = await open_session_with_stream(client)
        yield World(client, store, valid, other_event)
    await store.close()


def raw_headers(case: Case, world: World) -> list[tuple[bytes, bytes]]:
    """The case's headers as raw bytes (exactly what reaches the ASGI scope)."""
    headers: list[tuple[str, HeaderValue]] = list(HEADERS.items()) if case.defaults else []
    headers += case.headers
    raw = []
    for name, value in headers:
        if isinstance(value, str):
            value = value.replace(VALID, world.valid).replace(OTHER_EVENT, world.other_event)
            value = value.encode()
        raw.append((name.encode(), value))
    return raw


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_input_is_refused_and_changes_nothing(case: Case, world: World) -> None:
    before = await snapshot(world.store)
    response = await world.client.request(
        case.method, "/mcp", headers=raw_headers(case, world), content=case.body
    )
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json"), response.text[:500]
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert "result" not in body
    assert isinstance(body["error"]["code"], int)
    if case.message is not None:
        assert body["error"]["message"] == case.message
    # Never a new id, nor the app's own: at most the live session the request named.
    assert response.headers.get("mcp-session-id", world.valid) == world.valid
    assert await snapshot(world.store) == before


async def test_the_battery_leaves_live_sessions_working(world: World) -> None:
    """After the whole battery, on one app, the real sessions still answer and nothing grew."""
    before = await snapshot(world.store)
    for case in CASES:
        response = await world.client.request(
            case.method, "/mcp", headers=raw_headers(case, world), content=case.body
        )
        assert 400 <= response.status_code < 500, case.name
    assert await snapshot(world.store) == before
    ping = await world.client.post(
        "/mcp", content=PING, headers={**HEADERS, "mcp-session-id": world.valid}
    )
    assert ping.status_code == 200
    assert [m["result"] for m in messages(ping)] == [{}]


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1}',
        b"[1,2]",
        b" {}",
        b"1",
        b"",
        b"{",
        b'{"a":1e999}',
        b'{"a":NaN}',
        b'{"a":"\xff"}',
        b'{"a":"\xed\xa0\x80"}',  # an encoded lone surrogate
        '{"a":"é"}'.encode("utf-16-le"),
        '{"a":"é"}'.encode("utf-8-sig"),
        '{"a":"é"}'.encode("utf-32"),
    ],
)
def test_request_json_is_read_as_json_loads_reads_it(body: bytes) -> None:
    def outcome(parse: Callable[[bytes], object]) -> object:
        try:
            return parse(body)
        except ValueError as exc:
            return type(exc)

    expected = outcome(lambda b: json.loads(b, parse_constant=not_json, parse_float=finite_float))
    assert outcome(parse_json) == expected
