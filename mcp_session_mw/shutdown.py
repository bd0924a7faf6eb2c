"""Graceful shutdown: requests running when the server is told to exit finish first.

uvicorn, on SIGTERM, stops accepting connections and waits for the requests it
is serving before it runs the lifespan shutdown (which cancels the app's
running tools). But the MCP SDK streams its answers through sse-starlette,
which ends every SSE response as soon as uvicorn is told to exit: a tool still
running then has nowhere to send its result, and the middleware can only
answer its request with an error.

So while the middleware's lifespan runs, it holds sse-starlette's automatic
ending of SSE responses (``AppStatus``; a no-op without sse-starlette). Once
the server is exiting, it waits up to ``grace`` seconds for the requests it is
forwarding to the app to finish — their results are stored, and sent while
the client's connection lasts — then gives sse-starlette its automatic ending
back, which ends what still runs (each answered with the error event, as
without a grace). The lifespan shutdown waits the same way, for servers that
do not wait for running requests themselves.

SSE responses the app sends without the middleware (another path, the
modern-lane protocol revisions) are held too, until the grace ends.
"""

from __future__ import annotations

import logging

import anyio

from .streams import server_is_exiting

logger = logging.getLogger("mcp_session_mw")

POLL_SECONDS = 0.25
"""How often the middleware's background task checks whether the server is exiting."""

_holders = 0
_held = False


def hold_sse_endings() -> None:
    """Stop sse-starlette from ending SSE responses when the server is told to exit.

    Counted: sse-starlette gets its automatic ending back when every holder
    released it (several middlewares in one process).
    """
    global _holders, _held
    _holders += 1
    if _holders > 1:
        return
    try:
        from sse_starlette.sse import AppStatus
    except ImportError:  # pragma: no cover - the MCP SDK depends on it
        return
    if getattr(AppStatus, "enable_automatic_graceful_drain", False) is True:
        AppStatus.enable_automatic_graceful_drain = False  # what its disable...() does
        _held = True


def release_sse_endings() -> None:
    """Undo one :func:`hold_sse_endings`."""
    global _holders, _held
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0 and _held:
        from sse_starlette.sse import AppStatus

        AppStatus.enable_automatic_graceful_drain = True
        _held = False


class Drain:
    """Counts the requests in the app and lets shutdown wait for them, up to ``grace``."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.running = 0
        self._idle: anyio.Event | None = None  # made by drain() if it has to wait
        self._holding = False
        self._done: anyio.Event | None = None

    def enter(self) -> None:
        """A request went to the app."""
        self.running += 1

    def leave(self) -> None:
        """A request is done with the app (its answer stored and sent)."""
        self.running -= 1
        if self.running == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    def reset(self) -> None:
        """Ready for another lifespan (a server started again in the same process)."""
        self._done = None

    def hold(self) -> None:
        """Keep the app's SSE responses open past the server's exit, until :meth:`drain` ends."""
        if self.grace > 0 and not self._holding:
            self._holding = True
            hold_sse_endings()

    def release(self) -> None:
        if self._holding:
            self._holding = False
            release_sse_endings()

    async def watch(self) -> None:
        """Wait for the server to be told to exit, then drain (a background task)."""
        # The flag is set by the server's signal handler: nothing to wait on but a poll.
        while not server_is_exiting():  # noqa: ASYNC110
            await anyio.sleep(POLL_SECONDS)
        await self.drain()

    async def drain(self) -> None:
        """Wait until no request is in the app, at most ``grace`` seconds from the first call."""
        if self._done is not None:
            await self._done.wait()
            return
        self._done = anyio.Event()
        try:
            if self.running:
                logger.info(
                    "shutting down: waiting up to %g s for %d running request(s)",
                    self.grace,
                    self.running,
                )
            with anyio.move_on_after(self.grace) as waited:
                if self.running:
                    if self._idle is None:
                        self._idle = anyio.Event()
                    await self._idle.wait()
            if waited.cancelled_caught:
                logger.warning(
                    "shutting down: %d request(s) still running after %g s are ended",
                    self.running,
                    self.grace,
                )
        finally:
            self.release()
            self._done.set()
