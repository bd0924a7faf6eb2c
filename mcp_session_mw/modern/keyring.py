"""The ``requestState`` key ring, held in the store and cached by every replica.

The SDK seals ``requestState`` with a synchronous codec, so keys cannot be
fetched per token: :class:`StoreKeyRing` reads the ring from one reserved
record, refreshes it every ``refresh_interval`` seconds in the background, and
hands the SDK a codec (:attr:`StoreKeyRing.codec`) that seals with the primary
key and unseals with any key still in the ring, through the SDK's own
AES-256-GCM codec. Keys are 32 random bytes; the store holds them as it holds
session state (encrypted at rest under an encrypting store).

Zero-downtime rotation, each step one refresh interval apart, is the SDK's own
three phases: ``generate`` adds a *staged* key every replica learns to unseal
with; ``rotate`` makes it the *primary* (the old primary becomes *retiring*);
``retire`` removes a retiring key once the state it sealed has expired (the
security policy's ``ttl``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..errors import ConfigurationError, SessionExistsError, SessionMiddlewareError
from ..records import JSONValue
from ..stores.base import Store
from .reserved import FOREVER, reserved_id, reserved_record
from .sdk import import_sdk

logger = logging.getLogger("mcp_session_mw.modern")

RING_ID = reserved_id("keyring", "request-state")
DEFAULT_REFRESH_INTERVAL = 5.0
PRIMARY, STAGED, RETIRING = "primary", "staged", "retiring"
MSG_EMPTY = "the request-state key ring is empty: run `mcp-session-mw keys generate`"
MSG_NO_STAGED = (
    "no staged key to rotate to: run `mcp-session-mw keys generate`, "
    "wait one refresh interval, then rotate"
)
MSG_UNKNOWN_KEY = "no key {key_id!r} in the ring"
MSG_RETIRE_PRIMARY = "key {key_id!r} is the primary: rotate to another key before retiring it"
MSG_BAD_INTERVAL = "refresh_interval is a positive finite number of seconds"


class KeyRingEmptyError(SessionMiddlewareError):
    """The ring has no primary key (yet): nothing can be sealed."""


class KeyRingError(ConfigurationError):
    """A ring operation that does not apply (unknown key, retiring the primary, …)."""


@dataclass(frozen=True)
class KeyInfo:
    """One key as operators see it: never its secret."""

    key_id: str
    role: str
    created_at: float


def _entries(state: dict[str, JSONValue]) -> list[dict[str, JSONValue]]:
    keys = state.get("keys")
    if not isinstance(keys, list):
        return []
    return [dict(entry) for entry in keys if isinstance(entry, dict)]


def _info(entry: dict[str, JSONValue]) -> KeyInfo:
    created = entry.get("created_at")
    return KeyInfo(
        key_id=str(entry.get("id")),
        role=str(entry.get("role")),
        created_at=float(created) if isinstance(created, int | float) else 0.0,
    )


async def _ensure_ring(store: Store) -> None:
    with contextlib.suppress(SessionExistsError):
        await store.create(RING_ID, reserved_record(store.now(), FOREVER, {"keys": []}))


async def list_keys(store: Store) -> list[KeyInfo]:
    """The ring's keys, primary first, then staged, then retiring, oldest first in each."""
    record = await store.load(RING_ID)
    entries = _entries(record.state) if record is not None else []
    return _ordered([_info(entry) for entry in entries])


def _ordered(infos: list[KeyInfo]) -> list[KeyInfo]:
    order = {PRIMARY: 0, STAGED: 1, RETIRING: 2}
    return sorted(infos, key=lambda info: (order.get(info.role, 3), info.created_at))


async def generate_key(store: Store) -> KeyInfo:
    """Add a fresh staged key (the primary when the ring is empty)."""
    await _ensure_ring(store)
    entry: dict[str, JSONValue] = {
        "id": secrets.token_hex(4),
        "secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "created_at": store.now(),
    }

    def add(state: dict[str, JSONValue]) -> dict[str, JSONValue]:
        entries = _entries(state)
        has_primary = any(e.get("role") == PRIMARY for e in entries)
        entry["role"] = STAGED if has_primary else PRIMARY
        return {**state, "keys": [*entries, entry]}

    await store.update(RING_ID, add)
    return _info(entry)


async def rotate_keys(store: Store) -> KeyInfo:
    """The newest staged key becomes the primary; the primary becomes retiring."""
    await _ensure_ring(store)
    chosen: list[dict[str, JSONValue]] = []

    def rotate(state: dict[str, JSONValue]) -> dict[str, JSONValue]:
        entries = _entries(state)
        staged = [e for e in entries if e.get("role") == STAGED]
        if not staged:
            raise KeyRingError(MSG_NO_STAGED)
        newest = max(staged, key=lambda e: float(str(e.get("created_at", 0))))
        for e in entries:
            if e.get("role") == PRIMARY:
                e["role"] = RETIRING
            if e.get("id") == newest.get("id"):
                e["role"] = PRIMARY
                chosen[:] = [e]
        return {**state, "keys": list(entries)}

    await store.update(RING_ID, rotate)
    return _info(chosen[0])


