"""Encryption at rest: a store wrapper that seals session records and SSE events.

``EncryptedStore(backend, keys)`` wraps any :class:`Store`. What the backend
then holds, and what stays readable there:

* A session record keeps its indexed columns in the clear (key digest,
  timestamps, ttl, version) and the two protocol versions, because the backend
  needs the first to expire and page sessions and the second say nothing about
  the client. Everything else -- ``state``, ``meta``, ``client_info``,
  ``capabilities`` and ``principal`` -- is one ciphertext, stored as
  ``state = {"__enc__": token}`` with empty ``meta``, ``client_info`` and
  ``capabilities`` and no principal. The token names the master key that sealed
  it by fingerprint: ``mcpenc1.<fingerprint>.<Fernet token>``.
* Each session gets a random data key when it is created. It lives inside the
  record's ciphertext and seals that session's SSE event ``data`` fields
  (``mcpev1.<Fernet token>``). Stream ids, sequence numbers, event names
  (``message``) and stream bookkeeping (owner, lease, JSON-RPC request id) stay
  readable.
* The plaintexts carry what they belong to (the record its key digest, an
  event its stream id), and each session has its own data key, so a
  ciphertext copied onto another session or stream fails to open.

Keys rotate without downtime: the first key seals, every key opens. Rotating
means putting a new key first, then running :func:`reencrypt` (or
``python -m mcp_session_mw.encryption reencrypt``), which rewrites every
session record under the first key. Events need no rewrite: their data key
travels inside the record, so once every record is resealed the old master key
can be dropped. The procedure is in ``docs/security.md``.

What happens to data that does not open (tampered, truncated, or sealed with a
key no longer configured):

* A session record is treated as absent: ``load`` returns None (the middleware
  answers 404, never 500), ``list_active`` leaves it out, ``update`` raises
  SessionNotFoundError. A warning names the session (first 12 hex digits of its
  key digest) and the fingerprint of the master key the token asks for.
* An event raises :class:`~mcp_session_mw.errors.CorruptRecordError` from
  ``read_events`` and ``wait_events``; nothing is skipped silently. A client
  resuming such a stream gets a JSON-RPC error response and the stream ends.

Sealing uses Fernet (AES-128-CBC with HMAC-SHA256, a random IV per message) from
the optional ``cryptography`` package: ``pip install 'mcp-session-mw[encryption]'``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from .errors import (
    ConfigurationError,
    CorruptRecordError,
    MissingExtraError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from .records import Page, SessionRecord, StoredEvent, StreamState
from .stores.base import Store
from .stores.delegating import DelegatingStore

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

logger = logging.getLogger("mcp_session_mw")

ENVELOPE_FIELD = "__enc__"
"""The one state key of a sealed record; its value is the record's token."""
RECORD_TOKEN_PREFIX = "mcpenc1"
EVENT_TOKEN_PREFIX = "mcpev1"
DEFAULT_DATA_KEY_CACHE = 10_000
"""Sessions whose opened data key a store keeps in memory (most recently used)."""
KEYS_ENV = "MCP_SESSION_ENCRYPTION_KEYS"
"""Comma-separated keys the command line reads when no ``--key`` is given."""
STORE_URL_ENV = "MCP_SESSION_STORE_URL"

MSG_KEYS_NOT_A_LIST = "encryption keys must be a list of keys, not a single string"
MSG_NO_KEYS = "at least one encryption key is needed"
MSG_BAD_KEY = (
    "encryption key #{index} is not a Fernet key (32 bytes, url-safe base64); "
    "make one with: python -m mcp_session_mw.encryption genkey"
)
MSG_DUPLICATE_KEY = "encryption key #{index} repeats an earlier key"
MSG_EVENTS_UNREADABLE = "stored events of this stream cannot be decrypted"
LOG_RECORD_UNREADABLE = "session %s: stored record cannot be decrypted (%s); treated as absent"
LOG_EVENT_UNREADABLE = "session %s: event %s.%d cannot be decrypted"

REASON_NOT_SEALED = "not an encrypted record"
REASON_UNKNOWN_KEY = "sealed with key {fingerprint}, which is not configured"
REASON_TAMPERED = "authentication failed under key {fingerprint}: tampered or truncated"
REASON_MALFORMED = "malformed token"
REASON_WRONG_OWNER = "decrypted under key {fingerprint} but belongs to another session"

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNREADABLE = 4


def _fernet_class() -> type[Fernet]:
    try:
        from cryptography.fernet import Fernet
    except ImportError as exc:
        raise MissingExtraError("encryption", "cryptography") from exc
    return Fernet


