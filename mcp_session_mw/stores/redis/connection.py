"""What every part of the Redis store shares: the clients, key names, error mapping.

:class:`RedisBase` is the base of the store's parts (records, index, locks,
events); :class:`~.store.RedisStore` joins them and calls
:meth:`RedisBase._set_up` from its constructor.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ...errors import (
    MissingExtraError,
    SessionMiddlewareError,
    StoreError,
    StoreUnavailableError,
)
from ..base import Store

UNAVAILABLE_MESSAGE = "Redis is unreachable"
FAILED_MESSAGE = "Redis command failed"
WAKE_AFTER_DELETE_MS = 10_000
"""How long the wake stream outlives a deleted session (long enough for blocked readers)."""
DEFAULT_SOCKET_TIMEOUT = 5.0
"""Seconds a command waits for its reply before the store raises StoreUnavailableError."""
DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection (TCP, TLS, AUTH) before the store raises StoreUnavailableError."""
DEFAULT_RETRIES = 0
"""Commands re-sent after a connection error or timeout: none.

A reply lost on the way does not say whether the command ran, and the stream
write and the insert must not run twice, so a lost reply is reported as
StoreUnavailableError (503, ``Retry-After``) and the client retries the request.
A connection the server closed while idle is replaced before use by redis-py's
pool, so an idle restart of Redis costs no failed request.
"""
NOT_SERVING = frozenset(("LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN"))
"""Error codes of a server that is up but not serving now: StoreUnavailableError."""


def import_redis() -> Any:
    """``redis.asyncio``, or MissingExtraError naming the ``redis`` extra."""
    try:
        import redis.asyncio as redis_asyncio
    except ImportError as exc:
        raise MissingExtraError("redis", "redis") from exc
    return redis_asyncio


def cluster_url(url: str) -> str:
    """``redis+cluster://`` → ``redis://`` (and the TLS form) for redis-py's parser."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower().removesuffix("+cluster")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


class Guard:
    """``with guard:`` re-raises driver errors as the project's own, chained.

    A plain class rather than a generator context manager: it wraps every command.
    """

    __slots__ = ("_driver", "_refused", "_unavailable")

    def __init__(
        self,
        unavailable: tuple[type[BaseException], ...],
        driver: tuple[type[BaseException], ...],
        refused: type[BaseException],
    ) -> None:
        self._unavailable = unavailable
        self._driver = driver
        self._refused = refused

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, SessionMiddlewareError):
            return
        if isinstance(exc, self._unavailable) or (
            isinstance(exc, self._refused) and not_serving(exc)
        ):
            raise StoreUnavailableError(f"{UNAVAILABLE_MESSAGE}: {exc}") from exc
        if isinstance(exc, self._driver):
            raise StoreError(f"{FAILED_MESSAGE}: {exc}") from exc


def not_serving(exc: BaseException) -> bool:
    """Whether a Redis error reply says "not serving now" (see :data:`NOT_SERVING`)."""
    code = getattr(exc, "status_code", None) or str(exc).partition(" ")[0]
    return code in NOT_SERVING


class RedisBase(Store):
    """The clients and key names of a Redis store; its parts build on this."""

    _redis: Any
    _guard: Guard
    _url: str | None
    _client_options: dict[str, Any]
    _owns_client: bool
    _client: Any
    _blocking: Any
    _owns_blocking: bool
    _prefix: str
    _index: str
    _max_events: int | None
    _cluster: bool

    def _set_up(
        self,
        client: Any,
        url: str | None,
        prefix: str,
        blocking_client: Any,
        client_options: dict[str, Any],
    ) -> None:
        """The clients (made on first use) and the key names."""
        self._redis = import_redis()
        from redis import exceptions as redis_exceptions

        self._unavailable_errors: tuple[type[BaseException], ...] = (
            redis_exceptions.ConnectionError,
            redis_exceptions.TimeoutError,
            redis_exceptions.ClusterDownError,
            redis_exceptions.TryAgainError,
            redis_exceptions.SlotNotCoveredError,
            # No node answered the topology probe (named so only in newer redis-py).
            getattr(redis_exceptions, "RedisClusterUnreachableError", OSError),
            OSError,
            TimeoutError,
        )
        self._driver_errors: tuple[type[BaseException], ...] = (
            redis_exceptions.RedisError,
            redis_exceptions.RedisClusterException,
        )
        self._guard = Guard(
            self._unavailable_errors, self._driver_errors, redis_exceptions.ResponseError
        )
        self._url = url
        self._client_options = client_options
        self._owns_client = client is None
        self._client = client
        self._blocking = blocking_client
        self._owns_blocking = False
        self._prefix = prefix
        self._index = f"{prefix}index"
        if url is not None:
            self._cluster = urlsplit(url).scheme.lower().endswith("+cluster")
        else:
            from redis.asyncio.cluster import RedisCluster

            self._cluster = isinstance(client, RedisCluster)

    # -- connections -----------------------------------------------------------------

    def _build_client(self, url: str, **overrides: Any) -> Any:
        """A redis-py client for ``url``: the store's client options, then ``overrides``."""
        options = dict(self._client_options)
        if "retry" not in options:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            options["retry"] = Retry(NoBackoff(), DEFAULT_RETRIES)
        options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        options.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        options.update(overrides)
        if self._cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(cluster_url(url), **options)
        return self._redis.from_url(url, **options)

    @property
    def client(self) -> Any:
        """The redis-py client commands go through (created on first use)."""
        if self._client is None and self._url is not None:
            self._client = self._build_client(self._url)
        return self._client

    @property
    def _hot(self) -> Any:
        """What the scripts of sessions and streams go through: the redis-py client."""
        return self.client

    async def open(self) -> None:
        """Connect and check the server answers (StoreUnavailableError if not)."""
        with self._guard:
            await self.client.execute_command("PING")

    async def close(self) -> None:
        """Close the follower and the clients this store made; a caller's client is left open."""
        await self.follower.close()
        blocking, self._blocking = self._blocking, None
        if blocking is not None and self._owns_blocking:
            with contextlib.suppress(Exception):
                await blocking.aclose()
        self._owns_blocking = False
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- key names -------------------------------------------------------------------

    def _base(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    def _session_keys(self, key: str) -> list[str]:
        """KEYS for a session script: the session hash, plus the index when one script may
        span slots (standalone Redis)."""
        base = self._base(key)
        return [base] if self._cluster else [base, self._index]
