"""The Redis store: standalone, TLS, unix socket or Cluster, on ``redis.asyncio``.

This module joins the store's parts (records, index, locks, events;
see the package's ``__init__``) into :class:`RedisStore` and checks its options.

Layout. Every key of one session shares the hash tag ``{<digest>}``, so one
session lives in one hash slot and the same Lua scripts run on Redis Cluster::

    <prefix>{<digest>}                session hash (p payload, u principal, c a x t
                                      timestamps and ttl, v version, g expiry of
                                      the stream keys, q the streams noted for
                                      max_streams_per_session)
    <prefix>{<digest>}:streams        set of the session's stream ids
    <prefix>{<digest>}:st:<stream>    stream state hash (r o l f n z)
    <prefix>{<digest>}:ev:<stream>    Redis Stream of events, entry id ``0-<seq>``
    <prefix>{<digest>}:fz:<stream>    a finished short stream instead of the two keys
                                      above: state and events in one MessagePack
                                      string (see lua/helpers.lua, pack_finished)
    <prefix>{<digest>}:wake           Redis Stream poked when a stream is (re)opened,
                                      finished or deleted, or the session is deleted,
                                      so blocked readers wake
    <prefix>index                     sorted set: digest scored by expires_at
    <prefix>lock:<name>               a named lock: the holder, with the lease as PEXPIRE

Expiry is Redis's own: the session hash carries the session's PEXPIRE, which a
touch renews in one script, so an expired session disappears without a sweeper.
Its stream keys expire too, at most one ttl after it (see lua/helpers.lua),
and are invisible meanwhile; ``cleanup_expired`` removes them at once.

The index sorted set spans sessions, so on Cluster it lives in its own slot and
is updated by a separate command right after the session script; on standalone
Redis the same scripts update it atomically. In the Cluster window between the
two commands ``list_active`` may miss a session that was just created or
touched, and ``cleanup_expired`` repairs such index scores.

Updates are compare-and-swap on the ``v`` field in Lua (the base class retries),
so concurrent writers on any number of processes never lose each other's
changes. Blocking reads (XREAD BLOCK) for live follow run on a dedicated client
with its own connections, so followers never starve the command pool.

Needs Redis 6.2 or later (ZADD GT).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

from ...errors import ConfigurationError
from .events import RedisEventLog
from .index import RedisIndex
from .locks import RedisLocks
from .records import RedisRecords

DEFAULT_PREFIX = "mcp:"
BAD_PREFIX = "a Redis key prefix must be a string without '{' or '}'"
BAD_MAX_EVENTS = "max_events must be a positive integer or None"
NEED_CLIENT_OR_URL = "RedisStore needs exactly one of client= or url="


class RedisStore(RedisRecords, RedisIndex, RedisLocks, RedisEventLog):
    """Sessions and event streams in Redis; ``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://`` and ``rediss+cluster://`` select it.

    Build it with :meth:`from_url` (the store owns and closes its client) or pass a
    ``redis.asyncio.Redis`` / ``RedisCluster`` as ``client`` (the caller owns it and
    the store never closes it). ``prefix`` namespaces every key, so several
    applications or tests can share one database. ``max_events``, when set, is the
    default trim length of every event stream. ``blocking_client`` is the client for
    XREAD BLOCK; by default the store makes its own, except for a caller-owned
    Cluster client, which is then used for blocking reads too. Every command
    answers or raises StoreUnavailableError within ``socket_timeout`` (default
    :data:`~.connection.DEFAULT_SOCKET_TIMEOUT`), and none is re-sent after a
    lost reply (see :data:`~.connection.DEFAULT_RETRIES`).
    """

    schemes: ClassVar[tuple[str, ...]] = (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
    )
    records_streams_natively = True

    def __init__(
        self,
        client: Any = None,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        secret: str | bytes | None = None,
        max_events: int | None = None,
        blocking_client: Any = None,
        **client_options: Any,
    ) -> None:
        super().__init__(secret=secret)
        if (client is None) == (url is None):
            raise ConfigurationError(NEED_CLIENT_OR_URL)
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigurationError(BAD_PREFIX)
        if max_events is not None and (
            not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 1
        ):
            raise ConfigurationError(BAD_MAX_EVENTS)
        self._set_up(client, url, prefix, blocking_client, client_options)
        self._max_events = max_events

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        secret: str | bytes | None = None,
        client: Any = None,
        max_events: int | None = None,
        **client_options: Any,
    ) -> RedisStore:
        """The store a URL names; ``client_options`` go to redis-py's ``from_url``.

        With ``client`` the URL only has to name a Redis scheme and the given
        client (owned by the caller) is used instead of a new one.
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme not in cls.schemes:
            raise ConfigurationError(f"not a Redis URL: {scheme!r} is not one of {cls.schemes}")
        if client is not None:
            return cls(client, prefix=prefix, secret=secret, max_events=max_events)
        return cls(
            url=url,
            prefix=prefix,
            secret=secret,
            max_events=max_events,
            **client_options,
        )
