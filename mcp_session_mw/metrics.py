"""Prometheus metrics and OpenTelemetry spans, each optional and free when absent.

With the ``prometheus`` extra (``prometheus-client``) installed, the middleware
counts into the metrics below, registered once per process in
``prometheus_client``'s default registry (so an app that already exposes that
registry shows them too); :func:`metrics_app` is an ASGI endpoint serving them.
Without it every counter is a no-op object and the store is not wrapped.

With the ``otel`` extra (``opentelemetry-api``) installed and a tracer provider
configured by the application, every store call runs in a span
``mcp_session_mw.store.<operation>``. Without a configured provider no span is
started at all.

======================================  =========  ====================================
metric                                  type       labels
======================================  =========  ====================================
``mcp_session_sessions_created_total``  counter
``mcp_session_sessions_resumed_total``  counter    (re-created in the app by this process)
``mcp_session_sessions_expired_total``  counter    (removed by the cleanup sweep)
``mcp_session_sessions_deleted_total``  counter    (ended by the client's DELETE)
``mcp_session_active_sessions``         gauge      (live sessions in the store, cached)
``mcp_session_events_stored_total``     counter
``mcp_session_events_replayed_total``   counter    (sent to a client resuming a stream)
``mcp_session_replay_gaps_total``       counter    (resumes older than the kept events)
``mcp_session_rejected_requests_total`` counter    ``reason``, ``status``
``mcp_session_store_seconds``           histogram  ``operation``
======================================  =========  ====================================

Cheap on the hot path: label values come from fixed sets (a store operation
name, a reason per refusal message, an HTTP status), each store operation's
histogram child is looked up once when the store is wrapped, and a counter
increment allocates nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from itertools import accumulate
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import anyio

from .errors import MissingExtraError, StoreError
from .limits import count_sessions
from .logs import log_failure

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .stores.base import Store

logger = logging.getLogger("mcp_session_mw")

try:
    import prometheus_client as _prometheus
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _prometheus = None  # type: ignore[assignment]

try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _otel_trace = None  # type: ignore[assignment]

NAMESPACE = "mcp_session"
ACTIVE_SESSIONS_MAX_AGE = 15.0
"""Seconds a count of the store's live sessions is served before a scrape recounts
(a count is a scan of the store)."""
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STORE_OPERATIONS = (
    "create",
    "load",
    "load_by_key",
    "save",
    "update",
    "update_meta",
    "touch",
    "delete",
    "delete_by_key",
    "list_active",
    "cleanup_expired",
    "try_lock",
    "unlock",
    "open_stream",
    "load_stream",
    "renew_stream",
    "finish_stream",
    "append_event",
    "append_events",
    "write_stream",
    "delete_stream",
    "delete_streams",
    "record_streams",
    "read_events",
)
"""The store methods timed. ``wait_events`` is not: it blocks until an event
comes, so its duration measures the client's stream, not the store."""
SPAN_PREFIX = "mcp_session_mw.store."
REASON_OTHER = "other"


class _Noop:
    """Stands in for every metric when prometheus-client is not installed."""

    def labels(self, *values: str) -> _Noop:
        return self

    def inc(self, amount: float = 1.0) -> None:
        pass

    def dec(self, amount: float = 1.0) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


_NOOP = _Noop()


class _StoreSeconds:
    """The ``store_seconds`` histogram, counted in plain lists and read when scraped.

    Every request makes two or three store calls; prometheus-client's
    ``Histogram`` takes a lock and makes four calls per observation, this one
    bisects and adds. Store calls run on the event loop's thread, which is
    what makes the unlocked additions safe.
    """

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, list[float]] = {}

    def labels(self, operation: str) -> SimpleNamespace:
        """An object whose ``observe(seconds)`` counts one call of ``operation``."""
        counts = self._counts.setdefault(operation, [0] * (len(STORE_BUCKETS) + 1))
        total = self._sums.setdefault(operation, [0.0])
        bounds = STORE_BUCKETS

        def observe(seconds: float) -> None:
            counts[bisect_left(bounds, seconds)] += 1
            total[0] += seconds

        return SimpleNamespace(observe=observe)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(
            f"{NAMESPACE}_store_seconds", "Duration of store calls.", labels=["operation"]
        )
        for operation, counts in list(self._counts.items()):
            cumulative = list(accumulate(counts))
            buckets = [
                (repr(bound), count)  # as prometheus-client writes them: 0.001, 1.0
                for bound, count in zip(STORE_BUCKETS, cumulative, strict=False)
            ]
            buckets.append(("+Inf", cumulative[-1]))
            family.add_metric([operation], buckets, self._sums[operation][0])
        yield family


