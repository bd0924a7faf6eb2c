"""DynamoDB store: sessions, leases and durable streams in one table (``dynamodb:///TABLE``).

Reads are strongly consistent. Session writes are conditional: ``create`` only
where no live session is, ``update`` a compare-and-swap on the version
attribute ``v``, ``touch`` only while the session is live. DynamoDB's TTL
removes expired items some time after they expire (up to days), so every read
checks the expiry itself, and ``cleanup_expired`` removes expired sessions
with everything they hold at once.

The session's other items (stream states, event chunks) carry ``g`` as their
TTL, kept at or past the session's expiry: when a touch moves the expiry past
``g``, ``g`` moves one ttl further and those items are renewed with it, so
that costs one write per item at most once per ttl. Item layout:
:mod:`.items`; the event log: :mod:`.events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ...errors import ConfigurationError, SessionExistsError
from ...records import Page, SessionRecord, StoredEvent, StreamState
from ..base import Store
from ..follower import Position, Slot
from .client import ConditionFailed, Settings, Table, flag, number, parse_url, text
from .events import EventLog
from .items import (
    LOCK,
    SESSION,
    TTL_ATTRIBUTE,
    item_key,
    lock_key,
    record_fields,
    record_from_item,
    session_item,
    whole_seconds,
)

DEFAULT_POLL_INTERVAL = 0.25
"""Seconds between reads of a live wait: each costs a strongly consistent read of two items."""
SESSION_EXISTS = "session already exists"
BAD_CURSOR = "not a cursor this store returned"
MAX_SCANS_PER_PAGE = 20
"""Scan calls one ``list_active`` page may make (a page may come back short, with a cursor)."""


class DynamoDBStore(Store):
    """Sessions and streams in one DynamoDB table, through aiobotocore.

    ``dynamodb:///TABLE?region=REGION&endpoint_url=URL&create_table=true``;
    credentials come from the standard AWS chain. With ``create_table`` the
    table is created on first use if missing (otherwise ``mcp-session-mw db
    upgrade`` creates it).
    """

    schemes: ClassVar[tuple[str, ...]] = ("dynamodb",)
    records_streams_natively = True

    def __init__(
        self,
        table: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        create_table: bool = False,
        secret: str | bytes | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **bounds: Any,
    ) -> None:
        super().__init__(secret=secret)
        settings = Settings(
            table=table,
            region=region,
            endpoint_url=endpoint_url,
            create_table=flag("create_table", create_table),
            **bounds,
        )
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise ConfigurationError("poll_interval must be a positive number of seconds")
        if not 0 < poll_interval <= 5:
            raise ConfigurationError("poll_interval must be more than 0 and at most 5 seconds")
        self.poll_interval = float(poll_interval)
        self.table = Table(settings)
        self._events = EventLog(self.table, self.now)
        self._checked = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DynamoDBStore:
        """The store ``dynamodb:///TABLE?region=…&endpoint_url=…`` names; ``options`` win."""
        return cls(**{**parse_url(url), **options})

    async def open(self) -> None:
        """Check the table is there (create it when allowed); StoreError if it is missing."""
        if self._checked:
            return
        if self.table.settings.create_table:
            await self.table.create(TTL_ATTRIBUTE)
        elif not await self.table.exists():
            await self.table.call("DescribeTable", TableName=self.table.name)  # raises
        self._checked = True

    async def close(self) -> None:
        await self.table.close()
        self._checked = False

    async def upgrade(self) -> bool:
        """Create the table with its TTL if missing (``db upgrade``); True if it was made."""
        made = await self.table.create(TTL_ATTRIBUTE)
        self._checked = True
        return made

    async def drop_table(self) -> None:
        """Delete the whole table: for tests and teardown."""
        await self.table.drop()
        self._checked = False

    # -- sessions --------------------------------------------------------------------

    async def _insert(self, record: SessionRecord) -> None:
        now = self.now()
        try:
            await self.table.call(
                "PutItem",
                TableName=self.table.name,
                Item=session_item(record, record.expires_at + record.ttl),
                ConditionExpression="attribute_not_exists(#k) OR #x <= :now",
                ExpressionAttributeNames={"#k": "k", "#x": "x"},
                ExpressionAttributeValues={":now": number(now)},
            )
        except ConditionFailed:
            raise SessionExistsError(SESSION_EXISTS) from None
        # What an expired session under this key left (its items may outlive it).
        await self._purge(record.key, keep_session=True)

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        answer = await self.table.call(
            "GetItem", TableName=self.table.name, Key=item_key(key, SESSION), ConsistentRead=True
        )
        item = answer.get("Item")
        if item is None:
            return None
        self._events.remember(item)
        if float(item["x"]["N"]) <= now:
            return None
        return record_from_item(item)

    async def _put(self, record: SessionRecord) -> None:
        fields = record_fields(record)
        names = {f"#{name}": name for name in fields}
        values = {f":{name}": value for name, value in fields.items()}
        sets = [f"#{name} = :{name}" for name in fields]
        if record.principal is None:
            tail = " REMOVE #u"
        else:
            sets.append("#u = :u")
            values[":u"] = text(record.principal)
            tail = ""
        names["#u"] = "u"
        answer = await self.table.call(
            "UpdateItem",
            TableName=self.table.name,
            Key=item_key(record.key, SESSION),
            UpdateExpression="SET " + ", ".join(sets) + tail,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        await self._renew_if_due(answer.get("Attributes", {}))

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        # Timing fields are touch's business: a touch between our read and this write is kept.
        values: dict[str, Any] = {
            ":p": text(record.payload()),
            ":v": number(record.version),
            ":old": number(expected_version),
            ":now": number(self.now()),
        }
        record_fields(record)  # refuses a record too large for one item
        if record.principal is None:
            update = "SET #p = :p, #v = :v REMOVE #u"
        else:
            update = "SET #p = :p, #v = :v, #u = :u"
            values[":u"] = text(record.principal)
        try:
            await self.table.call(
                "UpdateItem",
                TableName=self.table.name,
                Key=item_key(record.key, SESSION),
                UpdateExpression=update,
                ConditionExpression="#v = :old AND #x > :now",
                ExpressionAttributeNames={"#p": "p", "#v": "v", "#u": "u", "#x": "x"},
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    async def _touch(self, key: str, now: float, ttl: float | None) -> bool:
        values: dict[str, Any] = {":now": number(now)}
        if ttl is None:  # the record's own ttl, added up by DynamoDB
            update = "SET #a = :now, #x = :now + #t, #e = :nowc + #tc"
            values[":nowc"] = number(whole_seconds(now))
        else:
            update = "SET #a = :now, #x = :x, #e = :e, #t = :t, #tc = :tc"
            values.update(
                {
                    ":x": number(now + ttl),
                    ":e": number(whole_seconds(now + ttl)),
                    ":t": number(float(ttl)),
                    ":tc": number(whole_seconds(ttl)),
                }
            )
        try:
            answer = await self.table.call(
                "UpdateItem",
                TableName=self.table.name,
                Key=item_key(key, SESSION),
                UpdateExpression=update,
                ConditionExpression="#x > :now",
                ExpressionAttributeNames={
                    "#a": "a",
                    "#x": "x",
                    "#e": TTL_ATTRIBUTE,
                    "#t": "t",
                    "#tc": "tc",
                },
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return False
        touched = answer.get("Attributes", {})
        self._events.remember(touched)
        await self._renew_if_due(touched)
        return True

    async def _renew_if_due(self, item: dict[str, Any]) -> None:
        """If the session's expiry passed ``g``, move ``g`` a ttl on and renew its items."""
        if not item or "g" not in item:
            return
        expires, ttl, horizon = (float(item[name]["N"]) for name in ("x", "t", "g"))
        if horizon >= expires:
            return
        key = item["k"]["S"]
        new = expires + ttl
        try:  # one process wins the move; it renews the items
            await self.table.call(
                "UpdateItem",
                TableName=self.table.name,
                Key=item_key(key, SESSION),
                UpdateExpression="SET #g = :new",
                ConditionExpression="#g = :old",
                ExpressionAttributeNames={"#g": "g"},
                ExpressionAttributeValues={":new": number(new), ":old": item["g"]},
            )
        except ConditionFailed:
            return
        for other in await self._others(key):
            try:
                await self.table.call(
                    "UpdateItem",
                    TableName=self.table.name,
                    Key=item_key(key, other),
                    UpdateExpression="SET #e = :e",
                    ConditionExpression="attribute_exists(#k)",
                    ExpressionAttributeNames={"#e": TTL_ATTRIBUTE, "#k": "k"},
                    ExpressionAttributeValues={":e": number(whole_seconds(new))},
                )
            except ConditionFailed:
                continue  # deleted meanwhile

    async def _others(self, key: str) -> list[str]:
        """Sort keys of the session's items other than the session item."""
        items = await self.table.query(
            KeyConditionExpression="#k = :k",
            ExpressionAttributeNames={"#k": "k", "#s": "s"},
            ExpressionAttributeValues={":k": text(key)},
            ProjectionExpression="#k, #s",
        )
        return [item["s"]["S"] for item in items if item["s"]["S"] != SESSION]

    async def _purge(self, key: str, *, keep_session: bool) -> None:
        others = await self._others(key)
        await self.table.batch_delete([item_key(key, s) for s in others])
        if not keep_session:
            await self.table.batch_delete([item_key(key, SESSION)])

    async def _delete(self, key: str) -> bool:
        # The session item first: nothing can be appended to it once it is gone.
        answer = await self.table.call(
            "DeleteItem",
            TableName=self.table.name,
            Key=item_key(key, SESSION),
            ReturnValues="ALL_OLD",
        )
        old = answer.get("Attributes")
        await self._purge(key, keep_session=True)
        return old is not None and float(old["x"]["N"]) > self.now()

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        start = _decode_cursor(cursor)
        records: list[SessionRecord] = []
        for _ in range(MAX_SCANS_PER_PAGE):
            extra = {} if start is None else {"ExclusiveStartKey": start}
            answer = await self.table.call(
                "Scan",
                TableName=self.table.name,
                ConsistentRead=True,
                FilterExpression="#s = :s AND #x > :now",
                ExpressionAttributeNames={"#s": "s", "#x": "x"},
                ExpressionAttributeValues={":s": text(SESSION), ":now": number(now)},
                Limit=limit - len(records),
                **extra,
            )
            records.extend(record_from_item(item) for item in answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if start is None or len(records) >= limit:
                break
        records.sort(key=lambda r: r.key)
        return Page(records, None if start is None else _encode_cursor(start))

    async def _cleanup(self, now: float) -> int:
        expired = [
            item["k"]["S"]
            for item in await self._scan(
                FilterExpression="#s = :s AND #x <= :now",
                ExpressionAttributeNames={"#s": "s", "#x": "x", "#k": "k"},
                ExpressionAttributeValues={":s": text(SESSION), ":now": number(now)},
                ProjectionExpression="#k",
            )
        ]
        removed = 0
        for key in expired:
            try:  # only if it is still expired: a touch since keeps it
                await self.table.call(
                    "DeleteItem",
                    TableName=self.table.name,
                    Key=item_key(key, SESSION),
                    ConditionExpression="#x <= :now",
                    ExpressionAttributeNames={"#x": "x"},
                    ExpressionAttributeValues={":now": number(now)},
                )
            except ConditionFailed:
                continue
            removed += 1
            await self._purge(key, keep_session=True)
        return removed

    async def _scan(self, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            extra = {} if start is None else {"ExclusiveStartKey": start}
            answer = await self.table.call("Scan", TableName=self.table.name, **params, **extra)
            items.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return items

    # -- named locks -------------------------------------------------------------------

    async def _try_lock(self, name: str, owner: str, now: float, ttl: float) -> bool:
        try:
            await self.table.call(
                "PutItem",
                TableName=self.table.name,
                Item={
                    **item_key(lock_key(name), LOCK),
                    "o": text(owner),
                    "x": number(now + ttl),
                    TTL_ATTRIBUTE: number(whole_seconds(now + ttl)),
                },
                ConditionExpression="attribute_not_exists(#k) OR #x <= :now",
                ExpressionAttributeNames={"#k": "k", "#x": "x"},
                ExpressionAttributeValues={":now": number(now)},
            )
        except ConditionFailed:
            return False
        return True

    async def _unlock(self, name: str, owner: str, now: float) -> bool:
        try:
            await self.table.call(
                "DeleteItem",
                TableName=self.table.name,
                Key=item_key(lock_key(name), LOCK),
                ConditionExpression="#o = :o AND #x > :now",
                ExpressionAttributeNames={"#o": "o", "#x": "x"},
                ExpressionAttributeValues={":o": text(owner), ":now": number(now)},
            )
        except ConditionFailed:
            return False
        return True

    # -- streams -----------------------------------------------------------------------

    async def _open_stream(self, key: str, state: StreamState) -> StreamState:
        _, opened = await self._events.write(key, state.stream_id, (), open_as=state)
        return opened

    async def _list_streams(self, key: str) -> list[StreamState]:
        return await self._events.of_session(key)

    async def _stream_positions(self, slots: Sequence[Slot]) -> dict[Slot, Position]:
        return await self._events.positions(slots)

    async def _load_stream(self, key: str, stream_id: str) -> StreamState | None:
        return await self._events.load(key, stream_id)

    async def _renew_stream(self, key: str, stream_id: str, lease_expires: float) -> None:
        await self._events.write(key, stream_id, (), lease=lease_expires)

    async def _finish_stream(self, key: str, stream_id: str) -> None:
        await self._events.write(key, stream_id, (), finish=True)

    async def _append_event(
        self, key: str, stream_id: str, data: str, event: str | None, max_events: int | None
    ) -> StoredEvent:
        [stored] = await self._append_events(key, stream_id, ((data, event),), max_events)
        return stored

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        stored, _ = await self._events.write(key, stream_id, items, max_events=max_events)
        return stored

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        stored, _ = await self._events.write(
            key, stream_id, items, open_as=open_as, finish=finish, max_events=max_events
        )
        return stored

    async def _record_streams(self, key: str, stream_ids: list[str], keep: int) -> list[str]:
        return await self._events.record(key, stream_ids, keep)

    async def _delete_stream(self, key: str, stream_id: str) -> bool:
        return await self._events.delete(key, stream_id)

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        return await self._events.read(key, stream_id, after_seq, limit)


def _encode_cursor(start: dict[str, Any]) -> str:
    return f"{start['k']['S']}\t{start['s']['S']}"


def _decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    k, tab, s = cursor.partition("\t") if isinstance(cursor, str) else ("", "", "")
    if not tab or not k or not s:
        raise ConfigurationError(BAD_CURSOR)
    return item_key(k, s)
