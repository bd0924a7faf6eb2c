"""Copying sessions between stores: migrate (any pair), dump/load, idempotence, resumption."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from mcp_session_mw import SessionRecord, StreamState
from mcp_session_mw.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from mcp_session_mw.migrate import (
    MSG_BAD_LINE,
    MSG_OTHER_HASHING,
    BadDumpError,
    StoreSource,
    Tally,
    copy_session,
    dump_line,
    migrate,
    parse_line,
)
from mcp_session_mw.stores import MemoryStore, Store

from .test_cli import run_cli

pytestmark = pytest.mark.anyio


def _record(ttl: float = 600.0, **state: object) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        requested_protocol_version="2025-06-18",
        client_info={"name": "migrate-test", "version": "1"},
        capabilities={"roots": {}},
        principal="alice",
        created_at=now - 5,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state=dict(state),
        meta={"setup": ["logging/setLevel"]},
    )


async def _seed(store: Store) -> list[str]:
    """Three sessions: streams of several shapes (trimmed, finished, empty, many events)."""
    await store.create("mig-a", _record(calls=2))
    await store.write_stream(
        "mig-a",
        "r1",
        [("", None), ('{"id":1}', "message")],
        open_as=StreamState("r1", request_id=1, owner="inst", lease_expires=12.5),
        finish=True,
    )
    items: list[tuple[str, str | None]] = [(f"n{n}", "message") for n in range(1, 2501)]
    await store.write_stream("mig-a", "get", items, open_as=StreamState("get"))
    await store.append_event("mig-a", "get", "n2501", event="message", max_events=2000)
    await store.create("mig-b", _record(other=True))
    await store.open_stream("mig-b", StreamState("empty"))
    await store.create("mig-c", _record())
    return ["mig-a", "mig-b", "mig-c"]


async def _snapshot(store: Store, ids: list[str]) -> dict[str, object]:
    """Everything a client could notice of the sessions: record fields, streams, events."""
    seen: dict[str, object] = {}
    for session_id in ids:
        record = await store.load(session_id)
        assert record is not None, session_id
        streams = {}
        for state in await store.list_streams_by_key(record.key):
            events = await store.read_events_by_key(record.key, state.stream_id, 0, 5000)
            streams[state.stream_id] = (state, [(e.seq, e.data, e.event) for e in events])
        seen[session_id] = (record.evolve(version=0), streams)
    return seen


@pytest.mark.parametrize("direction", ["from", "to"])
async def test_migrate_copies_everything_once_between_any_backend_and_memory(
    store: Store, direction: str
) -> None:
    other = MemoryStore()
    source, target = (store, other) if direction == "from" else (other, store)
    ids = await _seed(source)
    dry = await migrate(source, target, dry_run=True)
    assert dry == Tally(sessions=3, streams=3, events=2 + 2000)
    assert await target.count_active() == 0
    first = await migrate(source, target)
    assert first == Tally(sessions=3, streams=3, events=2 + 2000)
    assert await _snapshot(target, ids) == await _snapshot(source, ids)
    again = await migrate(source, target)
    assert again == Tally(present=3)
    # New events on the source since: only they are copied.
    await source.append_event("mig-a", "get", "late", event="message")
    assert await migrate(source, target) == Tally(present=3, streams=1, events=1)
    assert await _snapshot(target, ids) == await _snapshot(source, ids)
    # The copied streams go on from the source's numbering.
    assert (await target.append_event("mig-a", "get", "next")).seq == 2503


async def test_a_copy_stopped_half_way_is_carried_on() -> None:
    source, target = MemoryStore(), MemoryStore()
    ids = await _seed(source)
    record = await source.load("mig-a")
    assert record is not None
    # What a run stopped in the middle of mig-a's GET stream leaves behind.
    assert await target.restore(record)
    [get] = [s for s in await source.list_streams_by_key(record.key) if s.stream_id == "get"]
    first_batch = await source.read_events_by_key(record.key, "get", 0, 700)
    await target.restore_stream(record.key, get, first_batch)
    tally = await migrate(source, target)
    assert tally == Tally(sessions=2, present=1, streams=3, events=2 + 1300)
    assert await _snapshot(target, ids) == await _snapshot(source, ids)


async def test_a_session_that_ends_during_the_copy_is_counted_gone() -> None:
    source, target = MemoryStore(), MemoryStore()
    await _seed(source)
    record = await source.load("mig-a")
    assert record is not None

    class Vanishing(StoreSource):
        async def streams(self) -> list[StreamState]:
            await target.delete_by_key(self.key)  # ended on the target meanwhile
            return await super().streams()

    tally = Tally()
    await copy_session(target, record, Vanishing(source, record.key), tally)
    assert (tally.sessions, tally.gone) == (1, 1)


async def test_dump_lines_load_back_to_the_same_sessions(store: Store) -> None:
    source = MemoryStore()
    ids = await _seed(source)
    tally = Tally()
    for session_id in ids:
        record = await source.load(session_id)
        assert record is not None
        line = await dump_line(source, record)
        assert "\n" not in line
        loaded_record, loaded = parse_line(line, 1)
        assert loaded_record == record
        await copy_session(store, loaded_record, loaded, tally)
    assert tally == Tally(sessions=3, streams=3, events=2002)
    assert await _snapshot(store, ids) == await _snapshot(source, ids)


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        json.dumps({"format": "other/9", "record": {}, "streams": []}),
        json.dumps({"format": "mcp-session-mw/1", "record": {"key": "raw"}, "streams": []}),
        json.dumps({"format": "mcp-session-mw/1", "record": {"bogus": 1}, "streams": []}),
    ],
)
def test_a_bad_dump_line_is_refused_with_its_number(line: str) -> None:
    with pytest.raises(BadDumpError, match=r"^line 7 is not a session dump"):
        parse_line(line, 7)


async def test_non_consecutive_events_are_refused() -> None:
    source = MemoryStore()
    await _seed(source)
    record = await source.load("mig-a")
    assert record is not None
    doc = json.loads(await dump_line(source, record))
    doc["streams"][0]["events"][1][0] += 5
    with pytest.raises(BadDumpError, match="not consecutive"):
        parse_line(json.dumps(doc), 1)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    import argparse

    from mcp_session_mw.cli import build_parser, store_from_args
    from mcp_session_mw.migrate import _migrate_command

    source = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    made = store_from_args(argparse.Namespace(store=source, store_option=[], table_prefix=None))
    await made.open()
    await _seed(made)
    await made.close()
    outputs = []
    for out in (Terminal(), io.StringIO()):
        args = build_parser().parse_args(["migrate", "--from", source, "--to", target])
        assert await _migrate_command(args, out, store_from_args) == EXIT_OK
        outputs.append(out.getvalue())
    on_tty, piped = outputs
    assert f"\r[{'#' * 30}] 3/3 sessions\n" in on_tty
    assert on_tty.endswith(
        "copied 3 session(s), 0 already there, 0 gone meanwhile; "
        "3 stream(s) and 2002 event(s) copied\n"
    )
    assert "\r" not in piped
    assert piped.startswith("copied 0 session(s), 3 already there")


def test_cli_migrate_dump_load(tmp_path: Path) -> None:
    source = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    import anyio

    from mcp_session_mw import create_store

    async def seed() -> None:
        store = create_store(source)
        await store.open()
        await _seed(store)
        await store.close()

    anyio.run(seed)
    dry = run_cli("migrate", "--from", source, "--to", target, "--dry-run", "--json")
    assert dry.code == EXIT_OK, dry.err
    assert dry.json() == {
        "dry_run": True,
        "sessions": 3,
        "present": 0,
        "gone": 0,
        "streams": 3,
        "events": 2002,
    }
    dump = run_cli("dump", "--store", source)
    assert dump.code == EXIT_OK, dump.err
    lines = dump.out.splitlines()
    assert len(lines) == 3
    dump_file = tmp_path / "sessions.jsonl"
    dump_file.write_text(dump.out)
    loaded = run_cli("load", "--store", target, "--input", str(dump_file), "--json")
    assert loaded.code == EXIT_OK, loaded.err
    assert loaded.json() == {
        "dry_run": False,
        "sessions": 3,
        "present": 0,
        "gone": 0,
        "streams": 3,
        "events": 2002,
    }
    moved = run_cli("migrate", "--from", source, "--to", target, "--json")
    assert moved.json() == {
        "dry_run": False,
        "sessions": 0,
        "present": 3,
        "gone": 0,
        "streams": 0,
        "events": 0,
    }
    one = run_cli("dump", "mig-b", "--store", target)
    assert one.code == EXIT_OK
    assert [json.loads(line)["record"]["state"] for line in one.out.splitlines()] == [
        {"other": True}
    ]
    assert run_cli("dump", "nobody", "--store", target).code == EXIT_NOT_FOUND
    assert run_cli("migrate", "--from", source, "--to", target, "--store", source).code == 2
    other = run_cli("migrate", "--from", source, "--to", target, "--to-option", "secret=s3")
    assert (other.code, MSG_OTHER_HASHING in other.err) == (EXIT_USAGE, True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{\n")
    refused = run_cli("load", "--store", target, "--input", str(bad))
    assert refused.code == EXIT_USAGE
    assert MSG_BAD_LINE.split(" is")[0].format(line=2) in refused.err
