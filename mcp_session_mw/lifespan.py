"""The server's lifespan around the app: the store opened and closed, the background tasks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .errors import StoreError
from .janitor import Janitor
from .logs import log_failure
from .shutdown import Drain
from .stores import Store
from .streams import ExitWatch
from .tasks import Tasks
from .watch import StreamWatcher

logger = logging.getLogger("mcp_session_mw")


@dataclass(eq=False)
class Lifespan:
    """Opens the store once, runs the background tasks while the server lives, drains at exit.

    ``background`` and ``watcher`` are set between startup and shutdown; a
    request outside them (no lifespan, or after shutdown) brings tasks of its
    own. ``close_idle``, when given, is kept running with ``idle_timeout``.
    """

    store: Store
    drain: Drain
    janitor: Janitor | None
    idle_timeout: float | None
    close_idle: Callable[[float], Awaitable[None]]
    store_open: bool = field(default=False, init=False)
    background: Tasks | None = field(default=None, init=False)
    watcher: StreamWatcher | None = field(default=None, init=False)
    exit_watch: ExitWatch | None = field(default=None, init=False)
    _open_lock: anyio.Lock = field(default_factory=anyio.Lock, init=False, repr=False)

    async def open_store(self) -> None:
        """Open the store once; called at startup and, lazily, by the first request."""
        if self.store_open:
            return
        async with self._open_lock:
            if not self.store_open:
                await self.store.open()
                self.store_open = True
                metrics.watch(self.store)

    async def close_store(self) -> None:
        async with self._open_lock:
            if self.store_open:
                self.store_open = False
                metrics.unwatch(self.store)
                await self.store.close()

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan ``scope`` to ``app``, with the store and the tasks around it."""
        stop = anyio.Event()

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.open_store()
                except StoreError:
                    # Requests answer 503 until the store is back; no crash at boot.
                    log_failure(logger, "session store unavailable at startup")
            elif message["type"] == "lifespan.shutdown":
                # Requests still in the app finish first (up to the grace), then
                # the background work ends, before the app shuts down.
                await self.drain.drain()
                halt()
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.close_store()
            await send(message)

        async def background(*, task_status: TaskStatus[None]) -> None:
            # Every task in it contains its own failures; should the group end
            # anyway, serve() starts a new one (see tasks).
            tasks = self.background = Tasks()
            self.watcher = watcher = StreamWatcher()
            tasks.keep("the stream watcher", watcher.run)
            self.exit_watch = exit_watch = ExitWatch()
            tasks.keep("the exit watch", exit_watch.run)
            if self.janitor is not None:
                tasks.keep("the janitor", self.janitor.run)
            if self.drain.grace > 0:
                tasks.keep("the shutdown watch", self.drain.watch)
            if self.idle_timeout is not None:
                tasks.keep("closing idle app sessions", self.close_idle, self.idle_timeout)
            await tasks.serve(stop, task_status=task_status)

        def halt() -> None:
            # Requests from here on bring tasks of their own (see _respond_alone).
            self.background = None
            self.watcher = None
            self.exit_watch = None
            stop.set()

        self.drain.reset()
        self.drain.hold()
        try:
            async with anyio.create_task_group() as outer:
                await outer.start(background)
                try:
                    await app(scope, lifespan_receive, lifespan_send)
                finally:
                    halt()
        finally:
            self.drain.release()