async def retire_key(store: Store, key_id: str) -> None:
    """Remove a staged or retiring key: state it sealed no longer unseals anywhere."""

    def retire(state: dict[str, JSONValue]) -> dict[str, JSONValue]:
        entries = _entries(state)
        match = [e for e in entries if e.get("id") == key_id]
        if not match:
            raise KeyRingError(MSG_UNKNOWN_KEY.format(key_id=key_id))
        if match[0].get("role") == PRIMARY:
            raise KeyRingError(MSG_RETIRE_PRIMARY.format(key_id=key_id))
        return {**state, "keys": [e for e in entries if e.get("id") != key_id]}

    if await store.load(RING_ID) is None:
        raise KeyRingError(MSG_UNKNOWN_KEY.format(key_id=key_id))
    await store.update(RING_ID, retire)


def _secrets_in_order(entries: list[dict[str, JSONValue]]) -> list[bytes]:
    """Key material for the SDK codec: the primary first (it seals), then the rest."""
    primary = [e for e in entries if e.get("role") == PRIMARY]
    others = [e for e in entries if e.get("role") != PRIMARY]
    material: list[bytes] = []
    for entry in primary + others:
        secret = entry.get("secret")
        if isinstance(secret, str):
            material.append(base64.b64decode(secret))
    return material


class RingCodec:
    """The SDK's ``RequestStateCodec``, over whatever ring :class:`StoreKeyRing` last read."""

    def __init__(self) -> None:
        self._codec: Any = None
        self._fingerprint: tuple[str, ...] = ()

    def install(self, entries: list[dict[str, JSONValue]]) -> None:
        """Use these keys from now on (a no-op when the ring did not change)."""
        has_primary = any(e.get("role") == PRIMARY for e in entries)
        fingerprint = tuple(f"{e.get('id')}:{e.get('role')}" for e in entries)
        if fingerprint == self._fingerprint:
            return
        request_state = import_sdk("mcp.server.request_state")
        material = _secrets_in_order(entries) if has_primary else []
        self._codec = request_state.AESGCMRequestStateCodec(material) if material else None
        self._fingerprint = fingerprint

    def seal(self, payload: bytes) -> str:
        codec = self._codec
        if codec is None:
            raise KeyRingEmptyError(MSG_EMPTY)
        token: str = codec.seal(payload)
        return token

    def unseal(self, token: str) -> bytes:
        codec = self._codec
        if codec is None:
            request_state = import_sdk("mcp.server.request_state")
            raise request_state.InvalidRequestState("no keys")
        payload: bytes = codec.unseal(token)
        return payload


class StoreKeyRing:
    """Every replica's cached view of the ring, refreshed in the background.

    Start it in the server's lifespan (``async with ring:``) or with
    :meth:`start`; pass :meth:`security` (or :attr:`codec`) to the SDK.
    """

    def __init__(self, store: Store, *, refresh_interval: float = DEFAULT_REFRESH_INTERVAL) -> None:
        if isinstance(refresh_interval, bool) or not isinstance(refresh_interval, int | float):
            raise ConfigurationError(MSG_BAD_INTERVAL)
        if not (math.isfinite(refresh_interval) and refresh_interval > 0):
            raise ConfigurationError(MSG_BAD_INTERVAL)
        self._store = store
        self.refresh_interval = float(refresh_interval)
        self.codec = RingCodec()
        self.keys: list[KeyInfo] = []
        """The keys read last, primary first (ids and roles, never secrets)."""
        self._task: asyncio.Task[None] | None = None

    def security(self, **options: Any) -> Any:
        """The SDK's ``RequestStateSecurity(codec=…, **options)`` over this ring."""
        request_state = import_sdk("mcp.server.request_state")
        return request_state.RequestStateSecurity(codec=self.codec, **options)

    async def refresh(self) -> list[KeyInfo]:
        """Read the ring now and use it; the keys read."""
        record = await self._store.load(RING_ID)
        entries = _entries(record.state) if record is not None else []
        self.codec.install(entries)
        self.keys = _ordered([_info(entry) for entry in entries])
        return self.keys

    async def start(self) -> None:
        """Read the ring, then keep refreshing it until :meth:`aclose`."""
        if not any(info.role == PRIMARY for info in await self.refresh()):
            logger.warning(MSG_EMPTY)  # requestState cannot be sealed until a key is generated
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> StoreKeyRing:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except Exception:  # keep the cached ring; the next round tries again
                logger.warning("request-state key ring refresh failed", exc_info=True)
