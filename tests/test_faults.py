"""Store outages with real servers, through the middleware, and writes cut off half-way.

The shared servers are never stopped: Redis outages use a private redis-server
on a free port (started and stopped here), and PostgreSQL/MariaDB outages use a
TCP relay in front of the shared server, which the test cuts and restores.
While the store is away every request gets a 503 with a JSON-RPC error body;
once it is back the same app (never restarted) serves the same sessions.

The relay can also cut every connection after a given number of bytes sent to
the server, which interrupts a write in the middle of its statement (or
between two statements of its transaction). Sweeping that point across a
write, the record read back afterwards is always either the old one or the
new one, whole.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest
import sqlalchemy as sa
from anyio.abc import SocketStream, TaskGroup

from mcp_session_mw import SessionRecord, Store, StoreError, StreamState, create_store
from mcp_session_mw.jsonrpc import MSG_STORE_UNAVAILABLE

from .redis_cluster import RedisServer
from .services import MARIADB_URL, POSTGRES_URL, need_service
from .test_middleware import (
    HEADERS,
    INIT,
    assert_jsonrpc_error,
    build_sdk_app,
    call,
    initialize,
    serving,
)

pytestmark = pytest.mark.anyio

BLOB = 120_000
"""Characters of the state written by the interrupted writes: many TCP segments."""


def cut_points(size: int) -> list[int]:
    """Bytes let through to the server before the cut, for a write that sends ``size`` in all.

    The start, the middle and, densely, the end, where the transaction's last
    messages (COMMIT, EXEC) travel; past the end the write is not cut at all.
    """
    tail = [size - back for back in (400, 120, 60, 30, 15, 8, 4, 2, 1)]
    points = [0, 1, 40, size // 4, size // 2, size * 9 // 10, *tail, size + 10_000]
    return sorted({point for point in points if point >= 0})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Direction = Literal["up", "down"]
"""``up``: bytes towards the server (requests); ``down``: towards the client (replies)."""


class CuttingRelay:
    """Forwards a loopback port to a real server; can be cut now, or after N bytes.

    ``stop`` drops every relayed connection and refuses new ones (what a client
    sees when its server goes away); ``start`` brings it back on the same port.
    ``cut_after(n, direction)`` lets ``n`` more bytes through in that direction,
    then stops the relay exactly there: cutting ``up`` interrupts a request as
    it is sent, cutting ``down`` loses a reply (the server may have committed).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()
        self._budget: int | None = None
        self._direction: Direction = "up"
        self.cut = False
        self.forwarded: dict[Direction, int] = {"up": 0, "down": 0}
        """Bytes relayed so far in each direction (all connections)."""

    async def start(self, tg: TaskGroup) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        scope, stopped = anyio.CancelScope(), anyio.Event()
        self._budget, self.cut = None, False

        async def serve() -> None:
            try:
                with scope:
                    async with listener:
                        await listener.serve(self._relay)
            finally:
                stopped.set()

        self._scope, self._stopped = scope, stopped
        tg.start_soon(serve)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            await self._stopped.wait()
            self._scope = None

    def cut_after(self, budget: int | None, direction: Direction = "up") -> None:
        """Let ``budget`` more bytes through in ``direction``, then cut (None: never)."""
        self._budget, self._direction = budget, direction

    def _spend(self, direction: Direction, size: int) -> int:
        """How much of a ``size`` byte chunk may pass now."""
        if self._budget is None or direction != self._direction:
            return size
        allowed = min(size, self._budget)
        self._budget -= allowed
        return allowed

    def _trip(self) -> None:
        self.cut, self._budget = True, None
        if self._scope is not None:
            self._scope.cancel()

    async def _relay(self, client: SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:

                async def pipe(
                    direction: Direction, source: SocketStream, sink: SocketStream
                ) -> None:
                    try:
                        async for chunk in source:
                            allowed = self._spend(direction, len(chunk))
                            if allowed:
                                await sink.send(chunk[:allowed])
                                self.forwarded[direction] += allowed
                            if allowed < len(chunk):
                                self._trip()
                                return
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pipe, "up", client, upstream)
                tg.start_soon(pipe, "down", upstream, client)


