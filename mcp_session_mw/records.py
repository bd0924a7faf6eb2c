"""Plain data kept by a store: session records, stored SSE events, stream state.

A record never holds the raw session id: stores key it by a digest (see
:meth:`mcp_session_mw.stores.base.Store.key`), so a copy of the store's data
does not hand out live sessions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

JSONValue = Any
"""Anything :func:`json.dumps` accepts."""


@dataclass(frozen=True)
class SessionRecord:
    """One MCP session as the store keeps it.

    ``state`` is the application's own JSON dict (what tools read and update);
    ``meta`` is the middleware's private bookkeeping (recorded setup requests and
    the like). ``version`` grows by one on every write and is what atomic
    updates compare and swap on.
    """

    key: str
    protocol_version: str
    requested_protocol_version: str | None = None
    client_info: dict[str, JSONValue] = field(default_factory=dict)
    capabilities: dict[str, JSONValue] = field(default_factory=dict)
    principal: str | None = None
    created_at: float = 0.0
    last_accessed: float = 0.0
    expires_at: float = 0.0
    ttl: float = 0.0
    state: dict[str, JSONValue] = field(default_factory=dict)
    meta: dict[str, JSONValue] = field(default_factory=dict)
    version: int = 0

    def is_expired(self, now: float) -> bool:
        return self.expires_at <= now

    def evolve(self, **changes: Any) -> SessionRecord:
        """A copy with ``changes`` applied (records are immutable)."""
        return replace(self, **changes)

    def payload(self) -> str:
        """The JSON document a store writes next to its indexed columns."""
        return json.dumps(
            {
                "protocol_version": self.protocol_version,
                "requested_protocol_version": self.requested_protocol_version,
                "client_info": self.client_info,
                "capabilities": self.capabilities,
                "state": self.state,
                "meta": self.meta,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_payload(
        cls,
        *,
        key: str,
        payload: str | bytes,
        principal: str | None,
        created_at: float,
        last_accessed: float,
        expires_at: float,
        ttl: float,
        version: int,
    ) -> SessionRecord:
        """Rebuild a record from what :meth:`payload` wrote (UTF-8 JSON) and the indexed columns."""
        doc = json.loads(payload if isinstance(payload, str) else payload.decode())
        if not isinstance(doc, dict):
            raise ValueError("session payload is not a JSON object")
        return cls(
            key=key,
            protocol_version=str(doc["protocol_version"]),
            requested_protocol_version=doc.get("requested_protocol_version"),
            client_info=dict(doc.get("client_info") or {}),
            capabilities=dict(doc.get("capabilities") or {}),
            principal=principal,
            created_at=created_at,
            last_accessed=last_accessed,
            expires_at=expires_at,
            ttl=ttl,
            state=dict(doc.get("state") or {}),
            meta=dict(doc.get("meta") or {}),
            version=version,
        )


@dataclass(frozen=True)
class StoredEvent:
    """One SSE event as stored: its stream, its sequence number and its payload.

    ``seq`` starts at 1 in each stream and grows by one per event; ``data`` is the
    event's ``data`` field exactly as the app sent it (lines joined with ``\\n``);
    ``event`` is its ``event`` field, if any.
    """

    stream_id: str
    seq: int
    data: str
    event: str | None = None


@dataclass(frozen=True)
class StreamState:
    """Bookkeeping for one durable SSE stream of a session.

    ``request_id`` is the JSON-RPC id of the request the stream answers (None for
    the standalone GET stream). ``owner`` names the process producing it, and
    ``lease_expires`` is when the stream counts as orphaned unless the owner
    renews it. ``first_seq`` is the oldest retained event (events before it were
    trimmed), ``last_seq`` the newest (0 when the stream is empty). ``done`` is
    set once the final response is stored.
    """

    stream_id: str
    request_id: JSONValue = None
    owner: str = ""
    lease_expires: float = 0.0
    first_seq: int = 1
    last_seq: int = 0
    done: bool = False


@dataclass(frozen=True)
class Page:
    """One page of :meth:`Store.list_active`; pass ``next_cursor`` back for the next."""

    records: list[SessionRecord]
    next_cursor: str | None


def merge_state(
    current: Mapping[str, JSONValue], change: Mapping[str, JSONValue]
) -> dict[str, JSONValue]:
    """Shallow merge used by ``update`` when it is given a mapping."""
    merged = dict(current)
    merged.update(change)
    return merged
