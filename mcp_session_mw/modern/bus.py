"""``StoreSubscriptionBus``: the SDK's ``SubscriptionBus`` across every process on a store.

``publish`` sends the event to the store's channel (Redis pub/sub, PostgreSQL
NOTIFY, or a polled event log on SQLite, MariaDB and any other store); one
follower task per bus, started by the first ``subscribe`` or by the lifespan
(``async with bus:``), hands every event that arrives, from this process or
another, to this process's listeners. The SDK's ``ListenHandler`` is the
listener, so its filter still decides what each listen stream gets. On the
memory store there are no other processes: ``publish`` delivers directly.

Divergence #1 from ``InMemorySubscriptionBus``: on a shared store an event
reaches this process's listeners through the store, like everyone else's, so
``publish`` returns before they are called (after the round trip to the
store). Divergence #2: while the follower is reconnecting, Redis and
PostgreSQL events are missed (pub/sub keeps nothing, as the SDK's own delivery
is fire-and-forget); the event log of the polling stores keeps the last
1,000, so a follower that reconnects catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio

from ..errors import ConfigurationError, StoreUnavailableError
from ..stores import create_store
from ..stores.base import Store
from ..stores.delegating import DelegatingStore
from ..stores.memory import MemoryStore
from .channels import (
    PUBLISH_TIMEOUT,
    Channel,
    LogChannel,
    PostgresChannel,
    RedisChannel,
)
from .events import decode_event, encode_event
from .sdk_types import ServerEvent

logger = logging.getLogger("mcp_session_mw.modern")

DEFAULT_CHANNEL = "mcp-session-mw-bus"
DEFAULT_POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 5.0
RECONNECT_FIRST = 0.05
RECONNECT_MAX = 2.0
MSG_BAD_POLL = f"poll_interval is a number of seconds above 0 and at most {MAX_POLL_INTERVAL}"
MSG_BAD_CHANNEL = "channel is 1 to 60 characters of A-Z a-z 0-9 _ -"
MSG_PUBLISH_TIMEOUT = "the store did not take the event within {timeout} s"

Listener = Callable[[ServerEvent], None]


def _backend(store: Store) -> Store:
    while isinstance(store, DelegatingStore):
        store = store.backend
    return store


def choose_channel(store: Store, name: str, poll_interval: float) -> Channel | None:
    """The channel for ``store`` (None: the memory store, delivered directly)."""
    base = _backend(store)
    if isinstance(base, MemoryStore):
        return None
    if "redis" in type(base).schemes:
        return RedisChannel(base, name)
    engine = getattr(base, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        return PostgresChannel(engine, name)
    return LogChannel(store, name, poll_interval)


class StoreSubscriptionBus:
    """Fan-out of the SDK's subscription events through ``store_or_url``.

    Pass one per process to ``MCPServer(..., subscriptions=bus)``. Given a URL,
    the bus builds, opens and closes its own store (``store_options`` go to
    :func:`create_store`); given a store, the caller opens and closes it.
    """

    def __init__(
        self,
        store_or_url: Store | str,
        *,
        channel: str = DEFAULT_CHANNEL,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **store_options: Any,
    ) -> None:
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise ConfigurationError(MSG_BAD_POLL)
        if not (math.isfinite(poll_interval) and 0 < poll_interval <= MAX_POLL_INTERVAL):
            raise ConfigurationError(MSG_BAD_POLL)
        if not (0 < len(channel) <= 60 and all(c.isalnum() or c in "_-" for c in channel)):
            raise ConfigurationError(MSG_BAD_CHANNEL)
        if isinstance(store_or_url, str):
            self.store = create_store(store_or_url, **store_options)
            self._owns_store = True
        else:
            self.store = store_or_url
            self._owns_store = False
        self.poll_interval = float(poll_interval)
        self.channel = channel
        self._channel = choose_channel(self.store, channel, self.poll_interval)
        self._listeners: dict[object, Listener] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._opened = False
        self._open_lock = asyncio.Lock()

    # -- the SDK's SubscriptionBus protocol ---------------------------------------

    async def publish(self, event: ServerEvent) -> None:
        """Send ``event`` to every process's listeners (StoreUnavailableError within a bound)."""
        text = encode_event(event)
        if self._channel is None:
            self._deliver_event(event)
            await asyncio.sleep(0)
            return
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT):
                await self._open()
                await self._channel.publish(text)
        except TimeoutError as exc:
            message = MSG_PUBLISH_TIMEOUT.format(timeout=PUBLISH_TIMEOUT)
            raise StoreUnavailableError(message) from exc
        except StoreUnavailableError:
            raise
        except Exception as exc:  # a driver's own error: the project's, within the bound
            raise StoreUnavailableError(f"publishing the event failed: {exc}") from exc

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener`` (starting the follower); an idempotent unsubscribe."""
        token = object()
        self._listeners[token] = listener
        self._start_follower()

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the follower and wait until it is subscribed (TimeoutError past ``timeout``)."""
        await self._open()
        self._start_follower()
        with anyio.fail_after(timeout):
            await self._ready.wait()

    async def aclose(self) -> None:
        """Stop the follower; close the store when the bus built it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ready.clear()
        if self._owns_store and self._opened:
            self._opened = False
            await self.store.close()

    async def __aenter__(self) -> StoreSubscriptionBus:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def listening(self) -> bool:
        """True while the follower is subscribed to the store's channel."""
        return self._channel is None or self._ready.is_set()

    # -- the follower ----------------------------------------------------------------

    async def _open(self) -> None:
        if self._owns_store and not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self.store.open()
                    self._opened = True

    def _start_follower(self) -> None:
        if self._channel is None:
            self._ready.set()
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow(self._channel))

    async def _follow(self, channel: Channel) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                await self._open()
                await channel.follow(self._deliver_text, self._on_ready)
            except asyncio.CancelledError:
                raise
            except Exception:  # reconnect on its own, with a bounded back-off
                logger.warning("subscription bus follower lost its channel", exc_info=True)
            else:
                logger.warning("subscription bus follower ended; reconnecting")
            if self._ready.is_set():
                delay = RECONNECT_FIRST  # it had worked: start the back-off over
            self._ready.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _on_ready(self) -> None:
        self._ready.set()

    def _deliver_text(self, text: str) -> None:
        event = decode_event(text)
        if event is not None:
            self._deliver_event(event)

    def _deliver_event(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # fan-out boundary: one listener must not starve the others
                logger.exception("subscription listener raised; continuing")