@pytest.fixture
async def task_group() -> AsyncIterator[TaskGroup]:
    async with anyio.create_task_group() as tg:
        yield tg
        tg.cancel_scope.cancel()


# -- the stores under test -------------------------------------------------------------------


class Target:
    """A real store that can be taken away and brought back, plus a direct view of it."""

    def __init__(self) -> None:
        self.relayed: Store | None = None
        self.direct: Store | None = None
        self.down: Callable[[], Awaitable[None]] = _nothing
        self.up: Callable[[], Awaitable[None]] = _nothing
        self.relay: CuttingRelay | None = None


async def _nothing() -> None:
    return None


@asynccontextmanager
async def sql_target(service: str, url: str, tg: TaskGroup) -> AsyncIterator[Target]:
    need_service(service)
    direct_url = sa.make_url(url)
    relay = CuttingRelay(direct_url.host or "127.0.0.1", direct_url.port or 0)
    await relay.start(tg)
    relayed_url = direct_url.set(host="127.0.0.1", port=relay.port)
    prefix = f"f{uuid.uuid4().hex[:10]}_"
    target = Target()
    target.relay = relay
    target.relayed = create_store(
        relayed_url.render_as_string(hide_password=False), table_prefix=prefix
    )
    target.direct = create_store(url, table_prefix=prefix)

    async def up() -> None:
        await relay.start(tg)

    target.down, target.up = relay.stop, up
    try:
        await target.direct.open()
        await target.relayed.open()
        yield target
    finally:
        await relay.stop()
        await target.relayed.close()
        await target.direct.drop_schema()  # type: ignore[attr-defined]
        await target.direct.close()


@asynccontextmanager
async def redis_target(tg: TaskGroup, *, relayed: bool) -> AsyncIterator[Target]:
    """A private redis-server with an append-only file, so its data survives a restart."""
    pytest.importorskip("redis")
    with tempfile.TemporaryDirectory(prefix="mcp-session-mw-faults-") as workdir:
        server = RedisServer(
            Path(workdir), extra=("--appendonly", "yes", "--appendfsync", "always")
        )
        await anyio.to_thread.run_sync(server.start)
        target = Target()
        prefix = f"faults:{uuid.uuid4().hex[:8]}:"
        try:
            if relayed:
                relay = CuttingRelay("127.0.0.1", server.port)
                await relay.start(tg)
                target.relay = relay

                async def up() -> None:
                    await relay.start(tg)

                target.down, target.up = relay.stop, up
                url = f"redis://127.0.0.1:{relay.port}/0"
            else:

                async def down() -> None:
                    await anyio.to_thread.run_sync(server.stop)

                async def restart() -> None:
                    await anyio.to_thread.run_sync(server.start)

                target.down, target.up = down, restart
                url = server.url
            target.relayed = create_store(url, prefix=prefix)
            target.direct = create_store(server.url, prefix=prefix)
            await target.relayed.open()
            await target.direct.open()
            yield target
        finally:
            if target.relay is not None:
                await target.relay.stop()
            for store in (target.relayed, target.direct):
                if store is not None:
                    await store.close()
            await anyio.to_thread.run_sync(server.stop)


OUTAGES = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@asynccontextmanager
async def target_for(kind: str, tg: TaskGroup, *, relayed_redis: bool) -> AsyncIterator[Target]:
    if kind == "redis":
        async with redis_target(tg, relayed=relayed_redis) as target:
            yield target
    else:
        url = POSTGRES_URL if kind == "postgresql" else MARIADB_URL
        async with sql_target(kind, url, tg) as target:
            yield target


# -- store down at request time: 503, then healed without a restart ---------------------------


