"""MCP Streamable HTTP facts the middleware relies on: headers, revisions, ids.

Every id that arrives on the wire is checked against a strict pattern and
length before it is used, stored, logged or echoed.
"""

from __future__ import annotations

import re
import secrets

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
LAST_EVENT_ID_HEADER = "last-event-id"

HANDSHAKE_REVISIONS: frozenset[str] = frozenset(
    {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}
)
"""Protocol revisions with ``initialize``, ``Mcp-Session-Id`` and ``Last-Event-ID``."""

DEFAULT_REVISION = "2025-03-26"
"""What the spec says a server assumes when a request carries no version header."""

PRIMING_REVISION = "2025-11-25"
"""From this revision on, clients expect a priming event at the start of an SSE stream."""

SESSION_ID_BYTES = 32
"""Entropy of a minted session id: 256 bits, well above the 128 the design asks for."""

MAX_SESSION_ID_LENGTH = 128
_SESSION_ID_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_SESSION_ID_LENGTH}}}")


def mint_session_id() -> str:
    """A fresh, unguessable session id: 43 URL-safe characters (all in 0x21-0x7E)."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def valid_session_id(value: str | None) -> bool:
    """True for visible-ASCII ids of sane length; anything else is never looked up."""
    return value is not None and _SESSION_ID_RE.fullmatch(value) is not None


def is_handshake_lane(version_header: str | None) -> bool:
    """Requests without a version header, or naming a handshake revision, are ours to manage."""
    return version_header is None or version_header in HANDSHAKE_REVISIONS