class _PlainCounter:
    """A counter kept in a plain list and read when scraped, for one added to per request.

    prometheus-client's ``Counter`` takes a lock on every ``inc``. Like
    :class:`_StoreSeconds`, this is only added to on the event loop's thread.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self._name = f"{NAMESPACE}_{name}"
        self._documentation = documentation
        self._value = [0.0]

    def inc(self, amount: float = 1) -> None:
        self._value[0] += amount

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(self._name, self._documentation, value=self._value[0])


if _prometheus is not None:
    SESSIONS_CREATED: Any = _prometheus.Counter(
        "sessions_created", "Sessions created (initialize answered).", namespace=NAMESPACE
    )
    SESSIONS_RESUMED: Any = _prometheus.Counter(
        "sessions_resumed",
        "Sessions re-created in the app by this process (after a restart, or another "
        "instance created them).",
        namespace=NAMESPACE,
    )
    SESSIONS_EXPIRED: Any = _prometheus.Counter(
        "sessions_expired", "Expired sessions removed by the cleanup sweep.", namespace=NAMESPACE
    )
    SESSIONS_DELETED: Any = _prometheus.Counter(
        "sessions_deleted", "Sessions ended by the client (DELETE).", namespace=NAMESPACE
    )
    ACTIVE_SESSIONS: Any = _prometheus.Gauge(
        "active_sessions",
        f"Live sessions in the store, counted at most every {ACTIVE_SESSIONS_MAX_AGE:.0f} s "
        "when metrics_app() is scraped.",
        namespace=NAMESPACE,
    )
    EVENTS_STORED: Any = _PlainCounter("events_stored", "SSE events written to the store.")
    _prometheus.REGISTRY.register(EVENTS_STORED)
    EVENTS_REPLAYED: Any = _prometheus.Counter(
        "events_replayed",
        "Stored SSE events sent to clients resuming a stream.",
        namespace=NAMESPACE,
    )
    REPLAY_GAPS: Any = _prometheus.Counter(
        "replay_gaps",
        "Resumes from a position older than the events still kept (answered with an error).",
        namespace=NAMESPACE,
    )
    REJECTED_REQUESTS: Any = _prometheus.Counter(
        "rejected_requests",
        "Requests the middleware answered with an error itself.",
        ["reason", "status"],
        namespace=NAMESPACE,
    )
    STREAMS_OPEN: Any = _prometheus.Gauge(
        "streams_open",
        "Client SSE streams this process is serving from the store now (GET streams and "
        "resumes by Last-Event-ID).",
        namespace=NAMESPACE,
    )
    RELAYED_REPLIES: Any = _prometheus.Counter(
        "relayed_replies",
        "Client replies to server requests (elicitation, sampling, roots) that reached this "
        "process and were handed to the instance holding the request.",
        namespace=NAMESPACE,
    )
    STORE_SECONDS: Any = _StoreSeconds()
    _prometheus.REGISTRY.register(STORE_SECONDS)
else:  # pragma: no cover - exercised in a subprocess by the tests
    SESSIONS_CREATED = SESSIONS_RESUMED = SESSIONS_EXPIRED = SESSIONS_DELETED = _NOOP
    ACTIVE_SESSIONS = EVENTS_STORED = EVENTS_REPLAYED = REPLAY_GAPS = _NOOP
    REJECTED_REQUESTS = STORE_SECONDS = STREAMS_OPEN = RELAYED_REPLIES = _NOOP


def enabled() -> bool:
    """True when prometheus-client is installed (metrics are recorded)."""
    return _prometheus is not None


# -- counters the middleware calls --------------------------------------------------


def sessions_expired(count: int) -> None:
    if count:
        SESSIONS_EXPIRED.inc(count)


def rejected(reason: str, status: int) -> None:
    """Count a refusal; ``reason`` is one of a fixed set (see ``jsonrpc.REASONS``)."""
    REJECTED_REQUESTS.labels(reason, _STATUS_TEXT.get(status) or str(status)).inc()


_STATUS_TEXT = {status: str(status) for status in range(400, 600)}


# -- the store: timing and spans ------------------------------------------------------

_INSTRUMENTED = "_mcp_session_mw_instrumented"
_tracer: Any = None if _otel_trace is None else _otel_trace.get_tracer("mcp_session_mw")


_NO_SPAN = contextlib.nullcontext()
TRACING_RECHECK_SECONDS = 1.0
"""Until the application configures a tracer provider, it is looked for at most this often."""
_tracing_found = False
_tracing_checked_at = -math.inf


def _tracing() -> bool:
    """True once the application configured an OpenTelemetry tracer provider.

    The provider is set once per process; until it is, asking for it (an
    environment lookup and a few calls) is repeated at most once a second,
    not on every store call.
    """
    global _tracing_found, _tracing_checked_at
    if _tracing_found or _otel_trace is None:
        return _tracing_found
    now = time.monotonic()
    if now - _tracing_checked_at < TRACING_RECHECK_SECONDS:
        return False
    _tracing_checked_at = now
    _tracing_found = not isinstance(
        _otel_trace.get_tracer_provider(),
        _otel_trace.ProxyTracerProvider | _otel_trace.NoOpTracerProvider,
    )
    return _tracing_found


def instrument(store: Store) -> Store:
    """Time ``store``'s calls and trace them, in place; returns the same object.

    The public methods of this one object are replaced by wrappers (instance
    attributes), so its identity and type stay what the application gave, and
    code holding the store (sessions, streams) is timed too. Idempotent; a
    no-op when neither prometheus-client nor opentelemetry-api is installed.
    """
    if (_prometheus is None and _otel_trace is None) or store.__dict__.get(_INSTRUMENTED):
        return store
    kind = type(store).__name__
    for operation in STORE_OPERATIONS:
        method = getattr(store, operation, None)
        if method is not None:
            setattr(store, operation, _timed(operation, method, kind))
    setattr(store, _INSTRUMENTED, True)
    return store


def _timed(operation: str, method: Callable[..., Awaitable[Any]], kind: str) -> Any:
    observe = STORE_SECONDS.labels(operation).observe
    span_name = SPAN_PREFIX + operation
    attributes = {"mcp_session_mw.store": kind, "db.operation.name": operation}
    count_events = operation in ("append_event", "append_events", "write_stream")

    async def timed(*args: Any, **kwargs: Any) -> Any:
        span = (
            _tracer.start_as_current_span(span_name, attributes=attributes)
            if _tracing()
            else _NO_SPAN
        )
        with span:
            start = time.perf_counter()
            try:
                result = await method(*args, **kwargs)
            finally:
                observe(time.perf_counter() - start)
            if count_events:
                EVENTS_STORED.inc(len(result) if isinstance(result, list) else 1)
            return result

    timed.__name__ = operation
    timed.__doc__ = method.__doc__
    return timed


# -- live sessions, counted when scraped ------------------------------------------------

_watched: weakref.WeakSet[Store] = weakref.WeakSet()
_counted_at = -math.inf
_count_lock: anyio.Lock | None = None


def watch(store: Store) -> None:
    """Count ``store``'s live sessions into the active-sessions gauge (while it is open)."""
    global _counted_at
    _watched.add(store)
    _counted_at = -math.inf


