"""StoreSubscriptionBus on every backend: events cross from one bus (process) to another."""

from __future__ import annotations

import uuid

import anyio
import pytest
from mcp.server.subscriptions import InMemorySubscriptionBus, SubscriptionBus
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

from mcp_session_mw.errors import ConfigurationError
from mcp_session_mw.modern import StoreSubscriptionBus
from mcp_session_mw.modern.channels import connection_name
from mcp_session_mw.modern.events import decode_event, encode_event
from mcp_session_mw.stores import Store

from ..backends import Backend
from ..conftest import StoreFactory

pytestmark = pytest.mark.anyio
WAIT = 10.0
"""Bounds a hang on a loaded machine; no test measures delivery speed."""
EVENTS: list[ServerEvent] = [
    ToolsListChanged(),
    PromptsListChanged(),
    ResourcesListChanged(),
    ResourceUpdated(uri="file:///a b/ü.txt"),
]


class Received:
    """A listener that lets a test wait for the n-th event."""

    def __init__(self) -> None:
        self.events: list[ServerEvent] = []
        self._changed = anyio.Event()

    def __call__(self, event: ServerEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, count: int) -> list[ServerEvent]:
        with anyio.fail_after(WAIT):
            while len(self.events) < count:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.events


def test_events_round_trip_by_kind() -> None:
    for event in EVENTS:
        assert decode_event(encode_event(event)) == event
    assert decode_event('{"kind":"nope"}') is None
    assert decode_event("not json") is None
    assert decode_event('{"kind":"resource_updated"}') is None


def test_the_bus_is_the_sdks_protocol() -> None:
    bus: SubscriptionBus = StoreSubscriptionBus("memory://")
    assert bus is not None
    assert InMemorySubscriptionBus is not None


@pytest.mark.parametrize("poll", [0, -1, 5.5, float("nan"), True])
def test_a_bad_poll_interval_is_refused(poll: float) -> None:
    with pytest.raises(ConfigurationError):
        StoreSubscriptionBus("memory://", poll_interval=poll)


def test_a_bad_channel_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        StoreSubscriptionBus("memory://", channel="no spaces")


async def test_every_process_gets_every_event(
    backend: Backend, store_factory: StoreFactory
) -> None:
    channel = f"t{uuid.uuid4().hex[:12]}"
    first = StoreSubscriptionBus(await store_factory(), channel=channel, poll_interval=0.05)
    if backend.shared_instance:
        buses = [first]  # the memory store has no other process to reach
    else:
        second = StoreSubscriptionBus(await store_factory(), channel=channel, poll_interval=0.05)
        buses = [first, second]
    received = [Received() for _ in buses]
    for bus, listener in zip(buses, received, strict=True):
        bus.subscribe(listener)
    try:
        for bus in buses:
            await bus.start(timeout=WAIT)
        for event in EVENTS:
            await buses[-1].publish(event)
        for listener in received:
            assert await listener.wait_for(len(EVENTS)) == EVENTS
    finally:
        for bus in buses:
            await bus.aclose()


async def test_an_unsubscribed_listener_gets_nothing_more(store_factory: StoreFactory) -> None:
    channel = f"t{uuid.uuid4().hex[:12]}"
    bus = StoreSubscriptionBus(await store_factory(), channel=channel, poll_interval=0.05)
    kept, dropped = Received(), Received()
    bus.subscribe(kept)
    unsubscribe = bus.subscribe(dropped)
    try:
        await bus.start(timeout=WAIT)
        await bus.publish(ToolsListChanged())
        await kept.wait_for(1)
        await dropped.wait_for(1)
        unsubscribe()
        unsubscribe()  # idempotent
        await bus.publish(PromptsListChanged())
        await kept.wait_for(2)
        assert dropped.events == [ToolsListChanged()]
    finally:
        await bus.aclose()


async def test_a_raising_listener_does_not_starve_the_others(store_factory: StoreFactory) -> None:
    channel = f"t{uuid.uuid4().hex[:12]}"
    bus = StoreSubscriptionBus(await store_factory(), channel=channel, poll_interval=0.05)

    def broken(event: ServerEvent) -> None:
        raise RuntimeError("listener bug")

    good = Received()
    bus.subscribe(broken)
    bus.subscribe(good)
    try:
        await bus.start(timeout=WAIT)
        await bus.publish(ToolsListChanged())
        await bus.publish(ResourceUpdated(uri="x://1"))
        assert await good.wait_for(2) == [ToolsListChanged(), ResourceUpdated(uri="x://1")]
    finally:
        await bus.aclose()


async def _kill_subscriber(backend: Backend, store: Store, channel: str) -> int:
    """End the follower's own connection from the server side; how many were ended."""
    name = connection_name(channel)
    if backend.name == "postgresql":
        from sqlalchemy import text

        engine = store.engine  # type: ignore[attr-defined]
        async with engine.begin() as conn:
            rows = await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            )
            return len(rows.fetchall())
    killed = 0
    for entry in await store.client.client_list():  # type: ignore[attr-defined]
        if entry.get("name") == name:
            await store.client.client_kill_filter(_id=entry["id"])  # type: ignore[attr-defined]
            killed += 1
    return killed


async def _subscribed_again(backend: Backend, store: Store, bus: StoreSubscriptionBus) -> None:
    """Wait until the follower has subscribed on a new connection."""
    with anyio.fail_after(WAIT):
        if backend.name == "postgresql":
            while bus.listening:  # noqa: ASYNC110 - the loss is seen by the follower's task
                await anyio.sleep(0.01)
            await bus.start(timeout=WAIT)
            return
        # redis-py's pub/sub reconnects and subscribes again by itself.
        name = connection_name(bus.channel)
        while True:
            clients = await store.client.client_list()  # type: ignore[attr-defined]
            if any(c.get("name") == name and c.get("sub") == "1" for c in clients):
                return
            await anyio.sleep(0.05)


async def test_the_follower_reconnects_on_its_own(
    backend: Backend, store_factory: StoreFactory
) -> None:
    if backend.name not in ("redis", "postgresql"):
        pytest.skip("kills a Redis or PostgreSQL subscriber connection by name; polling has none")
    channel = f"t{uuid.uuid4().hex[:12]}"
    store = await store_factory()
    bus = StoreSubscriptionBus(store, channel=channel)
    received = Received()
    bus.subscribe(received)
    try:
        await bus.start(timeout=WAIT)
        await bus.publish(ToolsListChanged())
        await received.wait_for(1)
        assert await _kill_subscriber(backend, store, channel) == 1
        await _subscribed_again(backend, store, bus)
        await bus.publish(PromptsListChanged())
        assert await received.wait_for(2) == [ToolsListChanged(), PromptsListChanged()]
    finally:
        await bus.aclose()
