"""How the Redis store writes values into its keys and script arguments, and reads them back."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ...errors import StoreError
from ...records import SessionRecord, StreamState

RECORD_FIELDS = (b"p", b"u", b"c", b"a", b"x", b"t", b"v")
"""A session hash's record fields, in the order :func:`parse_record` takes them."""


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def num(value: float) -> str:
    """A float as the shortest text that reads back as the same float (Lua reads it too)."""
    return repr(float(value))


def px(seconds: float) -> int:
    """Milliseconds for PEXPIRE: rounded up, at least 1 (0 would delete at once)."""
    return max(1, math.ceil(seconds * 1000))


def record_values(record: SessionRecord) -> list[str]:
    """The record as the write scripts take it: p c a x t v, has principal, principal."""
    return [
        record.payload(),
        num(record.created_at),
        num(record.last_accessed),
        num(record.expires_at),
        num(record.ttl),
        str(record.version),
        "0" if record.principal is None else "1",
        record.principal or "",
    ]


_encode_json_string = json.encoder.encode_basestring_ascii  # json.dumps of a str


def request_id_json(state: StreamState) -> str:
    request_id = state.request_id
    if type(request_id) is int:  # the usual id: what json.dumps writes for it
        return str(request_id)
    if type(request_id) is str:
        return _encode_json_string(request_id)
    try:
        return json.dumps(request_id)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"stream request id is not JSON-encodable: {exc}") from exc


def parse_record(key: str, values: Sequence[Any], now: float) -> SessionRecord | None:
    """A record from its hash fields (``RECORD_FIELDS`` order), None if gone or expired."""
    payload, principal, created, accessed, expires, ttl, version = values
    if payload is None or expires is None or float(expires) <= now:
        return None
    return SessionRecord.from_payload(
        key=key,
        payload=payload,
        principal=None if principal is None else text(principal),
        created_at=float(created),
        last_accessed=float(accessed),
        expires_at=float(expires),
        ttl=float(ttl),
        version=int(version),
    )


def unpack_record(key: str, packed: Any) -> SessionRecord:
    """A record from the NUL-joined string load_touch.lua returns."""
    parts = packed.split(b"\0" if isinstance(packed, bytes) else "\0", 6)
    return SessionRecord.from_payload(
        key=key,
        payload=parts[5],
        principal=text(parts[6]) if len(parts) == 7 else None,
        created_at=float(parts[1]),
        last_accessed=float(parts[2]),
        expires_at=float(parts[0]),
        ttl=float(parts[3]),
        version=int(parts[4]),
    )
