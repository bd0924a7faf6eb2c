"""Principal-bound state handles: the 2026-07-28 lane's replacement for session state.

A handle is 256 random bits (``secrets.token_urlsafe(32)``), minted by the
server and passed back by the client as a tool argument. The store never sees
it: the record lives under the digest of a reserved id built from it, and an
encrypting store encrypts the state like any session's. The principal is kept
as a digest too, and a handle presented by another principal is exactly as
unknown as one never minted (:class:`HandleNotFoundError`, one message), so a
handle is never a credential on its own. Updates are compare-and-swap on the
version :meth:`StateHandles.load` returned.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass

from ..errors import ConfigurationError, ConflictError, SessionNotFoundError
from ..records import JSONValue
from ..stores.base import Store, check_state
from .reserved import reserved_id, reserved_record

HANDLE_BYTES = 32
MSG_HANDLE_NOT_FOUND = "unknown or expired state handle"
MSG_HANDLE_CONFLICT = "the state handle changed since it was loaded"
MSG_BAD_PRINCIPAL = "a state handle's principal is a non-empty string"
MSG_BAD_TTL = "a state handle's ttl is a positive finite number of seconds"
_HANDLE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_PRINCIPAL_LABEL = b"mcp-session-mw/modern/handle-principal:"


class HandleNotFoundError(SessionNotFoundError):
    """The handle is malformed, unknown, expired, or was minted for another principal."""


@dataclass(frozen=True)
class HandleState:
    """What a handle holds: the state and the version an update must name."""

    state: dict[str, JSONValue]
    version: int


def _principal_tag(handle: str, principal: str) -> str:
    if not isinstance(principal, str) or not principal:
        raise ConfigurationError(MSG_BAD_PRINCIPAL)
    # Keyed by the handle, so the same principal's tag differs from handle to handle.
    raw = principal.encode("utf-8", "surrogatepass")
    return hmac.new(handle.encode(), _PRINCIPAL_LABEL + raw, hashlib.sha256).hexdigest()


def _check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ConfigurationError(MSG_BAD_TTL)
    if not (math.isfinite(ttl) and ttl > 0):
        raise ConfigurationError(MSG_BAD_TTL)
    return float(ttl)


class StateHandles:
    """Mint, load, update (compare-and-swap) and delete state handles on ``store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def mint(self, state: dict[str, JSONValue], *, principal: str, ttl: float) -> str:
        """Store ``state`` for ``principal`` for ``ttl`` seconds; the new handle."""
        seconds = _check_ttl(ttl)
        check_state(state)
        handle = secrets.token_urlsafe(HANDLE_BYTES)
        tag = _principal_tag(handle, principal)
        record = reserved_record(self._store.now(), seconds, {"p": tag, "s": state, "v": 1})
        await self._store.create(reserved_id("handle", handle), record)
        return handle

    async def load(self, handle: str, *, principal: str) -> HandleState:
        """The handle's state; HandleNotFoundError if ``principal`` cannot see it."""
        held = await self._held(handle, principal)
        return _value(held)

    async def update(
        self, handle: str, state: dict[str, JSONValue], *, principal: str, version: int
    ) -> HandleState:
        """Replace the state if it is still at ``version``; ConflictError if not."""
        check_state(state)
        tag = self._tag(handle, principal)

        def swap(current: dict[str, JSONValue]) -> dict[str, JSONValue]:
            if not hmac.compare_digest(str(current.get("p", "")), tag):
                raise HandleNotFoundError(MSG_HANDLE_NOT_FOUND)
            if current.get("v") != version:
                raise ConflictError(MSG_HANDLE_CONFLICT)
            return {"p": tag, "s": state, "v": version + 1}

        try:
            record = await self._store.update(reserved_id("handle", handle), swap)
        except HandleNotFoundError:
            raise
        except SessionNotFoundError:
            raise HandleNotFoundError(MSG_HANDLE_NOT_FOUND) from None
        return _value(record.state)

    async def delete(self, handle: str, *, principal: str) -> bool:
        """End the handle now; False if ``principal`` held no such handle."""
        try:
            await self._held(handle, principal)
        except HandleNotFoundError:
            return False
        return await self._store.delete(reserved_id("handle", handle))

    def _tag(self, handle: str, principal: str) -> str:
        if not isinstance(handle, str) or not _HANDLE_RE.fullmatch(handle):
            _principal_tag("x", principal)  # a bad principal is still a usage error
            raise HandleNotFoundError(MSG_HANDLE_NOT_FOUND)
        return _principal_tag(handle, principal)

    async def _held(self, handle: str, principal: str) -> dict[str, JSONValue]:
        tag = self._tag(handle, principal)
        record = await self._store.load(reserved_id("handle", handle))
        if record is None or not hmac.compare_digest(str(record.state.get("p", "")), tag):
            raise HandleNotFoundError(MSG_HANDLE_NOT_FOUND)
        return record.state


def _value(held: dict[str, JSONValue]) -> HandleState:
    state, version = held.get("s"), held.get("v")
    if not isinstance(state, dict) or not isinstance(version, int):
        raise HandleNotFoundError(MSG_HANDLE_NOT_FOUND)
    return HandleState(state=state, version=version)
