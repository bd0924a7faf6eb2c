"""A single-use guard shared by every replica: ``await once(token, ttl)``.

The first call for a token stores a marker with the store's create-if-absent
(one Lua script on Redis, an ``INSERT`` the primary key refuses on SQL, the
memory store's own check) and returns True; every later call, on any process on the same store,
returns False until ``ttl`` seconds have passed. The token itself is never
stored: the store keeps only the digest of the reserved id.
"""

from __future__ import annotations

import math

from ..errors import ConfigurationError, SessionExistsError
from ..stores.base import Store
from .reserved import reserved_id, reserved_record

MSG_BAD_TOKEN = "a single-use token is a non-empty string of at most 4096 characters"
MSG_BAD_TTL = "a single-use ttl is a positive finite number of seconds"
MAX_TOKEN = 4096


class SingleUseGuard:
    """``await once(token, ttl)`` → True the first time, False on any replay."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def __call__(self, token: str, ttl: float) -> bool:
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
            raise ConfigurationError(MSG_BAD_TOKEN)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise ConfigurationError(MSG_BAD_TTL)
        if not (math.isfinite(ttl) and ttl > 0):
            raise ConfigurationError(MSG_BAD_TTL)
        store = self._store
        record = reserved_record(store.now(), float(ttl), {})
        try:
            await store.create(reserved_id("once", token), record)
        except SessionExistsError:
            return False
        return True
