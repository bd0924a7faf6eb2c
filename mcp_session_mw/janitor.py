"""The janitor: removes expired sessions and their events, on one instance at a time.

Every store already treats an expired session as absent; the janitor frees the
space. Each instance of the middleware runs one (in its lifespan's background
task group) that takes a turn every ``cleanup_interval`` seconds, the first
after a random part of an interval so instances started together spread out.
A turn sweeps only if it gets the store lock :data:`CLEANUP_LOCK`, a lease of
:data:`LEASE_SHARE` of the interval that is never released early: whichever
instance sweeps, the others' turns within the next interval find the lease
running and skip. So the whole deployment sweeps about once per interval,
never twice within :data:`LEASE_SHARE` of one, and an instance that dies
mid-sweep only delays the next sweep until its lease runs out.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import anyio

from . import metrics
from .errors import StoreError
from .stores.base import Store

logger = logging.getLogger("mcp_session_mw")

CLEANUP_LOCK = "mcp-session-mw.cleanup"
LEASE_SHARE = 0.9
"""The lease a sweep takes, as a share of the interval (less than 1, so the sweeping
instance's own next turn, one interval later, finds it run out)."""

# Messages tests assert on.
MSG_SWEPT = "cleanup removed %d expired sessions"
MSG_SWEEP_FAILED = "cleanup of expired sessions failed; next try in %.0f s"


class Janitor:
    """Sweeps expired sessions out of ``store`` every ``interval`` seconds (see module doc).

    ``prepare`` runs before each turn (the middleware opens its store there, so
    a store that was down at startup is swept once it is back). ``sweeps`` and
    ``removed`` count what this process did.
    """

    def __init__(
        self,
        store: Store,
        interval: float,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.interval = float(interval)
        self._prepare = prepare
        self.sweeps = 0
        """Sweeps this process ran."""
        self.removed = 0
        """Sessions those sweeps removed."""

    async def turn(self) -> int | None:
        """Sweep if no other instance swept within the lease; sessions removed, else None."""
        if self._prepare is not None:
            await self._prepare()
        if not await self.store.try_lock(CLEANUP_LOCK, self.interval * LEASE_SHARE):
            return None
        removed = await self.store.cleanup_expired()
        self.sweeps += 1
        self.removed += removed
        metrics.sessions_expired(removed)
        logger.log(logging.INFO if removed else logging.DEBUG, MSG_SWEPT, removed)
        return removed

    async def run(self) -> None:
        """Take a turn every interval until cancelled; failures are logged, never raised."""
        await anyio.sleep(random.uniform(0, self.interval))
        next_turn = anyio.current_time()
        while True:
            try:
                await self.turn()
            except StoreError:
                logger.warning(MSG_SWEEP_FAILED, self.interval, exc_info=True)
            except Exception:
                # A bug here must not take the server's background task group down.
                logger.exception(MSG_SWEEP_FAILED, self.interval)
            now = anyio.current_time()
            while next_turn <= now:  # a turn that overran skips the slots it missed
                next_turn += self.interval
            await anyio.sleep(next_turn - now)
