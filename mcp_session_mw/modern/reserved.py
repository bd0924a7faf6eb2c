"""Records the modern lane keeps under reserved session ids of an ordinary store.

Every backend already offers create-if-absent, load, compare-and-swap update and
delete on session records, keyed by a digest of the id: that is all a key ring,
a single-use guard and a state handle need, so they live there, under ids no
client can be handed (they contain ``/``, which minted session ids never do).
An encrypting store encrypts them like any session.
"""

from __future__ import annotations

from ..records import JSONValue, SessionRecord

RESERVED_PREFIX = "mcp-session-mw/modern/"
RESERVED_PROTOCOL = "mcp-session-mw/modern"
"""The ``protocol_version`` of a reserved record: operators' tools can tell them apart."""
FOREVER = 10 * 365 * 24 * 3600.0
"""The TTL of records that must not expire (the key ring, the bus log): ten years."""


def reserved_id(kind: str, name: str) -> str:
    """The session id a reserved record of ``kind`` named ``name`` lives under."""
    return f"{RESERVED_PREFIX}{kind}/{name}"


def reserved_record(now: float, ttl: float, state: dict[str, JSONValue]) -> SessionRecord:
    """A new reserved record holding ``state`` for ``ttl`` seconds from ``now``."""
    return SessionRecord(
        key="",
        protocol_version=RESERVED_PROTOCOL,
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state=state,
    )
