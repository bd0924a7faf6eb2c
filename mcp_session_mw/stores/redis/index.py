"""The index of live sessions (a sorted set by expiry): listing, cleanup, purging a prefix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...errors import StoreError
from ...records import Page, SessionRecord
from .connection import RedisBase
from .scripts import PAGE_RECORDS_SCRIPT, PAGE_SCRIPT, PRUNE_SCRIPT, PURGE_EXPIRED_SCRIPT
from .values import RECORD_FIELDS, num, parse_record, text

BAD_CURSOR = "not a cursor this store returned"
_SCAN_BATCH = 1000
_CLEANUP_BATCH = 500


class RedisIndex(RedisBase):
    """Listing and cleanup through the index; :meth:`purge` for a whole namespace."""

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        """Pages in index order (expires_at, then digest) from the first unexpired entry.

        A session touched while someone pages moves towards the end and may be
        listed twice; a session is skipped only if its expiry moves backwards.
        """
        if cursor is None:
            after_score, after_member = "", ""
        else:
            after_score, sep, after_member = cursor.partition(":")
            if not sep or not after_member:
                raise StoreError(BAD_CURSOR)
            try:
                float(after_score)
            except ValueError:
                raise StoreError(BAD_CURSOR) from None
        records: list[SessionRecord] = []
        with self._guard:
            while True:
                want = limit - len(records)
                entries = await self._page(now, after_score, after_member, want + 1)
                for member, score, values in entries[:want]:
                    record = parse_record(member, values, now)
                    if record is not None:
                        records.append(record)
                    after_score, after_member = score, member
                if len(entries) <= want:
                    return Page(records, None)
                if len(records) == limit:
                    return Page(records, f"{after_score}:{after_member}")

    async def _page(
        self, now: float, after_score: str, after_member: str, count: int
    ) -> list[tuple[str, str, Sequence[Any]]]:
        """Up to ``count`` index entries after the cursor: (member, score, record fields)."""
        args = [num(now), after_score, after_member, count]
        if not self._cluster:
            args.append(self._prefix)
            document = await PAGE_RECORDS_SCRIPT(self.client, [self._index], args)
            return [
                (row[0], row[1], [None if v is False else v for v in row[2:]])
                for row in json.loads(document)
            ]
        flat = await PAGE_SCRIPT(self.client, [self._index], args)
        entries = [(text(flat[i]), text(flat[i + 1])) for i in range(0, len(flat), 2)]
        if not entries:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for member, _score in entries:
                pipe.execute_command("HMGET", self._base(member), *RECORD_FIELDS)
            rows = await pipe.execute()
        return [(m, sc, values) for (m, sc), values in zip(entries, rows, strict=True)]

    async def _cleanup(self, now: float) -> int:
        removed = 0
        with self._guard:
            while True:
                raw = await self.client.execute_command(
                    "ZRANGE", self._index, "-inf", num(now), "BYSCORE", "LIMIT", 0, _CLEANUP_BATCH
                )
                members = [text(m) for m in raw]
                if not members:
                    return removed
                async with self.client.pipeline(transaction=False) as pipe:
                    for member in members:
                        pipe.execute_command("HGET", self._base(member), "x")
                    expiries = await pipe.execute()
                for member, expires in zip(members, expiries, strict=True):
                    if expires is not None and float(expires) > now:
                        # The index lagged behind a touch (Cluster window): repair it.
                        await self.client.execute_command(
                            "ZADD", self._index, "GT", text(expires), member
                        )
                    else:
                        # Gone or expired: its stream keys may still linger (up to a ttl).
                        await PURGE_EXPIRED_SCRIPT(self.client, [self._base(member)], [num(now)])
                removed += int(await PRUNE_SCRIPT(self.client, [self._index], [num(now), *members]))

    async def purge(self) -> int:
        """Delete every key under this store's prefix (SCAN, never KEYS); returns how many.

        For tests and for tearing down a namespace, not for production traffic.
        """
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self._prefix) + "*"
        deleted = 0
        with self._guard:
            batch: list[Any] = []
            async for name in self.client.scan_iter(match=pattern, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    deleted += await self._unlink(batch)
                    batch = []
            if batch:
                deleted += await self._unlink(batch)
        return deleted

    async def _unlink(self, names: list[Any]) -> int:
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.execute_command("UNLINK", name)
            results = await pipe.execute()
        return sum(int(r) for r in results)
