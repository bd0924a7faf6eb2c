"""The Redis store under faults: a stalled server, "not serving" replies, lost replies, resets.

The store talks to the shared Redis through :class:`~tests.faultproxy.FaultProxy`
with a small ``socket_timeout``, so every fault ends in StoreUnavailableError
within that bound (``fail_after`` is a hang guard only, never a speed check),
and a lost reply never makes a write run twice. AUTH/ACL uses a user made for
the test; TLS a private redis-server with a certificate the test makes.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mcp_session_mw import (
    SessionExistsError,
    SessionRecord,
    StoreError,
    StoreUnavailableError,
    StreamState,
)
from mcp_session_mw.jsonrpc import MSG_STORE_UNAVAILABLE
from mcp_session_mw.stores.redis import RedisStore
from mcp_session_mw.stores.redis.connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SOCKET_TIMEOUT,
    not_serving,
)
from mcp_session_mw.stores.redis.scripts import INSERT_SCRIPT, WRITE_SCRIPT

from ..faultproxy import FaultProxy
from ..redis_cluster import RedisCluster, RedisServer, self_signed_certificate
from ..services import need_service
from ..test_middleware import HEADERS, INIT, build_sdk_app, initialize, serving

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

TIMEOUT = 2.0
"""The tests' socket_timeout and socket_connect_timeout, in seconds."""
HANG_GUARD = 30.0
"""Far above TIMEOUT: only there so a broken bound fails the test instead of hanging it."""


def record() -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
        ttl=60.0,
        state={"n": 1},
    )


def stream_state() -> StreamState:
    return StreamState(stream_id="s1", request_id=1, owner="p", lease_expires=time.time() + 30)


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    need_service("redis")
    async with FaultProxy("127.0.0.1", 6379) as running:
        yield running


async def proxied_store(port: int) -> RedisStore:
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{port}/0",
        prefix=f"faults:{uuid.uuid4().hex}:",
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )
    await store.open()
    return store


@pytest.fixture
async def store(proxy: FaultProxy) -> AsyncIterator[RedisStore]:
    opened = await proxied_store(proxy.port)
    try:
        yield opened
    finally:
        proxy.resume()
        await opened.purge()
        await opened.close()


def test_default_bounds_are_set_on_every_client() -> None:
    """A store built from a URL waits at most the default bounds (Cluster as well)."""
    assert 0 < DEFAULT_SOCKET_TIMEOUT <= 10
    assert 0 < DEFAULT_CONNECT_TIMEOUT <= 10
    plain = RedisStore.from_url("redis://127.0.0.1:6379/0")
    kwargs = plain.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT
    assert kwargs["socket_connect_timeout"] == DEFAULT_CONNECT_TIMEOUT
    assert kwargs["retry"].get_retries() == 0
    cluster = RedisStore.from_url("redis+cluster://127.0.0.1:7000/0")
    node_kwargs = cluster.client.nodes_manager.connection_kwargs
    assert node_kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT
    assert node_kwargs["socket_connect_timeout"] == DEFAULT_CONNECT_TIMEOUT
    assert cluster.client.retry.get_retries() == 0
    chosen = RedisStore.from_url("redis://127.0.0.1:6379/0", socket_timeout=2.5)
    assert chosen.client.connection_pool.connection_kwargs["socket_timeout"] == 2.5


async def test_stalled_server_raises_unavailable(store: RedisStore, proxy: FaultProxy) -> None:
    created = await store.create("sid", record())
    await store.open_stream("sid", stream_state())
    proxy.stall()
    with anyio.fail_after(HANG_GUARD):
        with pytest.raises(StoreUnavailableError):
            await store.load("sid")
        with pytest.raises(StoreUnavailableError):
            await store.append_event("sid", "s1", "x")
        with pytest.raises(StoreUnavailableError):
            await store.save("sid", created.evolve(state={"n": 2}))
    proxy.resume()
    loaded = await store.load("sid")
    assert loaded is not None
    assert loaded.state["n"] in (1, 2)