def unwatch(store: Store) -> None:
    _watched.discard(store)


async def refresh_active_sessions(max_age: float = ACTIVE_SESSIONS_MAX_AGE) -> None:
    """Recount the watched stores' live sessions if the last count is older than ``max_age``.

    Each distinct store object is counted once and the counts are added: with
    several middlewares over one backend in a process, give them one store.
    A store that fails keeps the previous value (and is logged).
    """
    global _counted_at, _count_lock
    if _prometheus is None or time.monotonic() - _counted_at < max_age:
        return
    if _count_lock is None:
        _count_lock = anyio.Lock()
    async with _count_lock:
        if time.monotonic() - _counted_at < max_age:
            return
        total = 0
        try:
            for store in list(_watched):
                total += await count_sessions(store)
        except StoreError:
            log_failure(logger, "could not count the live sessions for metrics")
            return
        ACTIVE_SESSIONS.set(total)
        _counted_at = time.monotonic()


# -- the endpoint ----------------------------------------------------------------------


def metrics_app(registry: Any = None) -> ASGIApp:
    """An ASGI app serving the metrics in the Prometheus text format (or OpenMetrics).

    Mount it where your scraper looks, e.g. ``api.mount("/metrics", metrics_app())``
    or ``Mount("/metrics", app=metrics_app())``; it answers GET and HEAD on any
    path and speaks the ASGI lifespan protocol, so it can also be served alone.
    ``registry`` defaults to prometheus-client's global registry. Each scrape
    recounts the store's live sessions if the last count is older than
    :data:`ACTIVE_SESSIONS_MAX_AGE`. Raises MissingExtraError without the
    ``prometheus`` extra.
    """
    if _prometheus is None:
        raise MissingExtraError("prometheus", "prometheus_client")
    from prometheus_client.exposition import choose_encoder
    from starlette.datastructures import Headers

    source = _prometheus.REGISTRY if registry is None else registry

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await refresh_active_sessions()
        encoder, content_type = choose_encoder(Headers(scope=scope).get("accept") or "")
        body = encoder(source)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    return app


__all__ = [
    "ACTIVE_SESSIONS_MAX_AGE",
    "enabled",
    "instrument",
    "metrics_app",
    "refresh_active_sessions",
]
