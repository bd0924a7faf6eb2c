"""The DynamoDB store's event log: streams, event chunks, and the one transaction that writes them.

Every change to a stream (open or take over, append, finish, renew the lease)
is one path: read the session and the stream's state in one BatchGetItem,
then one TransactWriteItems that checks the session is still live (and its
``g`` unchanged, so a touch renewing the session's items cannot miss this
write), puts the new state on the condition that its seqs are still the ones
read (a compare-and-swap: concurrent appenders on any process get distinct,
consecutive seqs) and puts the new events as chunk items. Either all of it is
stored or none; a lost race reads again and retries. Opening a new stream
(most often a whole response in one call) skips the read in its first round:
it takes ``g`` from this process's last read of the session (the middleware
has just loaded it) and assumes the stream is new; the transaction's
conditions check both, and if either was wrong the round reads as usual.

Events trimmed by ``max_events`` are invisible at once (reads start at the
state's ``first_seq``); their chunks are deleted right after the write.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import anyio

from ...errors import ConflictError, SessionNotFoundError, StreamNotFoundError
from ...records import StoredEvent, StreamState
from ..base import stored_batch
from .client import Cancelled, Table, number, read_number, text
from .items import (
    NOTED,
    SEQ_DIGITS,
    SESSION,
    STREAM_SK_PREFIX,
    TTL_ATTRIBUTE,
    chunk_items,
    chunk_prefix,
    chunk_sk,
    events_of_chunk,
    item_key,
    state_from_item,
    state_item,
    stream_sk,
    whole_seconds,
)

SESSION_NOT_FOUND = "session not found"
STREAM_NOT_FOUND = "stream not found"
WRITE_RETRIES = 100
"""Rounds a stream write may lose its compare-and-swap before ConflictError."""

HORIZON_CACHE_SIZE = 256
"""Sessions whose ``g`` is kept: enough for the requests in flight, cleared when full."""

_LIVE = "#x > :now AND #g = :g"


POSITIONS_PER_BATCH = 50
"""Waited streams read per BatchGetItem (two keys each: BatchGetItem takes 100)."""


class EventLog:
    """The stream half of :class:`DynamoDBStore`, on its table and clock."""

    def __init__(self, table: Table, clock: Callable[[], float]) -> None:
        self._table = table
        self._clock = clock
        self._horizons: dict[str, dict[str, Any]] = {}
        """Session key -> its ``g`` when this process last read the session."""

    def remember(self, session: dict[str, Any]) -> None:
        """Note the ``g`` of a session item just read or written (a bounded cache)."""
        if "g" not in session or "k" not in session:
            return
        if len(self._horizons) >= HORIZON_CACHE_SIZE:
            self._horizons.clear()
        self._horizons[session["k"]["S"]] = session["g"]

    async def snapshot(
        self, key: str, stream_id: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The live session item (or None) and the stream's state item (or None)."""
        found = await self._table.batch_get(
            [item_key(key, SESSION), item_key(key, stream_sk(stream_id))]
        )
        session = state = None
        for item in found:
            if item["s"]["S"] == SESSION:
                session = item
            else:
                state = item
        if session is not None:
            self.remember(session)
            if read_number(session["x"]) <= self._clock():
                session = None
        return session, state

    async def write(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        *,
        open_as: StreamState | None = None,
        finish: bool = False,
        max_events: int | None = None,
        lease: float | None = None,
    ) -> tuple[list[StoredEvent], StreamState]:
        """Open (``open_as``), append ``items``, finish, renew (``lease``): one transaction."""
        for attempt in range(WRITE_RETRIES):
            # A new stream's first round may take the session's g from the last read of
            # it here instead of reading it again: the transaction's conditions check it.
            guessed = self._horizons.get(key) if attempt == 0 and open_as is not None else None
            if guessed is not None:
                horizon_value, found = guessed, None
            else:
                session, found = await self.snapshot(key, stream_id)
                if session is None:
                    raise SessionNotFoundError(SESSION_NOT_FOUND)
                horizon_value = session["g"]
            if found is None and open_as is None:
                raise StreamNotFoundError(STREAM_NOT_FOUND)
            current = None if found is None else state_from_item(found)
            base = current or StreamState(stream_id)
            start, last = base.last_seq + 1, base.last_seq + len(items)
            first = base.first_seq
            if max_events is not None and last - first + 1 > max_events:
                first = last - max_events + 1
            if open_as is not None:
                new = StreamState(
                    stream_id=stream_id,
                    request_id=open_as.request_id,
                    owner=open_as.owner,
                    lease_expires=open_as.lease_expires,
                    first_seq=first,
                    last_seq=last,
                    done=finish,
                )
            else:
                new = replace(
                    base,
                    first_seq=first,
                    last_seq=last,
                    done=base.done or finish,
                    lease_expires=base.lease_expires if lease is None else lease,
                )
            horizon = read_number(horizon_value)
            kept = max(start, first)
            chunks = chunk_items(key, stream_id, kept, items[kept - start :], horizon)
            try:
                await self._table.call(
                    "TransactWriteItems",
                    TransactItems=[
                        self._check_live(key, horizon_value),
                        self._put_state(key, new, current, horizon),
                        *({"Put": {"TableName": self._table.name, "Item": c}} for c in chunks),
                    ],
                )
            except Cancelled:
                # The session went, its items were renewed, or another writer won: read again.
                if guessed is None:
                    await anyio.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
                continue
            if current is not None and first > current.first_seq:
                await self._drop_chunks(key, stream_id, below=first)
            return (stored_batch(stream_id, last, items) if items else []), new
        raise ConflictError(f"a stream write lost its compare-and-swap {WRITE_RETRIES} times")

    def _check_live(self, key: str, horizon: dict[str, Any]) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self._table.name,
                "Key": item_key(key, SESSION),
                "ConditionExpression": _LIVE,
                "ExpressionAttributeNames": {"#x": "x", "#g": "g"},
                "ExpressionAttributeValues": {":now": number(self._clock()), ":g": horizon},
            }
        }

    def _put_state(
        self, key: str, new: StreamState, current: StreamState | None, horizon: float
    ) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self._table.name, "Item": state_item(key, new, horizon)}
        if current is None:
            put["ConditionExpression"] = "attribute_not_exists(#k)"
            put["ExpressionAttributeNames"] = {"#k": "k"}
        else:
            put["ConditionExpression"] = "#n = :n AND #f = :f"
            put["ExpressionAttributeNames"] = {"#n": "n", "#f": "f"}
            put["ExpressionAttributeValues"] = {
                ":n": number(current.last_seq),
                ":f": number(current.first_seq),
            }
        return {"Put": put}

    async def record(self, key: str, stream_ids: list[str], keep: int) -> list[str]:
        """Note ``stream_ids`` in the session's noted-streams item; drop those beyond ``keep``.

        The list is its own item (not the session's ``meta``), so the session item,
        read on every request, does not grow with it. The new list is written on
        the condition that it is the one read; then the dropped streams are deleted.
        """
        for attempt in range(WRITE_RETRIES):
            found = await self._table.batch_get([item_key(key, SESSION), item_key(key, NOTED)])
            session = old = None
            for item in found:
                if item["s"]["S"] == SESSION:
                    session = item
                else:
                    old = item
            if session is None or read_number(session["x"]) <= self._clock():
                raise SessionNotFoundError(SESSION_NOT_FOUND)
            self.remember(session)
            noted = [] if old is None else [v["S"] for v in old["l"]["L"]]
            seen = set(noted)
            grown = noted + [stream_id for stream_id in stream_ids if stream_id not in seen]
            if grown == noted and len(grown) <= keep:
                return []  # nothing to note, nothing to drop: no write
            dropped, kept = grown[:-keep], grown[-keep:]
            version = 0 if old is None else int(old["w"]["N"])
            put: dict[str, Any] = {
                "TableName": self._table.name,
                "Item": {
                    **item_key(key, NOTED),
                    "l": {"L": [text(stream_id) for stream_id in kept]},
                    "w": number(version + 1),
                    TTL_ATTRIBUTE: number(whole_seconds(read_number(session["g"]))),
                },
            }
            if old is None:
                put["ConditionExpression"] = "attribute_not_exists(#k)"
                put["ExpressionAttributeNames"] = {"#k": "k"}
            else:
                put["ConditionExpression"] = "#w = :w"
                put["ExpressionAttributeNames"] = {"#w": "w"}
                put["ExpressionAttributeValues"] = {":w": number(version)}
            try:
                await self._table.call(
                    "TransactWriteItems",
                    TransactItems=[self._check_live(key, session["g"]), {"Put": put}],
                )
            except Cancelled:
                await anyio.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
                continue
            for stream_id in dropped:
                await self.delete(key, stream_id)
            return dropped
        raise ConflictError(f"noting streams lost its compare-and-swap {WRITE_RETRIES} times")

    async def load(self, key: str, stream_id: str) -> StreamState | None:
        session, found = await self.snapshot(key, stream_id)
        return None if session is None or found is None else state_from_item(found)

    async def of_session(self, key: str) -> list[StreamState]:
        """Every stream of the live session under ``key``, ordered by stream id."""
        session, _ = await self.snapshot(key, "")
        if session is None:
            return []
        items = await self._table.query(
            KeyConditionExpression="#k = :k AND begins_with(#s, :t)",
            ExpressionAttributeNames={"#k": "k", "#s": "s"},
            ExpressionAttributeValues={":k": text(key), ":t": text(STREAM_SK_PREFIX)},
        )
        return sorted((state_from_item(item) for item in items), key=lambda s: s.stream_id)

    async def positions(
        self, slots: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, bool]]:
        """``(last_seq, done)`` of each live stream of ``slots``: one BatchGetItem per 50.

        The shared follower's poll: every waited stream's state and its
        session's expiry, read together, instead of two reads per stream.
        """
        found: dict[tuple[str, str], tuple[int, bool]] = {}
        now = self._clock()
        for start in range(0, len(slots), POSITIONS_PER_BATCH):
            chunk = slots[start : start + POSITIONS_PER_BATCH]
            keys = {key for key, _ in chunk}
            wanted = [item_key(key, SESSION) for key in keys]
            wanted += [item_key(key, stream_sk(stream_id)) for key, stream_id in chunk]
            live: set[str] = set()
            states: dict[tuple[str, str], StreamState] = {}
            for item in await self._table.batch_get(wanted):
                key, sort = item["k"]["S"], item["s"]["S"]
                if sort == SESSION:
                    if read_number(item["x"]) > now:
                        live.add(key)
                else:
                    state = state_from_item(item)
                    states[key, state.stream_id] = state
            for slot in chunk:
                if slot in states and slot[0] in live:
                    found[slot] = (states[slot].last_seq, states[slot].done)
        return found

    async def read(self, key: str, stream_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        """Events with ``seq > after_seq``, oldest first: the state, then the chunks of them."""
        session, found = await self.snapshot(key, stream_id)
        if session is None or found is None or limit <= 0:
            return []
        state = state_from_item(found)
        lower = max(after_seq + 1, state.first_seq)
        if lower > state.last_seq:
            return []
        events: list[StoredEvent] = []
        start: dict[str, Any] | None = None
        while len(events) < limit:  # every chunk in the range holds a wanted event
            extra = {} if start is None else {"ExclusiveStartKey": start}
            answer = await self._table.call(
                "Query",
                TableName=self._table.name,
                ConsistentRead=True,
                KeyConditionExpression="#k = :k AND #s BETWEEN :lo AND :hi",
                ExpressionAttributeNames={"#k": "k", "#s": "s"},
                ExpressionAttributeValues={
                    ":k": text(key),
                    ":lo": text(chunk_sk(stream_id, lower)),
                    ":hi": text(chunk_sk(stream_id, state.last_seq)),
                },
                Limit=limit - len(events),
                **extra,
            )
            for chunk in answer.get("Items", []):
                events.extend(
                    e for e in events_of_chunk(chunk, stream_id) if lower <= e.seq <= state.last_seq
                )
            start = answer.get("LastEvaluatedKey")
            if start is None:
                break
        return events[:limit]

    async def delete(self, key: str, stream_id: str) -> bool:
        """Remove the stream's chunks, then its state; True if the state was there."""
        await self._drop_chunks(key, stream_id)
        answer = await self._table.call(
            "DeleteItem",
            TableName=self._table.name,
            Key=item_key(key, stream_sk(stream_id)),
            ReturnValues="ALL_OLD",
        )
        return bool(answer.get("Attributes"))

    async def _drop_chunks(self, key: str, stream_id: str, *, below: int | None = None) -> None:
        """Delete the stream's chunks (only those ending before seq ``below``, if given)."""
        prefix = chunk_prefix(stream_id)
        high = prefix + "9" * SEQ_DIGITS if below is None else chunk_sk(stream_id, below - 1)
        chunks = await self._table.query(
            KeyConditionExpression="#k = :k AND #s BETWEEN :lo AND :hi",
            ExpressionAttributeNames={"#k": "k", "#s": "s"},
            ExpressionAttributeValues={
                ":k": text(key),
                ":lo": text(prefix + "0" * SEQ_DIGITS),
                ":hi": text(high),
            },
            ProjectionExpression="#k, #s",
        )
        await self._table.batch_delete([item_key(c["k"]["S"], c["s"]["S"]) for c in chunks])
