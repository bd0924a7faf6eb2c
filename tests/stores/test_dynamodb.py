"""What only the DynamoDB store has: its URL, item-size limits, TTL attributes, error mapping.

The store contract itself runs on DynamoDB in test_contract.py; these run on
the private moto_server too (see tests/dynamodb_server.py), and against two
loopback HTTP servers of this module that stall or throttle every request.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest

from mcp_session_mw import (
    ConfigurationError,
    ItemTooLargeError,
    MissingExtraError,
    SessionRecord,
    StoreError,
    StoreUnavailableError,
    StreamState,
    create_store,
)
from mcp_session_mw.stores.dynamodb import DynamoDBStore
from mcp_session_mw.stores.dynamodb import client as client_module
from mcp_session_mw.stores.dynamodb.client import TABLE_MISSING
from mcp_session_mw.stores.dynamodb.items import MAX_ITEM_BYTES, TTL_ATTRIBUTE

from ..dynamodb_server import FAKE_AWS_ENV, REGION, store_url

pytestmark = [pytest.mark.dynamodb, pytest.mark.anyio]


def new_record(ttl: float = 60.0, **state: object) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state=dict(state),
    )


def opening(stream_id: str = "s1") -> StreamState:
    return StreamState(
        stream_id=stream_id, request_id=1, owner="me", lease_expires=time.time() + 30
    )


@pytest.fixture
async def store() -> AsyncIterator[DynamoDBStore]:
    made = create_store(store_url(f"mcp-test-{uuid.uuid4().hex[:10]}"))
    assert isinstance(made, DynamoDBStore)
    await made.open()
    try:
        yield made
    finally:
        await made.drop_table()
        await made.close()


async def items_of(store: DynamoDBStore, key: str) -> list[dict[str, object]]:
    return await store.table.query(
        KeyConditionExpression="#k = :k",
        ExpressionAttributeNames={"#k": "k"},
        ExpressionAttributeValues={":k": {"S": key}},
    )


# -- the URL -------------------------------------------------------------------------------


def test_url_names_table_region_endpoint_and_creation() -> None:
    store = create_store(
        "dynamodb:///my-sessions?region=eu-west-1&endpoint_url=http://127.0.0.1:1&create_table=yes"
        "&call_timeout=7.5&max_attempts=2"
    )
    assert isinstance(store, DynamoDBStore)
    settings = store.table.settings
    assert (settings.table, settings.region, settings.endpoint_url) == (
        "my-sessions",
        "eu-west-1",
        "http://127.0.0.1:1",
    )
    assert settings.create_table is True
    assert (settings.call_timeout, settings.max_attempts) == (7.5, 2)
    plain = create_store("dynamodb:///my-sessions", poll_interval=1)
    assert isinstance(plain, DynamoDBStore)
    assert plain.table.settings.create_table is False
    assert plain.table.settings.call_timeout <= 10  # the defaults bound every call
    assert plain.table.settings.connect_timeout <= 10
    assert plain.poll_interval == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dynamodb://host/table", "dynamodb:///TABLE"),
        ("dynamodb:///x", "table name"),
        ("dynamodb:///bad/name", "table name"),
        ("dynamodb:///table?regoin=us-east-1", "unknown DynamoDB URL parameter"),
        ("dynamodb:///table?create_table=maybe", "create_table"),
        ("dynamodb:///table?call_timeout=soon", "call_timeout"),
        ("dynamodb:///table?max_attempts=0", "max_attempts"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_store(url)


def test_bad_bounds_are_configuration_errors() -> None:
    for options in ({"call_timeout": 0}, {"read_timeout": -1}, {"max_attempts": 0}):
        with pytest.raises(ConfigurationError):
            create_store("dynamodb:///table", **options)
    with pytest.raises(ConfigurationError, match="poll_interval"):
        create_store("dynamodb:///table", poll_interval=0)


async def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)
    monkeypatch.setattr(client_module, "_sessions", [])
    store = create_store("dynamodb:///table?region=us-east-1")
    with pytest.raises(MissingExtraError, match=r"mcp-session-mw\[dynamodb\]"):
        await store.open()


# -- the table -----------------------------------------------------------------------------


async def test_a_missing_table_says_how_to_create_it() -> None:
    table = f"mcp-test-{uuid.uuid4().hex[:10]}"
    store = create_store(store_url(table, create_table=False))
    try:
        with pytest.raises(StoreError) as raised:
            await store.open()
        assert str(raised.value) == TABLE_MISSING.format(table=table)
        assert "db upgrade" in str(raised.value)
    finally:
        await store.close()


async def test_every_item_carries_the_ttl_attribute(store: DynamoDBStore) -> None:
    described = await store.table.call("DescribeTimeToLive", TableName=store.table.name)
    ttl = described["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    created = await store.create("ttl", new_record(ttl=60))
    await store.write_stream("ttl", "s1", [("a", None), ("b", "message")], open_as=opening())
    items = await items_of(store, created.key)
    assert len(items) == 3  # the session, the stream state, one chunk of two events
    for item in items:
        expiry = int(item[TTL_ATTRIBUTE]["N"])  # type: ignore[index]
        assert expiry >= created.expires_at
    assert await store.try_lock("chore", 30)
    [lock] = await items_of(store, "lock#chore")
    assert int(lock[TTL_ATTRIBUTE]["N"]) >= time.time() + 29  # type: ignore[index]


async def test_a_touch_past_the_items_expiry_renews_them(store: DynamoDBStore) -> None:
    created = await store.create("renew", new_record(ttl=5))
    await store.write_stream("renew", "s1", [("a", None)], open_as=opening())
    assert await store.touch("renew", ttl=3600)
    loaded = await store.load("renew")
    assert loaded is not None
    for item in await items_of(store, created.key):
        assert int(item[TTL_ATTRIBUTE]["N"]) >= loaded.expires_at  # type: ignore[index]
    # A plain touch adds the record's own ttl on the server side.
    assert await store.touch("renew")
    again = await store.load("renew")
    assert again is not None
    assert again.expires_at == pytest.approx(again.last_accessed + 3600)


# -- item and transaction limits -------------------------------------------------------------


async def test_an_event_too_large_is_refused_and_nothing_is_written(store: DynamoDBStore) -> None:
    await store.create("big", new_record())
    await store.write_stream("big", "s1", [("small", None)], open_as=opening())
    huge = "x" * MAX_ITEM_BYTES
    with pytest.raises(ItemTooLargeError, match="more than one DynamoDB item holds"):
        await store.append_events("big", "s1", [("fits", None), (huge, None)])
    with pytest.raises(ItemTooLargeError):
        await store.write_stream("big", "s2", [(huge, None)], open_as=opening("s2"))
    assert [e.data for e in await store.read_events("big", "s1")] == ["small"]
    state = await store.load_stream("big", "s1")
    assert state is not None
    assert state.last_seq == 1
    assert await store.load_stream("big", "s2") is None


async def test_a_batch_beyond_one_transaction_is_refused_whole(store: DynamoDBStore) -> None:
    await store.create("batch", new_record())
    await store.open_stream("batch", opening())
    near_limit = "y" * (350 * 1024)
    with pytest.raises(ItemTooLargeError, match="transaction"):
        await store.append_events("batch", "s1", [(near_limit, None)] * 12)
    assert await store.read_events("batch", "s1") == []
    # What fits is stored in one transaction, several chunk items, in order.
    stored = await store.append_events(
        "batch", "s1", [(near_limit + str(n), None) for n in range(3)]
    )
    assert [e.seq for e in stored] == [1, 2, 3]
    read = await store.read_events("batch", "s1")
    assert [e.data[-1] for e in read] == ["0", "1", "2"]
    assert [e.data for e in await store.read_events("batch", "s1", after_seq=1, limit=1)] == [
        near_limit + "1"
    ]


async def test_a_record_too_large_is_refused_and_the_old_one_kept(store: DynamoDBStore) -> None:
    await store.create("fat", new_record(n=1))
    with pytest.raises(ItemTooLargeError):
        await store.update("fat", {"blob": "z" * MAX_ITEM_BYTES})
    loaded = await store.load("fat")
    assert loaded is not None
    assert (loaded.state, loaded.version) == ({"n": 1}, 1)


# -- a server that stalls or throttles ------------------------------------------------------


class _Throttling(BaseHTTPRequestHandler):
    seen = 0

    def do_POST(self) -> None:
        type(self).seen += 1
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = json.dumps(
            {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "slow"}
        ).encode()
        self.send_response(400)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def throttling() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stalled() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)


async def test_throttling_is_unavailable_after_bounded_retries(
    throttling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _aws_env(monkeypatch)
    _Throttling.seen = 0
    store = create_store(
        f"dynamodb:///sessions?region={REGION}&endpoint_url={throttling}", max_attempts=2
    )
    try:
        with anyio.fail_after(30), pytest.raises(StoreUnavailableError, match="Throttling"):
            await store.load("any")
    finally:
        await store.close()
    assert _Throttling.seen == 2


async def test_a_stalled_server_is_unavailable_within_the_bound(
    stalled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _aws_env(monkeypatch)
    store = create_store(
        f"dynamodb:///sessions?region={REGION}&endpoint_url={stalled}",
        read_timeout=0.3,
        call_timeout=1.5,
    )
    started = time.monotonic()
    try:
        with anyio.fail_after(30), pytest.raises(StoreUnavailableError):
            await store.load("any")
    finally:
        await store.close()
    assert time.monotonic() - started < 25  # bounded by call_timeout, far from the guard
