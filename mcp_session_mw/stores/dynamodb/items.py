"""How the DynamoDB store lays sessions, streams, event chunks and locks out as items.

One table, partition key ``k`` and sort key ``s`` (both strings)::

    k = <digest>        s = "s"                 the session: p payload, u principal,
                                                c a x t timestamps and ttl, tc ttl
                                                rounded up, v version, g expiry of
                                                the session's other items
    k = <digest>        s = "t|<h>"             a stream's state: i stream id,
                                                r request id (JSON), o owner, l lease,
                                                f first seq, n last seq, z done
    k = <digest>        s = "e|<h>|<last seq>"  a chunk of consecutive events of the
                                                stream: a first seq, d data list,
                                                v event-name list (NULL for none)
    k = <digest>        s = "q"                 the streams noted for max_streams_per_session:
                                                l their ids, oldest first, w version
    k = "lock#<name>"   s = "l"                 a named lock: o holder, x lease end

``<h>`` is 32 hex digits of the SHA-256 of the stream id (any stream id, fixed
width, so one stream's chunks are one key range) and ``<last seq>`` 16 digits.
Every item carries ``e``, DynamoDB's TTL attribute (whole epoch seconds): the
session's expiry on the session, the lease end on a lock, and ``g`` on a
session's other items, which is kept at or past the session's expiry.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from ...errors import ItemTooLargeError
from ...records import SessionRecord, StoredEvent, StreamState
from .client import number, read_number, text

SESSION = "s"
NOTED = "q"
LOCK = "l"
TTL_ATTRIBUTE = "e"
SEQ_DIGITS = 16
MAX_ITEM_BYTES = 400 * 1024
CHUNK_BYTES = 380 * 1024
"""What one chunk item may hold in estimated bytes: under the 400 KB item limit with room."""
MAX_TRANSACTION_ACTIONS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024 - 64 * 1024
EVENT_TOO_LARGE = "an SSE event of {size} bytes is more than one DynamoDB item holds ({limit})"
BATCH_TOO_LARGE = (
    "a batch of {count} events ({size} bytes) is more than one DynamoDB transaction holds"
)
RECORD_TOO_LARGE = "a session record of {size} bytes is more than one DynamoDB item holds"
_EVENT_OVERHEAD = 8
"""Estimated bytes per event beyond its data and name (list element overhead)."""
_CHUNK_OVERHEAD = 200


def lock_key(name: str) -> str:
    return f"lock#{name}"


def stream_hash(stream_id: str) -> str:
    return hashlib.sha256(stream_id.encode()).hexdigest()[:32]


STREAM_SK_PREFIX = "t|"
"""Sort keys of stream state items start with it."""


def stream_sk(stream_id: str) -> str:
    return f"{STREAM_SK_PREFIX}{stream_hash(stream_id)}"


def chunk_prefix(stream_id: str) -> str:
    return f"e|{stream_hash(stream_id)}|"


def chunk_sk(stream_id: str, last_seq: int) -> str:
    return f"{chunk_prefix(stream_id)}{last_seq:0{SEQ_DIGITS}d}"


def whole_seconds(moment: float) -> int:
    """A moment as DynamoDB TTL wants it: whole epoch seconds, rounded up."""
    return math.ceil(moment)


def item_key(k: str, s: str) -> dict[str, Any]:
    return {"k": text(k), "s": text(s)}


# -- sessions -------------------------------------------------------------------------


def record_fields(record: SessionRecord) -> dict[str, Any]:
    """Every attribute of a session item but its key, ``g`` and the principal."""
    payload = record.payload()
    if len(payload.encode()) + _CHUNK_OVERHEAD > MAX_ITEM_BYTES:
        raise ItemTooLargeError(RECORD_TOO_LARGE.format(size=len(payload.encode())))
    return {
        "p": text(payload),
        "c": number(record.created_at),
        "a": number(record.last_accessed),
        "x": number(record.expires_at),
        "t": number(record.ttl),
        "tc": number(whole_seconds(record.ttl)),
        "v": number(record.version),
        TTL_ATTRIBUTE: number(whole_seconds(record.expires_at)),
    }


def session_item(record: SessionRecord, horizon: float) -> dict[str, Any]:
    item = {**item_key(record.key, SESSION), **record_fields(record), "g": number(horizon)}
    if record.principal is not None:
        item["u"] = text(record.principal)
    return item


def record_from_item(item: dict[str, Any]) -> SessionRecord:
    principal = item.get("u")
    return SessionRecord.from_payload(
        key=item["k"]["S"],
        payload=item["p"]["S"],
        principal=None if principal is None else principal["S"],
        created_at=read_number(item["c"]),
        last_accessed=read_number(item["a"]),
        expires_at=read_number(item["x"]),
        ttl=read_number(item["t"]),
        version=int(item["v"]["N"]),
    )


def live_until(item: dict[str, Any] | None) -> float | None:
    """The session item's expiry, or None without an item."""
    return None if item is None else read_number(item["x"])


