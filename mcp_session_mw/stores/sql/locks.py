"""Named locks (``try_lock``) as rows of the streams table, under a digest no session has.

A stream row already is a lease (``owner``, ``lease_expires``), so locks need
no table of their own and no schema change. A lock's row sits under the digest
of ``lock <name>``, which no session id hashes to (ids have no space), under
stream id ``lock``; with no session row above it, no stream or session
operation ever sees it. Taking a lock is one write transaction: take over the
row if its lease ran out, else insert it; a concurrent insert of the same row
fails on the primary key, so exactly one of two racing processes gets the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING

from .database import Database
from .failures import LockTaken

with contextlib.suppress(ImportError):  # engine.require_sqlalchemy names the extra
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

LOCK_STREAM_ID = "lock"
"""Stream id of a named lock's row."""


def lock_key(name: str) -> str:
    """The row's digest; not keyed by ``secret``, so stores with other secrets agree."""
    return hashlib.sha256(f"lock {name}".encode()).hexdigest()


class LockRows:
    """Take and release named locks of one store's prefix."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _mine(self, name: str) -> sa.ColumnElement[bool]:
        streams = self._db.t.streams
        return sa.and_(
            streams.c.session_key == lock_key(name), streams.c.stream_id == LOCK_STREAM_ID
        )

    async def try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        streams = self._db.t.streams
        mine = self._mine(name)

        async def take(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.update(streams)
                .where(mine, streams.c.lease_expires <= now)
                .values(owner=owner, lease_expires=now + ttl)
            )
            if result.rowcount == 1:
                return True
            if await conn.scalar(sa.select(streams.c.owner).where(mine)) is not None:
                return False  # a running lease
            try:
                await conn.execute(
                    sa.insert(streams).values(
                        session_key=lock_key(name),
                        stream_id=LOCK_STREAM_ID,
                        request_id=None,
                        owner=owner,
                        lease_expires=now + ttl,
                        first_seq=0,
                        last_seq=0,
                        done=False,
                    )
                )
            except sa_exc.IntegrityError as exc:
                raise LockTaken from exc
            return True

        try:
            return await self._db.write(take)
        except LockTaken:
            return False

    async def unlock(self, name: str, owner: str, now: float) -> bool:
        streams = self._db.t.streams
        mine = self._mine(name)

        async def release(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                sa.delete(streams).where(
                    mine, streams.c.owner == owner, streams.c.lease_expires > now
                )
            )
            return result.rowcount == 1

        return await self._db.write(release)
