"""The Redis store (:class:`RedisStore`), one module a job.

- ``store``: :class:`RedisStore`, joining the parts below, and its options.
- ``connection``: the clients, the lane, key names and error mapping the parts share.
- ``records``: session records (create, read, replace, compare-and-swap, touch, delete).
- ``index``: the index of live sessions: listing, cleanup, purging a prefix.
- ``locks``: named locks.
- ``events``: the event log: stream states, events, wake-ups, the live wait.
- ``values``: how values are written to Redis and read back.
- ``scripts``: the Lua scripts (``lua/*.lua``), read once at import, run by EVALSHA.
- ``lane``: plain connections for the commands every request makes.
- ``resp``: RESP2, the wire format the lane writes and parses.
"""

from __future__ import annotations

from .connection import (
    DEFAULT_RETRIES,
    FAILED_MESSAGE,
    UNAVAILABLE_MESSAGE,
    WAKE_AFTER_DELETE_MS,
)
from .events import BLOCK_SLICE, SESSION_NOT_FOUND, STREAM_NOT_FOUND
from .index import BAD_CURSOR
from .lane import CONNECT_TIMEOUT, MAX_IDLE, READ_SIZE, WireLane
from .records import SESSION_EXISTS
from .resp import (
    encode_args,
    encode_command,
    evalsha_command,
    parse_reply,
    response_error,
    script_head,
)
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
    "CONNECT_TIMEOUT",
    "DEFAULT_PREFIX",
    "DEFAULT_RETRIES",
    "FAILED_MESSAGE",
    "MAX_IDLE",
    "NEED_CLIENT_OR_URL",
    "READ_SIZE",
    "SESSION_EXISTS",
    "SESSION_NOT_FOUND",
    "STREAM_NOT_FOUND",
    "UNAVAILABLE_MESSAGE",
    "WAKE_AFTER_DELETE_MS",
    "RedisStore",
    "WireLane",
    "encode_args",
    "encode_command",
    "evalsha_command",
    "parse_reply",
    "response_error",
    "script_head",
]