async def every_request_is_503(client: httpx.AsyncClient, session_id: str) -> None:
    on_session = {**HEADERS, "mcp-session-id": session_id}
    ping = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 11, "method": "ping"}, headers=on_session
    )
    assert_jsonrpc_error(ping, 503, MSG_STORE_UNAVAILABLE, 11)
    assert ping.headers["retry-after"] == "1"
    init = await client.post("/mcp", json={**INIT, "id": 12}, headers=HEADERS)
    assert_jsonrpc_error(init, 503, MSG_STORE_UNAVAILABLE, 12)
    assert "mcp-session-id" not in init.headers
    resume = await client.get(
        "/mcp",
        headers={**on_session, "accept": "text/event-stream", "last-event-id": "get.0"},
    )
    assert_jsonrpc_error(resume, 503, MSG_STORE_UNAVAILABLE, None)
    delete = await client.delete("/mcp", headers=on_session)
    assert_jsonrpc_error(delete, 503, MSG_STORE_UNAVAILABLE, None)


@pytest.mark.parametrize("kind", OUTAGES)
async def test_store_down_is_503_and_back_up_serves_the_same_sessions(
    kind: str, task_group: TaskGroup
) -> None:
    async with target_for(kind, task_group, relayed_redis=False) as target:
        assert target.relayed is not None
        # touch_interval=0: every request goes to the store, none is answered from memory.
        async with serving(build_sdk_app(), store=target.relayed, touch_interval=0) as client:
            session_id = await initialize(client)
            assert await call(client, session_id, "count") == "1"
            await target.down()
            await every_request_is_503(client, session_id)
            await every_request_is_503(client, session_id)  # and again: nothing got stuck
            await target.up()
            with anyio.fail_after(30):
                while True:  # the first request after a restart may still find a dead connection
                    response = await client.post(
                        "/mcp",
                        json={"jsonrpc": "2.0", "id": 13, "method": "ping"},
                        headers={**HEADERS, "mcp-session-id": session_id},
                    )
                    if response.status_code != 503:
                        break
                    await anyio.sleep(0.1)
            assert response.status_code == 200, response.text
            assert await call(client, session_id, "count") == "2"
            fresh = await initialize(client)
            assert await call(client, fresh, "count") == "1"


# -- writes cut off half-way ------------------------------------------------------------------


def big_state(generation: int) -> dict[str, Any]:
    return {"gen": generation, "blob": str(generation % 10) * BLOB, "tail": generation}


def assert_whole(state: dict[str, Any]) -> int:
    """The state is exactly one generation's, never a mix or a truncation; returns it."""
    generation = state["gen"]
    assert state == big_state(generation)
    return int(generation)


def new_record(**state: Any) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + 600,
        ttl=600,
        state=state,
    )


async def interrupted(
    relay: CuttingRelay, budget: int, direction: Direction, write: Awaitable[Any]
) -> bool:
    """Run ``write`` with the relay cut after ``budget`` bytes; True if the write succeeded."""
    relay.cut_after(budget, direction)
    try:
        with anyio.fail_after(60):
            await write
    except StoreError:
        return False
    return True


async def restore(target: Target, tg: TaskGroup) -> None:
    relay = target.relay
    assert relay is not None
    relay.cut_after(None)
    if relay.cut:
        await relay.stop()
        await relay.start(tg)
    await warm(target)


async def warm(target: Target) -> None:
    """One read through the relay, so the next write does not also pay for reconnecting."""
    assert target.relayed is not None
    with anyio.fail_after(30):
        while True:
            try:
                await target.relayed.load("warm-up")
                return
            except StoreError:
                await anyio.sleep(0.05)


WRITES = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


DIRECTIONS = [pytest.param("up", id="request-cut"), pytest.param("down", id="reply-lost")]


@dataclass
class Sweep:
    """What a sweep of cut points saw: (write succeeded, relay was cut) pairs, and lost replies."""

    outcomes: set[tuple[bool, bool]] = field(default_factory=set)
    applied_without_reply: int = 0

    def check_covered(self) -> None:
        assert (False, True) in self.outcomes  # some writes really were cut
        assert (True, False) in self.outcomes  # and past the end nothing was


