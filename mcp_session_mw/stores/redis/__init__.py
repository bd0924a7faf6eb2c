"""The Redis store (:class:`RedisStore`), one module a job.

- ``store``: :class:`RedisStore`, joining the parts below, and its options.
- ``connection``: the clients, timeouts, key names and error mapping the parts share.
- ``records``: session records (create, read, replace, compare-and-swap, touch, delete).
- ``index``: the index of live sessions: listing, cleanup, purging a prefix.
- ``locks``: named locks.
- ``events``: the event log: stream states, events, wake-ups, the live wait.
- ``values``: how values are written to Redis and read back.
- ``scripts``: the Lua scripts (``lua/*.lua``), read once at import, run by EVALSHA.
"""

from __future__ import annotations

from .connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_SOCKET_TIMEOUT,
    FAILED_MESSAGE,
    NOT_SERVING,
    UNAVAILABLE_MESSAGE,
    WAKE_AFTER_DELETE_MS,
)
from .events import BLOCK_SLICE, SESSION_NOT_FOUND, STREAM_NOT_FOUND
from .index import BAD_CURSOR
from .records import SESSION_EXISTS
from .store import (
    BAD_MAX_EVENTS,
    BAD_PREFIX,
    DEFAULT_PREFIX,
    NEED_CLIENT_OR_URL,
    RedisStore,
)

__all__ = [
    "BAD_CURSOR",
    "BAD_MAX_EVENTS",
    "BAD_PREFIX",
    "BLOCK_SLICE",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_PREFIX",
    "DEFAULT_RETRIES",
    "DEFAULT_SOCKET_TIMEOUT",
    "FAILED_MESSAGE",
    "NEED_CLIENT_OR_URL",
    "NOT_SERVING",
    "SESSION_EXISTS",
    "SESSION_NOT_FOUND",
    "STREAM_NOT_FOUND",
    "UNAVAILABLE_MESSAGE",
    "WAKE_AFTER_DELETE_MS",
    "RedisStore",
]