def generate_key() -> str:
    """A new random master key, in the form ``keys`` accept (url-safe base64 of 32 bytes)."""
    return _fernet_class().generate_key().decode()


def _raw_key(key: object, index: int) -> bytes:
    """The 32 key bytes of a url-safe base64 key (str or bytes), or of 32 raw bytes."""
    if isinstance(key, bytes) and len(key) == 32:
        return key
    if isinstance(key, str):
        try:
            key = key.strip().encode("ascii")
        except UnicodeEncodeError:
            key = b""
    if isinstance(key, bytes):
        try:
            raw = base64.b64decode(key.strip(), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 32:
            return raw
    raise ConfigurationError(MSG_BAD_KEY.format(index=index))


def key_fingerprint(key: str | bytes) -> str:
    """The 12 hex digits tokens and log lines use to name a master key (SHA-256 of its bytes).

    A digest of a random 256-bit key reveals nothing usable about it, so the
    fingerprint is safe to log and to print.
    """
    return hashlib.sha256(_raw_key(key, 1)).hexdigest()[:12]


class _Unreadable(Exception):
    """Internal: a token did not open; ``reason`` is what the warning says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Keyring:
    """The master keys: the first seals, every one opens.

    Tokens carry the sealing key's fingerprint, so opening one tries exactly one
    key and a log line can say which key a stored token asks for.
    """

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        fernet = _fernet_class()
        if isinstance(keys, str | bytes):
            raise ConfigurationError(MSG_KEYS_NOT_A_LIST)
        keys = list(keys)
        if not keys:
            raise ConfigurationError(MSG_NO_KEYS)
        self._by_fingerprint: dict[str, Fernet] = {}
        order: list[str] = []
        for index, key in enumerate(keys, start=1):
            raw = _raw_key(key, index)
            fingerprint = hashlib.sha256(raw).hexdigest()[:12]
            if fingerprint in self._by_fingerprint:
                raise ConfigurationError(MSG_DUPLICATE_KEY.format(index=index))
            self._by_fingerprint[fingerprint] = fernet(base64.urlsafe_b64encode(raw))
            order.append(fingerprint)
        self.fingerprints: tuple[str, ...] = tuple(order)
        """Fingerprints of the configured keys, the sealing key first."""

    @property
    def primary(self) -> str:
        """Fingerprint of the key that seals."""
        return self.fingerprints[0]

    def seal(self, plaintext: bytes) -> str:
        token = self._by_fingerprint[self.primary].encrypt(plaintext).decode("ascii")
        return f"{RECORD_TOKEN_PREFIX}.{self.primary}.{token}"

    @staticmethod
    def fingerprint_of(token: str) -> str | None:
        """The fingerprint a token names, or None if it is no record token."""
        prefix, _, rest = token.partition(".")
        fingerprint, dot, _ = rest.partition(".")
        if prefix != RECORD_TOKEN_PREFIX or not dot or len(fingerprint) != 12:
            return None
        return fingerprint

    def open(self, token: str) -> tuple[bytes, str]:
        """The plaintext and the fingerprint of the key that opened it; raises _Unreadable."""
        from cryptography.fernet import InvalidToken

        fingerprint = self.fingerprint_of(token)
        if fingerprint is None:
            raise _Unreadable(REASON_MALFORMED)
        fernet = self._by_fingerprint.get(fingerprint)
        if fernet is None:
            raise _Unreadable(REASON_UNKNOWN_KEY.format(fingerprint=fingerprint))
        body = token[len(RECORD_TOKEN_PREFIX) + 14 :]
        try:
            return fernet.decrypt(body.encode("ascii")), fingerprint
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise _Unreadable(REASON_TAMPERED.format(fingerprint=fingerprint)) from exc


@dataclass(frozen=True)
class _DataKey:
    """A session's own key: ``text`` as the record stores it, ``fernet`` to use it."""

    text: str
    fernet: Fernet


class EncryptedStore(DelegatingStore):
    """Seals what ``backend`` stores with ``keys``; see the module docstring for the layout.

    ``keys`` are master keys (:func:`generate_key` makes one): the first seals,
    all of them open. Session digests are the backend's (same secret). Opening
    and closing this store opens and closes the backend. ``update`` stays
    atomic: the shared compare-and-swap loop runs on sealed records.
    """

    def __init__(
        self,
        backend: Store,
        keys: Sequence[str | bytes],
        *,
        data_key_cache: int = DEFAULT_DATA_KEY_CACHE,
    ) -> None:
        if isinstance(backend, EncryptedStore):
            raise ConfigurationError("the store is already encrypted")
        self.keyring = Keyring(keys)
        super().__init__(backend)
        self._fernet = _fernet_class()
        self._data_keys: OrderedDict[str, _DataKey] = OrderedDict()
        self._data_key_cache = max(1, data_key_cache)

    # -- sealing records -------------------------------------------------------------

    def _new_data_key(self) -> _DataKey:
        text = self._fernet.generate_key().decode("ascii")
        return _DataKey(text, self._fernet(text.encode("ascii")))

    def _remember(self, key: str, data_key: _DataKey) -> None:
        self._data_keys.pop(key, None)
        self._data_keys[key] = data_key
        while len(self._data_keys) > self._data_key_cache:
            self._data_keys.popitem(last=False)

    def _seal(self, record: SessionRecord, data_key: _DataKey) -> SessionRecord:
        doc = {
            "k": record.key,
            "dk": data_key.text,
            "principal": record.principal,
            "client_info": record.client_info,
            "capabilities": record.capabilities,
            "state": record.state,
            "meta": record.meta,
        }
        plaintext = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        return record.evolve(
            principal=None,
            client_info={},
            capabilities={},
            state={ENVELOPE_FIELD: self.keyring.seal(plaintext)},
            meta={},
        )

    def _unseal(self, sealed: SessionRecord) -> tuple[SessionRecord, _DataKey, str]:
        """The plain record, its data key and the master key's fingerprint; raises _Unreadable."""
        token = sealed.state.get(ENVELOPE_FIELD) if len(sealed.state) == 1 else None
        if not isinstance(token, str):
            raise _Unreadable(REASON_NOT_SEALED)
        plaintext, fingerprint = self.keyring.open(token)
        try:
            doc = json.loads(plaintext)
            text = doc["dk"]
            data_key = _DataKey(text, self._fernet(text.encode("ascii")))
            principal = doc["principal"]
            fields = {name: doc[name] for name in ("client_info", "capabilities", "state", "meta")}
            owner = doc["k"]
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError) as exc:
            raise _Unreadable(REASON_MALFORMED) from exc
        if owner != sealed.key:
            raise _Unreadable(REASON_WRONG_OWNER.format(fingerprint=fingerprint))
        if not (principal is None or isinstance(principal, str)) or not all(
            isinstance(value, dict) for value in fields.values()
        ):
            raise _Unreadable(REASON_MALFORMED)
        return sealed.evolve(principal=principal, **fields), data_key, fingerprint

    def _open_record(self, sealed: SessionRecord) -> SessionRecord | None:
        """The plain record (remembering its data key), or None with a warning."""
        try:
            record, data_key, _ = self._unseal(sealed)
        except _Unreadable as exc:
            logger.warning(LOG_RECORD_UNREADABLE, sealed.key[:12], exc.reason)
            return None
        self._remember(sealed.key, data_key)
        return record

    async def _data_key(self, key: str, *, refresh: bool = False) -> _DataKey | None:
        """The session's data key: remembered, else read from its record (None if gone)."""
        if not refresh:
            data_key = self._data_keys.get(key)
            if data_key is not None:
                self._data_keys.move_to_end(key)
                return data_key
        sealed = await self._backend._get(key, self.now())
        if sealed is None or self._open_record(sealed) is None:
            self._data_keys.pop(key, None)
            return None
        return self._data_keys[key]

    # -- sessions --------------------------------------------------------------------

    async def _insert(self, record: SessionRecord) -> None:
        data_key = self._new_data_key()
        await self._backend._insert(self._seal(record, data_key))
        self._remember(record.key, data_key)

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        sealed = await self._backend._get(key, now)
        return None if sealed is None else self._open_record(sealed)

    async def _put(self, record: SessionRecord) -> None:
        data_key = await self._data_key(record.key) or self._new_data_key()
        await self._backend._put(self._seal(record, data_key))
        self._remember(record.key, data_key)

    async def _compare_and_swap(self, record: SessionRecord, expected_version: int) -> bool:
        data_key = await self._data_key(record.key)
        if data_key is None:
            return False
        return await self._backend._compare_and_swap(self._seal(record, data_key), expected_version)

    async def _delete(self, key: str) -> bool:
        self._data_keys.pop(key, None)
        return await self._backend._delete(key)

    async def _list(self, limit: int, cursor: str | None, now: float) -> Page:
        page = await self._backend._list(limit, cursor, now)
        records = [r for r in map(self._open_record, page.records) if r is not None]
        return Page(records, page.next_cursor)

    # Touch, cleanup, lock names and stream bookkeeping are not secret: the
    # backend's own (DelegatingStore).

    # -- events: data sealed with the session's data key -----------------------------------

    async def _event_key(self, key: str) -> _DataKey:
        data_key = await self._data_key(key)
        if data_key is None:  # the session is gone (or unreadable, which counts as gone)
            raise SessionNotFoundError("session not found")
        return data_key

    @staticmethod
    def _seal_event(data_key: _DataKey, stream_id: str, data: str) -> str:
        token = data_key.fernet.encrypt(f"{stream_id}\n{data}".encode())
        return f"{EVENT_TOKEN_PREFIX}.{token.decode('ascii')}"

    @staticmethod
    def _open_event(data_key: _DataKey, stream_id: str, sealed: str) -> str | None:
        from cryptography.fernet import InvalidToken

        prefix, dot, token = sealed.partition(".")
        if prefix != EVENT_TOKEN_PREFIX or not dot:
            return None
        try:
            plaintext = data_key.fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            return None
        owner, newline, data = plaintext.partition("\n")
        return data if newline and owner == stream_id else None

    async def _append_event(
        self, key: str, stream_id: str, data: str, event: str | None, max_events: int | None
    ) -> StoredEvent:
        data_key = await self._event_key(key)
        stored = await self._backend._append_event(
            key, stream_id, self._seal_event(data_key, stream_id, data), event, max_events
        )
        return replace(stored, data=data)

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        data_key = await self._event_key(key)
        sealed = [(self._seal_event(data_key, stream_id, data), event) for data, event in items]
        stored = await self._backend._append_events(key, stream_id, sealed, max_events)
        return [replace(s, data=data) for s, (data, _) in zip(stored, items, strict=True)]

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        if not items:
            return await self._backend._write_stream(
                key, stream_id, items, open_as, finish, max_events
            )
        data_key = await self._event_key(key)
        sealed = [(self._seal_event(data_key, stream_id, data), event) for data, event in items]
        stored = await self._backend._write_stream(
            key, stream_id, sealed, open_as, finish, max_events
        )
        return [replace(s, data=data) for s, (data, _) in zip(stored, items, strict=True)]

    async def _read_events(
        self, key: str, stream_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        events = await self._backend._read_events(key, stream_id, after_seq, limit)
        return await self._open_events(key, stream_id, events)

    async def wait_events(
        self,
        session_id: str,
        stream_id: str,
        after_seq: int,
        timeout: float,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """The backend's own live wait (blocking read, LISTEN or polling), then decryption."""
        events = await self._backend.wait_events(session_id, stream_id, after_seq, timeout, limit)
        return await self._open_events(self.key(session_id), stream_id, events)

    async def _open_events(
        self, key: str, stream_id: str, events: list[StoredEvent]
    ) -> list[StoredEvent]:
        """Decrypt ``events``; raise CorruptRecordError if one does not open.

        A remembered data key is checked against the record once before giving
        up, in case the session was re-created under the same id elsewhere.
        """
        if not events:
            return []
        refreshed = False
        while True:
            data_key = await self._data_key(key, refresh=refreshed)
            if data_key is None:  # the session went meanwhile: its events went with it
                return []
            opened: list[StoredEvent] = []
            for event in events:
                data = self._open_event(data_key, stream_id, event.data)
                if data is None:
                    break
                opened.append(replace(event, data=data))
            else:
                return opened
            if refreshed:
                logger.warning(LOG_EVENT_UNREADABLE, key[:12], stream_id, event.seq)
                raise CorruptRecordError(MSG_EVENTS_UNREADABLE)
            refreshed = True

    # -- rotation ------------------------------------------------------------------------

    async def _reseal(self, sealed: SessionRecord) -> str:
        """Rewrite one stored record under the first key: ``"rewritten"``, ``"current"``,
        ``"unreadable"`` or ``"gone"``. Compare-and-swap, so no concurrent write is lost."""
        while True:
            token = sealed.state.get(ENVELOPE_FIELD) if len(sealed.state) == 1 else None
            if (
                isinstance(token, str)
                and self.keyring.fingerprint_of(token) == self.keyring.primary
            ):
                return "current"
            try:
                record, data_key, _ = self._unseal(sealed)
            except _Unreadable as exc:
                logger.warning(LOG_RECORD_UNREADABLE, sealed.key[:12], exc.reason)
                return "unreadable"
            resealed = self._seal(record.evolve(version=sealed.version + 1), data_key)
            if await self._backend._compare_and_swap(resealed, sealed.version):
                self._remember(sealed.key, data_key)
                return "rewritten"
            latest = await self._backend._get(sealed.key, self.now())
            if latest is None:
                return "gone"
            sealed = latest


async def reencrypt(
    store: EncryptedStore,
    *,
    page_size: int = 100,
    unreadable: list[str] | None = None,
) -> int:
    """Reseal every live session record of ``store`` under its first key; return how many.

    Pages through the backend (``list_active``), so it never holds the whole
    set. Records already under the first key are left alone; events need no
    rewrite (their data key moves with the record). Records that do not open
    are left as they are, logged, and their key digests appended to
    ``unreadable`` when a list is given. Safe to run while servers are
    serving: every rewrite is a compare-and-swap.
    """
    rewritten, cursor = 0, None
    while True:
        page = await store.backend.list_active(limit=page_size, cursor=cursor)
        for sealed in page.records:
            outcome = await store._reseal(sealed)
            if outcome == "rewritten":
                rewritten += 1
            elif outcome == "unreadable" and unreadable is not None:
                unreadable.append(sealed.key)
        if page.next_cursor is None:
            return rewritten
        cursor = page.next_cursor


# -- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcp_session_mw.encryption",
        description="Encryption keys and key rotation for mcp-session-mw stores.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("genkey", help="print a new random key")
    fingerprint = commands.add_parser("fingerprint", help="print the fingerprint of keys")
    fingerprint.add_argument("keys", nargs="+", metavar="KEY")
    rotate = commands.add_parser(
        "reencrypt",
        help="reseal every session record under the first --key",
        description=(
            "Reseal every live session record under the first --key. Pass the new key "
            f"first and every old key after it; without --key, {KEYS_ENV} is read "
            "(comma-separated), which keeps keys out of the process list. "
            "Exit status: 0 done, 2 bad usage, 3 store unreachable, "
            "4 some records could not be decrypted (left as they were)."
        ),
    )
    rotate.add_argument("--store", default=os.environ.get(STORE_URL_ENV), help="store URL")
    rotate.add_argument("--key", action="append", default=[], help="a key; repeat, new key first")
    rotate.add_argument(
        "--store-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a store option, e.g. table_prefix=mcp_ (strings only)",
    )
    rotate.add_argument("--page-size", type=int, default=100)
    return parser


async def _reencrypt_command(url: str, keys: list[str], options: dict[str, Any], page: int) -> int:
    from .stores import create_store

    store = EncryptedStore(create_store(url, **options), keys)
    unreadable: list[str] = []
    try:
        await store.open()
        count = await reencrypt(store, page_size=page, unreadable=unreadable)
    finally:
        await store.close()
    print(f"resealed {count} session record(s) under key {store.keyring.primary}")
    if unreadable:
        print(f"{len(unreadable)} record(s) could not be decrypted:", file=sys.stderr)
        for key in unreadable:
            print(f"  {key[:12]}", file=sys.stderr)
        return EXIT_UNREADABLE
    return EXIT_OK


def _keys_as_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with every key taken as a value, even one that starts with ``-``.

    A url-safe base64 key starts with ``-`` one time in 64, and argparse would
    read it as an option: ``--key K`` becomes ``--key=K``, and the keys of
    ``fingerprint`` follow a ``--``.
    """
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--key":
            value = next(args, None)
            out.append(arg if value is None else f"--key={value}")
        else:
            out.append(arg)
    if out[:1] == ["fingerprint"] and not {"--", "-h", "--help"} & set(out[1:]):
        out.insert(1, "--")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mcp_session_mw.encryption``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(_keys_as_values(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "genkey":
            print(generate_key())
            return EXIT_OK
        if args.command == "fingerprint":
            for key in args.keys:
                print(key_fingerprint(key))
            return EXIT_OK
        keys = args.key or [k for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
        if not args.store:
            parser.error(f"--store is required (or set {STORE_URL_ENV})")
        if not keys:
            parser.error(f"at least one --key is required (or set {KEYS_ENV})")
        if args.page_size <= 0:
            parser.error("--page-size must be positive")
        options: dict[str, Any] = {}
        for item in args.store_option:
            name, equals, value = item.partition("=")
            if not equals or not name:
                parser.error(f"--store-option wants NAME=VALUE, not {item!r}")
            options[name] = value
        return anyio.run(_reencrypt_command, args.store, keys, options, args.page_size)
    except (ConfigurationError, MissingExtraError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailableError as exc:
        print(f"error: store unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


__all__ = [
    "ENVELOPE_FIELD",
    "CorruptRecordError",
    "EncryptedStore",
    "Keyring",
    "generate_key",
    "key_fingerprint",
    "main",
    "reencrypt",
]

if __name__ == "__main__":
    sys.exit(main())
