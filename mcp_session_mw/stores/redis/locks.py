"""Named locks in Redis: ``SET NX PX`` to take one, a script to release it as its holder."""

from __future__ import annotations

from .connection import RedisBase
from .scripts import UNLOCK_SCRIPT
from .values import px


class RedisLocks(RedisBase):
    """The lock primitives: ``<prefix>lock:<name>`` holds the owner, the lease is its PEXPIRE."""

    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        """SET NX PX: Redis keeps the lease's time itself (``now`` is not needed)."""
        with self._guard:
            taken = await self.client.execute_command(
                "SET", f"{self._prefix}lock:{name}", owner, "NX", "PX", px(ttl)
            )
        return taken is not None

    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        with self._guard:
            deleted = await UNLOCK_SCRIPT(self.client, [f"{self._prefix}lock:{name}"], [owner])
        return bool(deleted)
