"""The store API for copying sessions between stores, on every backend: list streams by key,
read events by key, restore a record, restore a stream keeping every seq."""

from __future__ import annotations

import pytest

from mcp_session_mw import SessionNotFoundError, StreamState
from mcp_session_mw.records import StoredEvent
from mcp_session_mw.stores import MemoryStore, Store
from mcp_session_mw.stores.base import RESTORE_CHUNK

from .test_contract import new_record

pytestmark = pytest.mark.anyio


async def test_list_streams_by_key_finds_every_stream(store: Store) -> None:
    created = await store.create("copy-a", new_record())
    await store.create("copy-b", new_record())
    await store.write_stream("copy-a", "get", [("g", "message")], open_as=StreamState("get"))
    await store.write_stream(
        "copy-a",
        "r1",
        [("one", "message"), ("two", None)],
        open_as=StreamState("r1", request_id=7, owner="me", lease_expires=5.0),
        finish=True,
    )
    await store.write_stream("copy-b", "other", [("x", None)], open_as=StreamState("other"))
    states = {s.stream_id: s for s in await store.list_streams_by_key(created.key)}
    assert set(states) == {"get", "r1"}
    assert states["r1"] == StreamState("r1", 7, "me", 5.0, first_seq=1, last_seq=2, done=True)
    events = await store.read_events_by_key(created.key, "r1")
    assert [(e.seq, e.data, e.event) for e in events] == [(1, "one", "message"), (2, "two", None)]
    assert await store.read_events_by_key(created.key, "r1", after_seq=1, limit=5) == events[1:]
    assert await store.list_streams_by_key("not a key") == []
    assert await store.list_streams_by_key("0" * 64) == []
    await store.delete("copy-a")
    assert await store.list_streams_by_key(created.key) == []


async def test_restore_inserts_under_the_records_own_key_once(store: Store) -> None:
    source = MemoryStore()
    original = await source.create("restored", new_record(counter=3))
    assert await store.restore(original)
    assert not await store.restore(original)
    loaded = await store.load("restored")  # the raw id finds it: same hashing
    assert loaded is not None
    assert (loaded.state, loaded.version) == ({"counter": 3}, original.version)
    with pytest.raises(ValueError, match="hex digest"):
        await store.restore(original.evolve(key="raw-id"))


async def test_restore_stream_keeps_every_seq_and_writes_nothing_twice(store: Store) -> None:
    source = MemoryStore()
    record = await source.create("seqs", new_record())
    state = StreamState("s", request_id="q", owner="old", lease_expires=9.0)
    await source.write_stream(
        "seqs", "s", [(f"e{n}", "message") for n in range(1, 8)], open_as=state
    )
    await source.append_event("seqs", "s", "e8", max_events=3)  # keeps 6, 7, 8
    [kept] = await source.list_streams_by_key(record.key)
    events = await source.read_events_by_key(record.key, "s")
    assert [e.seq for e in events] == [6, 7, 8]

    assert await store.restore(record)
    assert await store.restore_stream(record.key, kept, events[:2]) == 2
    assert await store.restore_stream(record.key, kept, events) == 1  # only 8 is new
    assert await store.restore_stream(record.key, kept, events) == 0
    copied = await store.read_events_by_key(record.key, "s")
    assert [(e.seq, e.data) for e in copied] == [(6, "e6"), (7, "e7"), (8, "e8")]
    [restored] = await store.list_streams_by_key(record.key)
    assert (restored.first_seq, restored.last_seq, restored.done) == (6, 8, False)
    assert (restored.request_id, restored.owner) == ("q", "old")
    # The next event goes on from the source's numbering.
    assert (await store.append_event("seqs", "s", "e9")).seq == 9
    assert await store.restore_stream(record.key, StreamState("s", done=True), []) == 0
    state_after = await store.load_stream("seqs", "s")
    assert state_after is not None
    assert state_after.done


async def test_restore_stream_skips_a_long_trimmed_prefix_in_chunks(store: Store) -> None:
    record = await MemoryStore().create("long", new_record())
    assert await store.restore(record)
    far = RESTORE_CHUNK * 2 + 5
    events = [StoredEvent("g", far + n, f"late{n}", "message") for n in range(2)]
    assert await store.restore_stream(record.key, StreamState("g"), events) == 2
    copied = await store.read_events_by_key(record.key, "g")
    assert [(e.seq, e.data) for e in copied] == [(far, "late0"), (far + 1, "late1")]


async def test_restore_stream_needs_a_live_session(store: Store) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.restore_stream("1" * 64, StreamState("s"), [StoredEvent("s", 1, "x")])