# -- streams --------------------------------------------------------------------------


def state_item(key: str, state: StreamState, horizon: float) -> dict[str, Any]:
    return {
        **item_key(key, stream_sk(state.stream_id)),
        "i": text(state.stream_id),
        "r": text(json.dumps(state.request_id, separators=(",", ":"))),
        "o": text(state.owner),
        "l": number(float(state.lease_expires)),
        "f": number(state.first_seq),
        "n": number(state.last_seq),
        "z": {"BOOL": state.done},
        TTL_ATTRIBUTE: number(whole_seconds(horizon)),
    }


def state_from_item(item: dict[str, Any]) -> StreamState:
    return StreamState(
        stream_id=item["i"]["S"],
        request_id=json.loads(item["r"]["S"]),
        owner=item["o"]["S"],
        lease_expires=read_number(item["l"]),
        first_seq=int(item["f"]["N"]),
        last_seq=int(item["n"]["N"]),
        done=bool(item["z"]["BOOL"]),
    )


def event_size(data: str, event: str | None) -> int:
    return len(data.encode()) + (0 if event is None else len(event.encode())) + _EVENT_OVERHEAD


def chunk_items(
    key: str,
    stream_id: str,
    first_seq: int,
    items: Sequence[tuple[str, str | None]],
    horizon: float,
) -> list[dict[str, Any]]:
    """``items`` (seqs from ``first_seq``) packed into as few chunk items as fit.

    Raises ItemTooLargeError for an event no item can hold, and for a batch no
    single transaction can hold, before anything is written.
    """
    groups: list[list[tuple[str, str | None]]] = []
    size = CHUNK_BYTES
    total = 0
    for data, event in items:
        one = event_size(data, event)
        if one + _CHUNK_OVERHEAD > CHUNK_BYTES:
            raise ItemTooLargeError(EVENT_TOO_LARGE.format(size=one, limit=MAX_ITEM_BYTES))
        if size + one > CHUNK_BYTES:
            groups.append([])
            size = _CHUNK_OVERHEAD
        groups[-1].append((data, event))
        size += one
        total += one
    if total + _CHUNK_OVERHEAD * len(groups) > MAX_TRANSACTION_BYTES or (
        len(groups) + 2 > MAX_TRANSACTION_ACTIONS
    ):
        raise ItemTooLargeError(BATCH_TOO_LARGE.format(count=len(items), size=total))
    chunks: list[dict[str, Any]] = []
    seq = first_seq
    ttl = number(whole_seconds(horizon))
    for group in groups:
        last = seq + len(group) - 1
        chunks.append(
            {
                **item_key(key, chunk_sk(stream_id, last)),
                "a": number(seq),
                "d": {"L": [text(data) for data, _ in group]},
                "v": {"L": [{"NULL": True} if ev is None else text(ev) for _, ev in group]},
                TTL_ATTRIBUTE: ttl,
            }
        )
        seq = last + 1
    return chunks


def events_of_chunk(item: dict[str, Any], stream_id: str) -> list[StoredEvent]:
    first = int(item["a"]["N"])
    names = item["v"]["L"]
    return [
        StoredEvent(stream_id, first + offset, data["S"], names[offset].get("S"))
        for offset, data in enumerate(item["d"]["L"])
    ]