async def test_stall_while_connecting_raises_unavailable(proxy: FaultProxy) -> None:
    """A server that accepts the connection and never answers its handshake."""
    proxy.stall()
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{proxy.port}/0",
        prefix=f"faults:{uuid.uuid4().hex}:",
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )
    try:
        with anyio.fail_after(HANG_GUARD), pytest.raises(StoreUnavailableError):
            await store.load("sid")
    finally:
        await store.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"-LOADING Redis is loading the dataset in memory\r\n",
        b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL\r\n",
        b"-READONLY You can't write against a read only replica.\r\n",
        b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
        b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
        b"-CLUSTERDOWN The cluster is down\r\n",
    ],
    ids=lambda reply: reply[1:].split(b" ", 1)[0].decode(),
)
async def test_not_serving_replies_are_unavailable(
    store: RedisStore, proxy: FaultProxy, reply: bytes
) -> None:
    await store.create("sid", record())
    await store.open_stream("sid", stream_state())
    proxy.answer(reply)
    with anyio.fail_after(HANG_GUARD):
        with pytest.raises(StoreUnavailableError):
            await store.load("sid")
        with pytest.raises(StoreUnavailableError):
            await store.append_event("sid", "s1", "x")
    proxy.resume()
    assert await store.load("sid") is not None


async def test_other_error_replies_stay_plain_store_errors(
    store: RedisStore, proxy: FaultProxy
) -> None:
    """A refusal that is not about availability is not a 503: it is the store's fault."""
    await store.create("sid", record())
    proxy.answer(b"-ERR something unexpected\r\n")
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as raised:
        await store.load("sid")
    assert not isinstance(raised.value, StoreUnavailableError)
    assert not not_serving(raised.value)


async def test_lost_reply_of_a_stream_write_stores_the_event_once(
    store: RedisStore, proxy: FaultProxy
) -> None:
    await store.create("sid", record())
    await store.open_stream("sid", stream_state())
    await store.append_event("sid", "s1", "one")
    proxy.drop_reply(WRITE_SCRIPT.sha.encode())
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreUnavailableError):
        await store.append_event("sid", "s1", "two")
    assert proxy.dropped == 1
    await store.append_event("sid", "s1", "three")
    events = await store.read_events("sid", "s1")
    assert [event.data for event in events] == ["one", "two", "three"]
    assert [event.seq for event in events] == [1, 2, 3]


async def test_lost_reply_of_an_insert_is_not_session_exists(
    store: RedisStore, proxy: FaultProxy
) -> None:
    proxy.drop_reply(INSERT_SCRIPT.sha.encode())
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreUnavailableError) as raised:
        await store.create("sid", record())
    assert not isinstance(raised.value, SessionExistsError)
    assert proxy.dropped == 1
    loaded = await store.load("sid")
    assert loaded is not None
    assert loaded.state == {"n": 1}


async def test_reset_mid_reply_is_unavailable_then_the_next_call_works(
    store: RedisStore, proxy: FaultProxy
) -> None:
    await store.create("sid", record())
    proxy.reset_mid_reply()
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreUnavailableError):
        await store.load("sid")
    loaded = await store.load("sid")
    assert loaded is not None
    assert loaded.state == {"n": 1}


