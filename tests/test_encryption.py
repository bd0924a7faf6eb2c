"""EncryptedStore: sealing, rotation, tampering, the raw bytes on disk, and its command line.

The store contract itself runs on an encrypted store through the ``encrypted``
entry of tests/backends.py; these tests cover what only encryption has.
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_session_mw import (
    ConfigurationError,
    MemoryStore,
    MissingExtraError,
    SessionMiddleware,
    SessionRecord,
    StreamState,
    create_store,
)
from mcp_session_mw.encryption import (
    ENVELOPE_FIELD,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    LOG_RECORD_UNREADABLE,
    MSG_EVENTS_UNREADABLE,
    CorruptRecordError,
    EncryptedStore,
    generate_key,
    key_fingerprint,
    reencrypt,
)
from mcp_session_mw.jsonrpc import MSG_SESSION_NOT_FOUND
from mcp_session_mw.stores import Store
from mcp_session_mw.streams import MSG_EVENTS_UNREADABLE as MSG_STREAM_UNREADABLE
from mcp_session_mw.streams import STANDALONE_STREAM, publish

from .test_middleware import HEADERS, assert_jsonrpc_error, build_sdk_app, call, initialize

pytestmark = pytest.mark.anyio

OLD_KEY = generate_key()
NEW_KEY = generate_key()
SECRET_MARK = "plaintext-marker-7f3a"


def new_record(**state: Any) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        client_info={"name": f"client-{SECRET_MARK}"},
        capabilities={"sampling": {}},
        principal=f"user:{SECRET_MARK}",
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
        ttl=60,
        state=state,
        meta={"note": SECRET_MARK},
    )


def raw_token(backend: Store, record: SessionRecord) -> str:
    """The sealed token a memory backend holds for ``record``."""
    stored = backend._records[record.key]  # type: ignore[attr-defined]
    token = stored.state[ENVELOPE_FIELD]
    assert isinstance(token, str)
    return token


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"


def disk_bytes(directory: Path) -> bytes:
    """Everything SQLite wrote: the database file and any journal or WAL beside it."""
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


# -- the store ---------------------------------------------------------------------


async def test_round_trip_hides_everything_but_the_indexed_columns() -> None:
    backend = MemoryStore()
    store = EncryptedStore(backend, [NEW_KEY])
    created = await store.create("sid", new_record(secret=SECRET_MARK, n=1))
    assert await store.load("sid") == created
    stored = backend._records[created.key]
    assert SECRET_MARK not in repr(stored)
    assert stored.principal is None
    assert (stored.client_info, stored.capabilities, stored.meta) == ({}, {}, {})
    assert stored.protocol_version == "2025-11-25"
    assert raw_token(backend, created).startswith(f"mcpenc1.{key_fingerprint(NEW_KEY)}.")

    updated = await store.update("sid", lambda s: {**s, "n": s["n"] + 1})
    assert updated.state == {"secret": SECRET_MARK, "n": 2}
    assert (await store.update_meta("sid", {"more": 1})).meta == {"note": SECRET_MARK, "more": 1}

    await store.open_stream("sid", StreamState("s1", request_id=3))
    appended = await store.append_events("sid", "s1", [(SECRET_MARK, "message"), ("b\nc", None)])
    assert [e.data for e in appended] == [SECRET_MARK, "b\nc"]
    assert [(e.seq, e.data, e.event) for e in await store.read_events("sid", "s1")] == [
        (1, SECRET_MARK, "message"),
        (2, "b\nc", None),
    ]
    raw_events = await backend.read_events("sid", "s1")
    assert all(e.data.startswith("mcpev1.") for e in raw_events)
    assert all(SECRET_MARK not in e.data for e in raw_events)
    assert [e.event for e in raw_events] == ["message", None]
    page = await store.list_active()
    assert [r.state for r in page.records] == [{"secret": SECRET_MARK, "n": 2}]


async def test_a_key_is_checked_when_the_store_is_built() -> None:
    backend = MemoryStore()
    for bad in (["not a key"], [], ["c2hvcnQ="], [b"\x00" * 31]):
        with pytest.raises(ConfigurationError):
            EncryptedStore(backend, bad)
    with pytest.raises(ConfigurationError, match="single string"):
        EncryptedStore(backend, NEW_KEY)
    with pytest.raises(ConfigurationError, match="repeats"):
        EncryptedStore(backend, [NEW_KEY, NEW_KEY.encode()])
    with pytest.raises(ConfigurationError, match="already encrypted"):
        EncryptedStore(EncryptedStore(backend, [NEW_KEY]), [NEW_KEY])
    raw = os.urandom(32)
    assert EncryptedStore(backend, [raw]).keyring.primary == key_fingerprint(raw)


async def test_middleware_option_wraps_the_store_and_rejects_bad_keys() -> None:
    middleware = SessionMiddleware(build_sdk_app(), store=MemoryStore(), encryption_keys=[NEW_KEY])
    assert isinstance(middleware.store, EncryptedStore)
    for bad in ([], ["nope"], NEW_KEY):
        with pytest.raises(ConfigurationError):
            SessionMiddleware(build_sdk_app(), store=MemoryStore(), encryption_keys=bad)


async def test_missing_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)  # import now fails
    with pytest.raises(MissingExtraError) as info:
        EncryptedStore(MemoryStore(), [NEW_KEY])
    assert (info.value.extra, info.value.module) == ("encryption", "cryptography")


async def test_rotation_old_key_opens_new_key_seals_reencrypt_lets_the_old_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = MemoryStore()
    before = EncryptedStore(backend, [OLD_KEY])
    old = await before.create("old", new_record(v="old"))
    await before.open_stream("old", StreamState("s1"))
    await before.append_event("old", "s1", "sealed under the old era")

    during = EncryptedStore(backend, [NEW_KEY, OLD_KEY])
    loaded = await during.load("old")
    assert loaded is not None
    assert loaded.state == {"v": "old"}
    assert raw_token(backend, old).split(".")[1] == key_fingerprint(OLD_KEY)
    fresh = await during.create("new", new_record(v="new"))
    assert raw_token(backend, fresh).split(".")[1] == key_fingerprint(NEW_KEY)
    # A server still holding only the old key cannot open what the new key sealed.
    with caplog.at_level(logging.WARNING, logger="mcp_session_mw"):
        assert await before.load("new") is None
    assert key_fingerprint(NEW_KEY) in caplog.text

    assert await reencrypt(during) == 1
    assert raw_token(backend, old).split(".")[1] == key_fingerprint(NEW_KEY)
    assert await reencrypt(during) == 0

    after = EncryptedStore(backend, [NEW_KEY])
    reloaded = await after.load("old")
    assert reloaded is not None
    assert reloaded.state == {"v": "old"}
    assert reloaded.version == loaded.version + 1  # a compare-and-swap rewrite
    assert [e.data for e in await after.read_events("old", "s1")] == ["sealed under the old era"]
    assert await before.load("old") is None


async def test_reencrypt_keeps_concurrent_updates() -> None:
    backend = MemoryStore()
    # A server not yet moved to the new key (rotation step 1: it opens the new key's tokens).
    writer = EncryptedStore(backend, [OLD_KEY, NEW_KEY])
    for i in range(30):
        await writer.create(f"s{i}", new_record(n=0))
    rotating = EncryptedStore(backend, [NEW_KEY, OLD_KEY])

    async def bump_all() -> None:
        for i in range(30):
            await writer.update(f"s{i}", lambda s: {"n": s["n"] + 1})

    async with anyio.create_task_group() as tg:
        tg.start_soon(bump_all)
        rewritten = await reencrypt(rotating, page_size=7)
    assert rewritten >= 1
    for i in range(30):
        record = await rotating.load(f"s{i}")
        assert record is not None
        assert record.state == {"n": 1}
    await reencrypt(rotating)
    assert {raw_token(backend, r).split(".")[1] for r in backend._records.values()} <= {
        key_fingerprint(NEW_KEY),
        key_fingerprint(OLD_KEY),  # ``writer`` may have sealed a bump after its page went by
    }


async def test_tampered_or_transplanted_data_does_not_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = MemoryStore()
    store = EncryptedStore(backend, [NEW_KEY])
    a = await store.create("a", new_record(who="a"))
    b = await store.create("b", new_record(who="b"))
    # A record's token copied onto another session: it names its owner.
    backend._records[b.key] = backend._records[b.key].evolve(state=backend._records[a.key].state)
    with caplog.at_level(logging.WARNING, logger="mcp_session_mw"):
        assert await store.load("b") is None
    assert "another session" in caplog.text
    assert b.key[:12] in caplog.text
    # One flipped character: authentication fails.
    token = raw_token(backend, a)
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    backend._records[a.key] = backend._records[a.key].evolve(state={ENVELOPE_FIELD: flipped})
    assert await store.load("a") is None
    assert [r.key for r in (await store.list_active()).records] == []

    c = await store.create("c", new_record())
    d = await store.create("d", new_record())
    for sid in ("c", "d"):
        await store.open_stream(sid, StreamState("s1"))
        await store.open_stream(sid, StreamState("s2"))
    await store.append_event("c", "s1", "for c/s1")
    [sealed] = await backend.read_events("c", "s1")
    # The same ciphertext on another stream, or another session, does not open.
    await backend.append_event("c", "s2", sealed.data)
    await backend.append_event("d", "s1", sealed.data)
    with pytest.raises(CorruptRecordError, match=MSG_EVENTS_UNREADABLE):
        await store.read_events("c", "s2")
    with pytest.raises(CorruptRecordError):
        await store.read_events("d", "s1")
    with pytest.raises(CorruptRecordError):
        await store.wait_events("d", "s1", 0, timeout=0.1)
    assert [e.data for e in await store.read_events("c", "s1")] == ["for c/s1"]
    assert c.key != d.key


async def test_a_session_re_created_elsewhere_is_read_with_its_new_data_key() -> None:
    backend = MemoryStore()
    here = EncryptedStore(backend, [NEW_KEY])
    there = EncryptedStore(backend, [NEW_KEY])
    await here.create("x", new_record())
    await here.open_stream("x", StreamState("s1"))
    await here.append_event("x", "s1", "first life")
    await there.delete("x")
    await there.create("x", new_record())
    await there.open_stream("x", StreamState("s1"))
    await there.append_event("x", "s1", "second life")
    # ``here`` still remembers the first life's data key; it checks the record again.
    assert [e.data for e in await here.read_events("x", "s1")] == ["second life"]


# -- through the middleware, on SQLite ------------------------------------------------------


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, SessionMiddleware]]:
    sdk_app = build_sdk_app()
    middleware = SessionMiddleware(sdk_app, **options)
    try:
        async with sdk_app.router.lifespan_context(sdk_app):
            transport = httpx.ASGITransport(app=middleware)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8000"
            ) as client:
                yield client, middleware
    finally:
        await middleware.close_store()


async def test_tampered_record_is_404_not_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(store=sqlite_url(tmp_path), encryption_keys=[NEW_KEY]) as (client, _):
        session_id = await initialize(client)
        assert await call(client, session_id, "count") == "1"
        with sqlite3.connect(tmp_path / "sessions.db") as db:
            [(key, payload)] = db.execute("SELECT key, payload FROM mcp_session_sessions")
            index = payload.index("mcpenc1.") + 40  # a character inside the Fernet token
            swapped = "A" if payload[index] != "A" else "B"
            db.execute(
                "UPDATE mcp_session_sessions SET payload = ? WHERE key = ?",
                (payload[:index] + swapped + payload[index + 1 :], key),
            )
        with caplog.at_level(logging.WARNING, logger="mcp_session_mw"):
            response = await client.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 5, "method": "ping"},
                headers={**HEADERS, "mcp-session-id": session_id},
            )
        assert_jsonrpc_error(response, 404, MSG_SESSION_NOT_FOUND, 5)
        warnings = [r for r in caplog.records if r.msg == LOG_RECORD_UNREADABLE]
        assert warnings
        assert key[:12] in warnings[0].getMessage()
        assert key_fingerprint(NEW_KEY) in warnings[0].getMessage()


async def test_tampered_event_ends_a_resumed_stream_with_an_error(tmp_path: Path) -> None:
    async with serving(store=sqlite_url(tmp_path), encryption_keys=[NEW_KEY]) as (
        client,
        middleware,
    ):
        session_id = await initialize(client)
        await middleware.store.open_stream(session_id, StreamState(STANDALONE_STREAM))
        await publish(middleware.store, session_id, {"jsonrpc": "2.0", "method": "x/one"})
        with sqlite3.connect(tmp_path / "sessions.db") as db:
            [(data,)] = db.execute("SELECT data FROM mcp_session_events")
            db.execute("UPDATE mcp_session_events SET data = ?", (data[:-3] + "AAA",))
        response = await client.get(
            "/mcp",
            headers={
                "accept": "text/event-stream",
                "mcp-session-id": session_id,
                "last-event-id": f"{STANDALONE_STREAM}.0",
            },
        )
    assert response.status_code == 200
    assert MSG_STREAM_UNREADABLE in response.text
    assert "x/one" not in response.text


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain-control"])
async def test_the_database_file_holds_no_plaintext(tmp_path: Path, encrypted: bool) -> None:
    keys = [NEW_KEY] if encrypted else None
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {"roots": {}},
            "clientInfo": {"name": f"client-{SECRET_MARK}", "version": "1"},
        },
    }
    async with serving(store=sqlite_url(tmp_path), encryption_keys=keys) as (client, middleware):
        session_id = await initialize(client, body)
        assert await call(client, session_id, "count") == "1"
        await middleware.store.update(session_id, {"note": f"state-{SECRET_MARK}"})
        await publish(middleware.store, session_id, {"jsonrpc": "2.0", "method": SECRET_MARK})
    raw = disk_bytes(tmp_path)
    # The control run proves the marker would be found if it were stored in the clear.
    assert (SECRET_MARK.encode() in raw) is not encrypted


# -- command line ---------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_session_mw.encryption", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


async def test_cli_reencrypt_and_exit_codes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    old_store = EncryptedStore(create_store(url), [OLD_KEY])
    async with old_store:
        for i in range(3):
            await old_store.create(f"s{i}", new_record(i=i))
    stranger = EncryptedStore(create_store(url), [generate_key()])
    async with stranger:
        await stranger.create("lost", new_record())

    done = run_cli("reencrypt", "--store", url, "--key", NEW_KEY, "--key", OLD_KEY)
    assert done.returncode == EXIT_UNREADABLE, done.stderr
    assert "resealed 3 session record(s)" in done.stdout
    assert "1 record(s) could not be decrypted" in done.stderr

    again = run_cli("reencrypt", "--store", url, env={"MCP_SESSION_ENCRYPTION_KEYS": NEW_KEY})
    assert again.returncode == EXIT_UNREADABLE
    assert "resealed 0 session record(s)" in again.stdout

    new_store = EncryptedStore(create_store(url), [NEW_KEY])
    async with new_store:
        loaded = await new_store.load("s2")
        assert loaded is not None
        assert loaded.state == {"i": 2}

    assert run_cli("reencrypt", "--store", url).returncode == EXIT_USAGE  # no key at all
    assert run_cli("reencrypt", "--store", url, "--key", "short").returncode == EXIT_USAGE
    assert run_cli("reencrypt", "--key", NEW_KEY, "--store", "nope://x").returncode == EXIT_USAGE
    unreachable = run_cli(
        "reencrypt", "--store", "redis://127.0.0.1:1/0", "--key", NEW_KEY, "--key", OLD_KEY
    )
    assert unreachable.returncode == EXIT_UNREACHABLE, unreachable.stderr


async def test_cli_genkey_and_fingerprint() -> None:
    made = run_cli("genkey")
    assert made.returncode == EXIT_OK
    key = made.stdout.strip()
    EncryptedStore(MemoryStore(), [key])
    shown = run_cli("fingerprint", key)
    assert shown.stdout.strip() == key_fingerprint(key)


def dash_key() -> str:
    """A valid key whose text starts with '-' (as one random key in 64 does)."""
    key = base64.urlsafe_b64encode(b"\xf8" + os.urandom(31)).decode()
    assert key.startswith("-")
    return key


async def test_cli_takes_keys_that_start_with_a_dash(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    old, new = dash_key(), dash_key()
    async with EncryptedStore(create_store(url), [old]) as store:
        await store.create("s", new_record(i=1))
    done = run_cli("reencrypt", "--store", url, "--key", new, "--key", old)
    assert done.returncode == EXIT_OK, done.stderr
    assert "resealed 1 session record(s)" in done.stdout
    async with EncryptedStore(create_store(url), [new]) as store:
        loaded = await store.load("s")
    assert loaded is not None
    assert loaded.state == {"i": 1}
    shown = run_cli("fingerprint", old, new)
    assert shown.returncode == EXIT_OK, shown.stderr
    assert shown.stdout.split() == [key_fingerprint(old), key_fingerprint(new)]
    assert run_cli("reencrypt", "--store", url, "--key").returncode == EXIT_USAGE
