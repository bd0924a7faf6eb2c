"""Session records in Redis: create, read, replace, compare-and-swap, touch, delete.

Each record is the session hash ``<prefix>{<digest>}``; on standalone Redis the
scripts keep the index in step, on Cluster a ZADD/ZREM right after does.
"""

from __future__ import annotations

from ...errors import SessionExistsError
from ...records import SessionRecord
from .connection import WAKE_AFTER_DELETE_MS, RedisBase
from .scripts import (
    CAS_SCRIPT,
    DELETE_SCRIPT,
    INSERT_SCRIPT,
    LOAD_TOUCH_SCRIPT,
    PUT_SCRIPT,
    TOUCH_SCRIPT,
)
from .values import RECORD_FIELDS, num, parse_record, px, record_values, unpack_record

SESSION_EXISTS = "session already exists"


class RedisRecords(RedisBase):
    """The record primitives of the store contract."""

    def _insert_args(self, record: SessionRecord, now: float) -> list[str]:
        return [
            num(now),
            str(px(record.expires_at - now)),
            record.key,
            num(record.expires_at),
            *record_values(record),
        ]

    async def _insert(self, record: SessionRecord) -> None:
        now = self.now()
        with self._guard:
            created = await INSERT_SCRIPT(
                self._hot, self._session_keys(record.key), self._insert_args(record, now)
            )
            if not created:
                raise SessionExistsError(SESSION_EXISTS)
            if self._cluster:
                await self.client.execute_command(
                    "ZADD", self._index, num(record.expires_at), record.key
                )

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        # One HMGET, not a script: a read needs no atomicity beyond one command,
        # and a script call costs the server several times the read itself.
        with self._guard:
            values = await self._hot.execute_command("HMGET", self._base(key), *RECORD_FIELDS)
        return parse_record(key, values, now)

    async def load(
        self, session_id: str, *, touch: bool = False, ttl: float | None = None
    ) -> SessionRecord | None:
        """The session, or None when it is unknown or expired.

        With ``touch=True`` the session's expiry also slides, exactly as
        :meth:`touch` (with ``ttl``) would, in the same round trip, and the
        touched record is returned: the fast path for a request that loads and
        touches its session. (Redis-only for now; other stores: load, then touch.)
        """
        if not touch:
            return await super().load(session_id)
        key = self.key(session_id)
        args = (num(self.now()),) if ttl is None else (num(self.now()), num(ttl))
        with self._guard:
            packed = await LOAD_TOUCH_SCRIPT(self._hot, self._session_keys(key), args)
            if packed is None:
                return None
            record = unpack_record(key, packed)
            if self._cluster:
                await self.client.execute_command(
                    "ZADD", self._index, "XX", num(record.expires_at), key
                )
        return record

    async def _put(self, record: SessionRecord) -> None:
        now = self.now()
        with self._guard:
            await PUT_SCRIPT(
                self._hot, self._session_keys(record.key), self._insert_args(record, now)
            )
            if self._cluster:
                await self.client.execute_command(
                    "ZADD", self._index, num(record.expires_at), record.key
                )

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        args = [
            num(self.now()),
            str(expected_version),
            record.payload(),
            str(record.version),
            "0" if record.principal is None else "1",
            record.principal or "",
        ]
        with self._guard:
            result = await CAS_SCRIPT(self._hot, [self._base(record.key)], args)
        return int(result) == 1

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        args = (num(now),) if ttl is None else (num(now), num(ttl))
        with self._guard:
            expires = await TOUCH_SCRIPT(self._hot, self._session_keys(key), args)
            if expires is None:
                return False
            if self._cluster:
                await self.client.execute_command("ZADD", self._index, "XX", expires, key)
        return True

    async def _delete(self, key: str) -> bool:
        args = [num(self.now()), key, str(WAKE_AFTER_DELETE_MS)]
        with self._guard:
            existed = await DELETE_SCRIPT(self.client, self._session_keys(key), args)
            if self._cluster:
                await self.client.execute_command("ZREM", self._index, key)
        return int(existed) == 1