async def test_acl_user_authenticates_and_a_wrong_password_is_refused() -> None:
    need_service("redis")
    name = f"mcpfaults{uuid.uuid4().hex[:12]}"
    prefix = f"faults:{name}:"
    admin = RedisStore.from_url("redis://127.0.0.1:6379/0", prefix=prefix)
    await admin.client.execute_command(
        # Keys and the follower's channel (<prefix>follow) under the store's prefix only.
        "ACL",
        "SETUSER",
        name,
        "on",
        ">s3cret",
        f"~{prefix}*",
        f"&{prefix}*",
        "+@all",
    )
    user = RedisStore.from_url(f"redis://{name}:s3cret@127.0.0.1:6379/0", prefix=prefix)
    wrong = RedisStore.from_url(f"redis://{name}:wrong@127.0.0.1:6379/0", prefix=prefix)
    try:
        await user.create("sid", record())
        await user.open_stream("sid", stream_state())
        await user.append_event("sid", "s1", "hello")
        assert [event.data for event in await user.read_events("sid", "s1")] == ["hello"]
        with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError):
            await wrong.load("sid")
    finally:
        await admin.purge()
        await admin.client.execute_command("ACL", "DELUSER", name)
        for opened in (user, wrong, admin):
            await opened.close()


async def test_tls_store_through_a_stalled_proxy_is_unavailable(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = RedisServer(tmp_path / "tls", tls=(cert, key))
    server.start()
    try:
        async with FaultProxy("127.0.0.1", server.port) as proxy:
            store = RedisStore.from_url(
                f"rediss://127.0.0.1:{proxy.port}/0",
                prefix="tls:",
                ssl_ca_certs=str(cert),
                socket_timeout=TIMEOUT,
                socket_connect_timeout=TIMEOUT,
            )
            try:
                await store.create("sid", record())
                assert await store.load("sid") is not None
                proxy.stall()
                with anyio.fail_after(HANG_GUARD), pytest.raises(StoreUnavailableError):
                    await store.load("sid")
                proxy.resume()
                assert await store.load("sid") is not None
            finally:
                await store.close()
    finally:
        server.stop()


async def test_stalled_redis_gives_the_client_503_with_retry_after(proxy: FaultProxy) -> None:
    prefix = f"faults:{uuid.uuid4().hex}:"
    options = {"prefix": prefix, "socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    url = f"redis://127.0.0.1:{proxy.port}/0"
    async with serving(build_sdk_app(), store=url, store_options=options) as client:
        session_id = await initialize(client)
        proxy.stall()
        with anyio.fail_after(HANG_GUARD):
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "count"}}
            answered = await client.post(
                "/mcp", json=call, headers={**HEADERS, "mcp-session-id": session_id}
            )
            fresh = await client.post("/mcp", json=INIT, headers=HEADERS)
        for response, rid in ((answered, 7), (fresh, 1)):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            body = response.json()
            assert body["jsonrpc"] == "2.0"
            assert body["id"] == rid
            assert body["error"]["message"] == MSG_STORE_UNAVAILABLE
        proxy.resume()
    cleanup = RedisStore.from_url("redis://127.0.0.1:6379/0", prefix=prefix)
    await cleanup.purge()
    await cleanup.close()


@pytest.mark.redis_cluster
async def test_stalled_cluster_raises_unavailable() -> None:
    """Every node of a private Cluster stopped (SIGSTOP): a bounded 503, then service again."""
    cluster = RedisCluster()
    cluster.start()
    store = RedisStore.from_url(
        cluster.url,
        prefix=f"faults:{uuid.uuid4().hex}:",
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )
    try:
        await store.create("sid", record())
        await store.open_stream("sid", stream_state())
        for node in cluster.nodes:
            assert node.process is not None
            node.process.send_signal(signal.SIGSTOP)
        try:
            with anyio.fail_after(HANG_GUARD):
                with pytest.raises(StoreUnavailableError):
                    await store.load("sid")
                with pytest.raises(StoreUnavailableError):
                    await store.append_event("sid", "s1", "x")
        finally:
            for node in cluster.nodes:
                assert node.process is not None
                node.process.send_signal(signal.SIGCONT)
        with anyio.fail_after(HANG_GUARD):
            while True:  # the client may have dropped its view of the slots: it rebuilds it
                try:
                    loaded = await store.load("sid")
                    break
                except StoreUnavailableError:
                    await anyio.sleep(0.2)
        assert loaded is not None
    finally:
        await store.close()
        cluster.stop()