async def sweep(
    target: Target,
    tg: TaskGroup,
    direction: Direction,
    write: Callable[[int], Awaitable[Any]],
    check: Callable[[int, bool], Awaitable[bool]],
) -> Sweep:
    """Cut ``write(i)`` at each point of :func:`cut_points`; ``check`` inspects the result.

    Two uncut writes come first: one warms caches (connections, prepared
    statements, Redis scripts), the second measures how many bytes a write
    moves in ``direction``; another uncut write follows every cut.
    ``check(i, done)`` returns True when it found the write applied.
    """
    relay = target.relay
    assert relay is not None
    await warm(target)
    await write(-2)
    before = relay.forwarded[direction]
    await write(-1)
    size = relay.forwarded[direction] - before
    seen = Sweep()
    for index, budget in enumerate(cut_points(size)):
        done = await interrupted(relay, budget, direction, write(index))
        seen.outcomes.add((done, relay.cut))
        await restore(target, tg)
        applied = await check(index, done)
        if applied and not done:
            seen.applied_without_reply += 1
        # The cut killed the pooled connections: an uncut write on the new one
        # prepares its statements, so the next write moves `size` bytes again.
        await write(-3 - index)
    return seen


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("kind", WRITES)
async def test_an_update_cut_off_half_way_leaves_the_old_or_the_new_record(
    kind: str, direction: Direction, task_group: TaskGroup
) -> None:
    async with target_for(kind, task_group, relayed_redis=True) as target:
        store, direct = target.relayed, target.direct
        assert store is not None
        assert direct is not None
        await direct.create("victim", new_record(**big_state(0)))
        last: list[SessionRecord] = []

        async def write(index: int) -> None:
            current = await direct.load("victim")
            assert current is not None
            last[:] = [current]
            await store.update("victim", big_state(current.state["gen"] + 1))

        async def check(index: int, done: bool) -> bool:
            [before] = last
            after = await direct.load("victim")
            assert after is not None
            generation = assert_whole(after.state)
            applied = bool(generation == before.state["gen"] + 1)
            assert applied or generation == before.state["gen"]
            assert after.version == before.version + applied
            if done:
                assert applied
            return applied

        seen = await sweep(target, task_group, direction, write, check)
        seen.check_covered()
        if direction == "down":  # a lost reply to a committed write was among the cuts
            assert seen.applied_without_reply > 0


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("kind", WRITES)
async def test_a_create_cut_off_half_way_leaves_nothing_or_the_whole_record(
    kind: str, direction: Direction, task_group: TaskGroup
) -> None:
    async with target_for(kind, task_group, relayed_redis=True) as target:
        store, direct = target.relayed, target.direct
        assert store is not None
        assert direct is not None

        async def write(index: int) -> None:
            await store.create(f"born{index}", new_record(**big_state(7)))

        async def check(index: int, done: bool) -> bool:
            born = await direct.load(f"born{index}")
            if done:
                assert born is not None
            if born is not None:
                assert assert_whole(born.state) == 7
                assert born.version == 1
            return born is not None

        (await sweep(target, task_group, direction, write, check)).check_covered()


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("kind", WRITES)
async def test_a_batch_of_events_cut_off_half_way_is_stored_whole_or_not_at_all(
    kind: str, direction: Direction, task_group: TaskGroup
) -> None:
    async with target_for(kind, task_group, relayed_redis=True) as target:
        store, direct = target.relayed, target.direct
        assert store is not None
        assert direct is not None
        await direct.create("victim", new_record())
        items = [(json.dumps({"n": n, "pad": "x" * 2_000}), None) for n in range(50)]

        async def write(index: int) -> None:
            await direct.open_stream("victim", StreamState(stream_id=f"s{index}", owner="t"))
            await store.append_events("victim", f"s{index}", items)

        async def check(index: int, done: bool) -> bool:
            events = await direct.read_events("victim", f"s{index}")
            if done:
                assert len(events) == 50
            assert len(events) in (0, 50)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert [json.loads(e.data)["n"] for e in events] == list(range(len(events)))
            state = await direct.load_stream("victim", f"s{index}")
            assert state is not None
            assert state.last_seq == len(events)
            return bool(events)

        (await sweep(target, task_group, direction, write, check)).check_covered()
