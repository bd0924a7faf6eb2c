"""How one process's published events reach every process: one channel per kind of store.

- :class:`RedisChannel`: Redis pub/sub, on a connection pool of its own built
  from the store client's connection settings;
- :class:`PostgresChannel`: ``LISTEN`` on a dedicated asyncpg connection to the
  store's database, ``pg_notify`` through the store's engine;
- :class:`LogChannel`: any other store (SQLite, MariaDB, …): the events are a
  stream of one reserved record, appended through the public Store API and
  polled every ``poll_interval`` seconds.

``follow`` runs until it fails (the bus reconnects) or is cancelled; it calls
``ready`` once it is subscribed, and ``deliver`` for each message, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import SessionExistsError, SessionNotFoundError, StreamNotFoundError
from ..records import StreamState
from ..stores.base import Store
from .reserved import FOREVER, reserved_id, reserved_record

LOG_STREAM = "events"
LOG_KEEP = 1000
"""Events the log keeps: a follower further behind than that skips the rest."""
LOG_BATCH = 500
LOG_RECHECK = 50
"""Idle polls between checks that the log was not deleted and begun again."""
REDIS_READ_SLICE = 1.0
HEALTH_INTERVAL = 5.0
PUBLISH_TIMEOUT = 5.0
_PG_NAME_RE = re.compile(r"[^a-z0-9_]")


def connection_name(channel: str) -> str:
    """What the subscriber's connection calls itself (Redis CLIENT LIST, pg_stat_activity)."""
    return f"mcp-session-mw-bus-{channel}"[:63]


class Channel(Protocol):
    async def publish(self, text: str) -> None: ...

    async def follow(self, deliver: Callable[[str], None], ready: Callable[[], None]) -> None: ...


class RedisChannel:
    """Redis pub/sub on ``name``; the subscriber has a connection pool of its own."""

    def __init__(self, store: Any, name: str) -> None:
        self._store = store
        self._name = name

    async def publish(self, text: str) -> None:
        await self._store.client.publish(self._name, text)

    async def follow(self, deliver: Callable[[str], None], ready: Callable[[], None]) -> None:
        import redis.asyncio as aioredis

        store_client = self._store.client
        pool = getattr(store_client, "connection_pool", None)
        if pool is None:  # Redis Cluster: its pub/sub holds a node connection of its own
            client, dedicated = None, None
            pubsub = store_client.pubsub(ignore_subscribe_messages=True)
        else:
            options = dict(pool.connection_kwargs)
            options["socket_timeout"] = REDIS_READ_SLICE + HEALTH_INTERVAL
            options["client_name"] = connection_name(self._name)
            dedicated = aioredis.ConnectionPool(connection_class=pool.connection_class, **options)
            client = aioredis.Redis(connection_pool=dedicated)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._name)
            ready()
            while True:
                message = await pubsub.get_message(timeout=REDIS_READ_SLICE)
                if message is None:
                    await pubsub.ping()  # a dead connection fails here, within a bound
                    continue
                data = message.get("data")
                if message.get("type") == "message" and isinstance(data, bytes | str):
                    deliver(data.decode() if isinstance(data, bytes) else data)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            if client is not None and dedicated is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
                with contextlib.suppress(Exception):
                    await dedicated.aclose()


def postgres_channel_name(name: str) -> str:
    """A LISTEN channel name from ``name``: lower-case letters, digits and ``_``, ≤ 63."""
    return _PG_NAME_RE.sub("_", name.lower())[:63]


class PostgresChannel:
    """``LISTEN name`` on a dedicated asyncpg connection; ``pg_notify`` via the engine."""

    def __init__(self, engine: Any, name: str) -> None:
        self._engine = engine
        self._name = postgres_channel_name(name)

    async def publish(self, text: str) -> None:
        from sqlalchemy import text as sql

        async with self._engine.begin() as conn:
            await conn.execute(sql("SELECT pg_notify(:c, :p)"), {"c": self._name, "p": text})

    async def follow(self, deliver: Callable[[str], None], ready: Callable[[], None]) -> None:
        import asyncpg

        dsn = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        settings = {"application_name": connection_name(self._name)}
        connecting = asyncpg.connect(dsn, server_settings=settings)
        conn = await asyncio.wait_for(connecting, HEALTH_INTERVAL)
        lost = asyncio.Event()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            deliver(payload)

        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self._name, on_notify)
            ready()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), HEALTH_INTERVAL)
                if not lost.is_set():  # a dead connection fails here, within a bound
                    await asyncio.wait_for(conn.execute("SELECT 1"), HEALTH_INTERVAL)
            raise ConnectionError("the LISTEN connection was closed")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), HEALTH_INTERVAL)
            conn.terminate()


class LogChannel:
    """The events as a stream of one reserved record, polled: works on every store."""

    def __init__(self, store: Store, name: str, poll_interval: float) -> None:
        self._store = store
        self._id = reserved_id("bus", name)
        self._poll_interval = poll_interval

    async def _ensure(self) -> None:
        store = self._store
        with contextlib.suppress(SessionExistsError):
            await store.create(self._id, reserved_record(store.now(), FOREVER, {}))
        if await store.load_stream(self._id, LOG_STREAM) is None:
            state = StreamState(stream_id=LOG_STREAM, owner="bus", lease_expires=FOREVER * 10)
            await store.open_stream(self._id, state)

    async def publish(self, text: str) -> None:
        try:
            await self._store.append_event(self._id, LOG_STREAM, text, max_events=LOG_KEEP)
        except (SessionNotFoundError, StreamNotFoundError):
            await self._ensure()
            await self._store.append_event(self._id, LOG_STREAM, text, max_events=LOG_KEEP)

    async def follow(self, deliver: Callable[[str], None], ready: Callable[[], None]) -> None:
        await self._ensure()
        stream = await self._store.load_stream(self._id, LOG_STREAM)
        cursor = stream.last_seq if stream is not None else 0
        ready()
        idle = 0
        while True:
            events = await self._store.read_events(self._id, LOG_STREAM, cursor, LOG_BATCH)
            for event in events:
                cursor = event.seq
                deliver(event.data)
            idle = 0 if events else idle + 1
            if idle >= LOG_RECHECK:
                # The log was deleted and begun again (its seqs restarted): follow the new one.
                idle = 0
                stream = await self._store.load_stream(self._id, LOG_STREAM)
                if stream is None or stream.last_seq < cursor:
                    await self._ensure()
                    cursor = 0
            if len(events) < LOG_BATCH:
                await asyncio.sleep(self._poll_interval)
