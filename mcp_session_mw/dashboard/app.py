"""The dashboard's routes: the overview and one session's page, GET only, behind the guard.

It reads the store beneath any wrapper (the raw backend behind an encrypting
or caching store), so a sealed payload is shown as "(encrypted)", never
decrypted, and a dashboard view never fills the cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import ConfigurationError, StoreError
from ..health import check_store
from ..stores.base import Store, is_key
from ..stores.delegating import DelegatingStore
from . import pages

if TYPE_CHECKING:
    from ..middleware import SessionMiddleware

Guard = Callable[[Request], "bool | Awaitable[bool]"]
"""Decides whether a request may see the dashboard: True to serve it."""

DEFAULT_PAGE_SIZE = 50
DEFAULT_RECENT_EVENTS = 20
COUNT_LIMIT = 10_000
"""Live sessions counted for the overview before it says "10000+"."""
HEALTH_TIMEOUT = 2.0

MSG_NO_GUARD = (
    "dashboard_app needs guard=, a function of the request that returns True for "
    "operators: the dashboard shows every live session and is never served unguarded"
)
MSG_FORBIDDEN = "forbidden"
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _raw(store: Store) -> Store:
    while isinstance(store, DelegatingStore):
        store = store.backend
    return store


def dashboard_app(
    target: SessionMiddleware | Store,
    *,
    guard: Guard | None,
    page_size: int = DEFAULT_PAGE_SIZE,
    recent_events: int = DEFAULT_RECENT_EVENTS,
) -> Starlette:
    """The dashboard of ``target``'s store, as a Starlette app to mount where you like.

    ``guard`` is required: a function (sync or async) of the
    :class:`~starlette.requests.Request` returning True when the request may
    see the dashboard; anything else answers 403. Without one this raises
    :class:`ConfigurationError`, so it is never public by accident. The app is
    read-only (GET and HEAD); ``target`` is the middleware (its store) or a
    store the caller opened. ``recent_events`` is how many of each stream's
    newest events a session's page shows.
    """
    if guard is None or not callable(guard):
        raise ConfigurationError(MSG_NO_GUARD)
    for name, value in (("page_size", page_size), ("recent_events", recent_events)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be a positive integer")
    store = target if isinstance(target, Store) else target.store
    opener = None if isinstance(target, Store) else target.open_store
    raw = _raw(store)

    async def allowed(request: Request) -> bool:
        verdict = guard(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict is True

    async def overview(request: Request) -> Response:
        if not await allowed(request):
            return PlainTextResponse(MSG_FORBIDDEN, 403, headers=HEADERS)
        readiness = await check_store(raw, timeout=HEALTH_TIMEOUT, opener=opener)
        if not readiness.ready:
            health = pages.Health(False, str(readiness.reason), type(raw).__name__, None)
            return _html(pages.overview(health, [], None, raw.now()), 503)
        cursor = request.query_params.get("cursor")
        try:
            with anyio.fail_after(HEALTH_TIMEOUT * 5):
                listed = await raw.list_active(limit=page_size, cursor=cursor or None)
                rows = []
                for record in listed.records:
                    streams = await raw.list_streams_by_key(record.key)
                    events = sum(s.last_seq - s.first_seq + 1 for s in streams if s.last_seq)
                    rows.append(pages.Row(record, len(streams), events))
                count = await _count(raw)
        except (StoreError, TimeoutError) as exc:
            reason = "the store failed while listing" if isinstance(exc, StoreError) else "timeout"
            health = pages.Health(False, reason, type(raw).__name__, None)
            return _html(pages.overview(health, [], None, raw.now()), 503)
        latency = readiness.latency or 0.0
        health = pages.Health(True, f"ok, {latency * 1000:.1f} ms", type(raw).__name__, count)
        return _html(pages.overview(health, rows, listed.next_cursor, raw.now()))

    async def session(request: Request) -> Response:
        if not await allowed(request):
            return PlainTextResponse(MSG_FORBIDDEN, 403, headers=HEADERS)
        key = request.path_params["key"]
        record = await raw.load_by_key(key) if is_key(key) else None
        if record is None:
            return _html(pages.not_found(), 404)
        streams = []
        for state in sorted(await raw.list_streams_by_key(key), key=lambda s: s.stream_id):
            after = max(0, state.last_seq - recent_events)
            events = await raw.read_events_by_key(key, state.stream_id, after, recent_events)
            streams.append((state, events))
        return _html(pages.session_page(record, streams, raw.now()))

    return Starlette(
        routes=[
            Route("/", overview, methods=["GET", "HEAD"]),
            Route("/session/{key}", session, methods=["GET", "HEAD"]),
        ]
    )


async def _count(store: Store) -> int:
    total, cursor = 0, None
    while total < COUNT_LIMIT:
        page = await store.list_active(limit=1000, cursor=cursor)
        total += len(page.records)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return total


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers=HEADERS)
