"""Liveness and readiness probes: small ASGI apps for Kubernetes and load balancers.

Liveness answers from the process alone, so an orchestrator never restarts
every instance because the shared store had a bad minute. Readiness makes one
cheap round trip to the store (a read of a key no session hashes to) within a
timeout, and says not ready while the server is exiting, so traffic moves to
other instances before this one stops.

Both answer JSON with ``Cache-Control: no-store``: 200 when the answer is yes,
503 with a short ``reason`` when it is no. The reason names what failed, never
the store's address or credentials (those go to the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .errors import ConfigurationError, StoreError, StoreUnavailableError
from .streams import server_is_exiting

if TYPE_CHECKING:
    from .middleware import SessionMiddleware
    from .stores.base import Store

logger = logging.getLogger("mcp_session_mw")

DEFAULT_TIMEOUT = 2.0
"""Seconds the readiness probe waits for the store (keep it below the probe's own timeout)."""
DEFAULT_LIVE_PATH = "/livez"
DEFAULT_READY_PATH = "/readyz"
PROBE_KEY = "0" * 64
"""The digest the readiness read asks for: SHA-256 of nothing anyone sends, so never a session."""

# Reasons tests assert on.
REASON_TIMEOUT = "the store did not answer within {timeout:g} s"
REASON_UNAVAILABLE = "the store cannot be reached"
REASON_FAILED = "the store answered with an error"
REASON_EXITING = "the server is shutting down"
MSG_BAD_TIMEOUT = "the readiness timeout must be a positive number of seconds"
MSG_BAD_PATH = "a probe path must start with '/', not {path!r}"


@dataclass(frozen=True)
class Readiness:
    """What one readiness check found: ready or not, why not, and the round trip's time."""

    ready: bool
    reason: str | None = None
    latency: float | None = None
    """Seconds the store took to answer (None when it did not)."""

    def body(self) -> dict[str, Any]:
        if self.ready:
            latency_ms = None if self.latency is None else round(self.latency * 1000, 3)
            return {"status": "ready", "store_latency_ms": latency_ms}
        return {"status": "unavailable", "reason": self.reason}


async def check_store(
    store: Store,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    opener: Callable[[], Awaitable[None]] | None = None,
) -> Readiness:
    """One round trip to ``store`` within ``timeout`` seconds; never raises a store error.

    Through a wrapper (caching, encryption) the round trip goes to the backend.

    ``opener`` (an async callable) runs first, inside the same timeout: the
    middleware's ``open_store``, so a store that was down at startup is opened
    by the first probe that finds it back.
    """
    from .stores.delegating import DelegatingStore

    while isinstance(store, DelegatingStore):  # the backend itself, not a cache in front
        store = store.backend
    started = time.monotonic()
    reason: str | None = None
    with anyio.move_on_after(timeout) as scope:
        try:
            if opener is not None:
                await opener()
            await store.load_by_key(PROBE_KEY)
        except StoreUnavailableError as exc:
            logger.warning("readiness: %s: %s", REASON_UNAVAILABLE, exc)
            reason = REASON_UNAVAILABLE
        except StoreError as exc:
            logger.warning("readiness: %s: %s", REASON_FAILED, exc)
            reason = REASON_FAILED
    if scope.cancelled_caught:
        reason = REASON_TIMEOUT.format(timeout=timeout)
        logger.warning("readiness: %s", reason)
    if reason is not None:
        return Readiness(False, reason)
    return Readiness(True, latency=time.monotonic() - started)


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigurationError(MSG_BAD_TIMEOUT)
    return float(timeout)


async def _answer(
    body: dict[str, Any], status: int, scope: Scope, receive: Receive, send: Send
) -> None:
    response = JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    await response(scope, receive, send)


class LivenessProbe:
    """ASGI app: 200 ``{"status": "alive"}`` whenever the process can answer; no store call."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _answer({"status": "alive"}, 200, scope, receive, send)


class ReadinessProbe:
    """ASGI app: 200 when the store answers within ``timeout``, else 503 with the reason.

    ``target`` is a :class:`~mcp_session_mw.SessionMiddleware` (its store,
    opened if it is not yet) or a :class:`~mcp_session_mw.stores.base.Store`
    the caller opened.
    """

    def __init__(
        self, target: SessionMiddleware | Store, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        from .stores.base import Store

        self.timeout = _check_timeout(timeout)
        self._opener: Callable[[], Awaitable[None]] | None = None
        if isinstance(target, Store):
            self.store = target
        else:
            self.store, self._opener = target.store, target.open_store

    async def check(self) -> Readiness:
        if server_is_exiting():
            return Readiness(False, REASON_EXITING)
        return await check_store(self.store, timeout=self.timeout, opener=self._opener)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        result = await self.check()
        await _answer(result.body(), 200 if result.ready else 503, scope, receive, send)


def health_routes(
    target: SessionMiddleware | Store,
    *,
    live_path: str | None = DEFAULT_LIVE_PATH,
    ready_path: str | None = DEFAULT_READY_PATH,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Route]:
    """Starlette routes serving the probes, for ``app.router.routes`` or ``Starlette(routes=...)``.

    A path given as None is left out.
    """
    routes: list[Route] = []
    for path, probe in (
        (live_path, LivenessProbe()),
        (ready_path, ReadinessProbe(target, timeout=timeout)),
    ):
        if path is None:
            continue
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(MSG_BAD_PATH.format(path=path))
        routes.append(Route(path, probe, methods=["GET", "HEAD"]))
    return routes
