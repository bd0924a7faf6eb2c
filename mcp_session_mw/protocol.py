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

SESSION_ID_LENGTH = 43
"""Characters of a minted id: 32 bytes in unpadded URL-safe base64."""
_SESSION_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{{SESSION_ID_LENGTH}}}")


def mint_session_id() -> str:
    """A fresh, unguessable session id: 43 URL-safe characters (``[A-Za-z0-9_-]``)."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def valid_session_id(value: str | None) -> bool:
    """True only for ids of the minted shape; anything else is never looked up.

    The store could look up any string, but an id this middleware cannot have
    minted is unknown by construction, so refusing it here costs a probe its
    store round trip and keeps odd bytes away from every backend and log.
    """
    return value is not None and _SESSION_ID_RE.fullmatch(value) is not None


def is_handshake_lane(version_header: str | None) -> bool:
    """Requests without a version header, or naming a handshake revision, are ours to manage."""
    return version_header is None or version_header in HANDSHAKE_REVISIONS
