"""The store contract, run against every backend in tests/backends.py."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import anyio
import pytest

from mcp_session_mw import (
    ConfigurationError,
    ConflictError,
    InvalidStateError,
    SessionExistsError,
    SessionNotFoundError,
    SessionRecord,
    StreamNotFoundError,
    StreamState,
)
from mcp_session_mw.stores import Store
from mcp_session_mw.stores.base import KEY_CACHE_SIZE

from ..backends import Backend
from ..conftest import StoreFactory

pytestmark = pytest.mark.anyio


def new_record(ttl: float = 60.0, **state: object) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        requested_protocol_version="2025-11-25",
        client_info={"name": "contract", "version": "1"},
        capabilities={"sampling": {}},
        principal=None,
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state=dict(state),
    )


# -- sessions ------------------------------------------------------------------


async def test_create_then_load_round_trips(store: Store) -> None:
    created = await store.create("sid-1", new_record(count=1, nested={"a": [1, "é"]}))
    loaded = await store.load("sid-1")
    assert loaded is not None
    assert loaded == created
    assert loaded.state == {"count": 1, "nested": {"a": [1, "é"]}}
    assert loaded.client_info == {"name": "contract", "version": "1"}
    assert loaded.capabilities == {"sampling": {}}
    assert loaded.version == 1


async def test_key_is_a_digest_never_the_raw_id(store: Store) -> None:
    created = await store.create("raw-session-id", new_record())
    assert created.key == store.key("raw-session-id")
    assert "raw-session-id" not in created.key
    assert len(created.key) == 64


async def test_keys_stay_the_same_past_the_key_cache(store: Store) -> None:
    first = store.key("kept")
    assert first == hashlib.sha256(b"kept").hexdigest() or store._secret is not None
    others = [store.key(f"other-{n}") for n in range(KEY_CACHE_SIZE + 1)]
    assert len(store._keys) <= KEY_CACHE_SIZE  # bounded: idle sessions cost nothing
    assert store.key("kept") == first
    assert others == [store.key(f"other-{n}") for n in range(KEY_CACHE_SIZE + 1)]
    assert len(set(others)) == len(others)


async def test_load_unknown_is_none(store: Store) -> None:
    assert await store.load("never-created") is None


async def test_create_twice_raises(store: Store) -> None:
    await store.create("dup", new_record(v=1))
    with pytest.raises(SessionExistsError):
        await store.create("dup", new_record(v=2))
    loaded = await store.load("dup")
    assert loaded is not None
    assert loaded.state == {"v": 1}


async def test_expired_session_is_absent_everywhere(store: Store) -> None:
    await store.create("short", new_record(ttl=0.3))
    await store.create("long", new_record(ttl=60))
    await anyio.sleep(0.5)
    assert await store.load("short") is None
    assert await store.touch("short") is False
    with pytest.raises(SessionNotFoundError):
        await store.update("short", {"x": 1})
    page = await store.list_active(limit=10)
    assert [r.key for r in page.records] == [store.key("long")]


async def test_touch_slides_expiry(store: Store) -> None:
    await store.create("t", new_record(ttl=1.0))
    before = await store.load("t")
    assert before is not None
    await anyio.sleep(0.6)
    assert await store.touch("t") is True
    await anyio.sleep(0.6)
    after = await store.load("t")
    assert after is not None, "touch did not extend the session"
    assert after.expires_at > before.expires_at
    assert after.last_accessed > before.last_accessed


async def test_touch_with_ttl_changes_ttl(store: Store) -> None:
    await store.create("t2", new_record(ttl=60))
    assert await store.touch("t2", ttl=0.3) is True
    loaded = await store.load("t2")
    assert loaded is not None
    assert loaded.ttl == pytest.approx(0.3)
    await anyio.sleep(0.5)
    assert await store.load("t2") is None


async def test_save_overwrites_and_bumps_version(store: Store) -> None:
    created = await store.create("s", new_record(a=1))
    saved = await store.save("s", created.evolve(state={"b": 2}))
    assert saved.version == created.version + 1
    loaded = await store.load("s")
    assert loaded is not None
    assert loaded.state == {"b": 2}
    assert loaded.version == saved.version


async def test_save_missing_raises(store: Store) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.save("nobody", new_record())


async def test_update_merges_mapping(store: Store) -> None:
    await store.create("u", new_record(a=1, b=2))
    updated = await store.update("u", {"b": 3, "c": 4})
    assert updated.state == {"a": 1, "b": 3, "c": 4}
    assert updated.version == 2
    loaded = await store.load("u")
    assert loaded is not None
    assert loaded.state == updated.state


async def test_update_with_sync_and_async_functions(store: Store) -> None:
    await store.create("f", new_record(n=1))

    async def double(state: dict[str, object]) -> dict[str, object]:
        return {"n": int(state["n"]) * 2}  # type: ignore[call-overload]

    await store.update("f", lambda s: {**s, "n": s["n"] + 1})
    updated = await store.update("f", double)
    assert updated.state == {"n": 4}


async def test_update_rejects_non_json_state_and_keeps_old(store: Store) -> None:
    await store.create("bad", new_record(ok=True))
    with pytest.raises(InvalidStateError):
        await store.update("bad", {"x": object()})
    with pytest.raises(InvalidStateError):
        await store.update("bad", lambda s: ["not", "a", "dict"])  # type: ignore[arg-type]
    loaded = await store.load("bad")
    assert loaded is not None
    assert loaded.state == {"ok": True}
    assert loaded.version == 1


async def test_update_missing_raises(store: Store) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.update("missing", {"a": 1})


async def test_concurrent_increments_from_separate_connections(
    store: Store, store_factory: StoreFactory
) -> None:
    await store.create("counter", new_record(n=0))
    clients = [await store_factory() for _ in range(50)]

    async def bump(client: Store) -> None:
        await client.update("counter", lambda s: {**s, "n": s["n"] + 1})

    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(bump, client)
    loaded = await store.load("counter")
    assert loaded is not None
    assert loaded.state["n"] == 50
    assert loaded.version == 51


async def test_update_gives_up_with_conflict_error(store: Store) -> None:
    await store.create("c", new_record(n=0))

    async def meddle(state: dict[str, object]) -> dict[str, object]:
        # Another writer changes the record between our read and our write.
        await store.save("c", (await store.load("c")).evolve(state={"n": -1}))  # type: ignore[union-attr]
        return {"n": 1}

    with pytest.raises(ConflictError):
        await store.update("c", meddle, retries=3)


async def test_delete_is_idempotent(store: Store) -> None:
    await store.create("d", new_record())
    assert await store.delete("d") is True
    assert await store.load("d") is None
    assert await store.delete("d") is False


async def test_list_active_pages_without_repeats(store: Store) -> None:
    ids = [f"page-{i}" for i in range(25)]
    for sid in ids:
        await store.create(sid, new_record())
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list_active(limit=7, cursor=cursor)
        assert len(page.records) <= 7
        seen.extend(r.key for r in page.records)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(store.key(s) for s in ids)
    assert len(seen) == len(set(seen))
    assert pages >= 4
    assert await store.count_active() == 25


async def test_cleanup_expired_counts_and_removes(store: Store) -> None:
    for i in range(3):
        await store.create(f"gone-{i}", new_record(ttl=0.2))
    await store.create("stays", new_record(ttl=60))
    await anyio.sleep(0.4)
    assert await store.cleanup_expired() == 3
    assert await store.cleanup_expired() == 0
    assert await store.load("stays") is not None


async def test_expired_id_can_be_created_again(store: Store) -> None:
    await store.create("again", new_record(ttl=0.2, old=True))
    await anyio.sleep(0.4)
    created = await store.create("again", new_record(new=True))
    assert created.state == {"new": True}


async def test_hmac_secret_changes_the_key(store: Store) -> None:
    keyed = type(store).__new__(type(store))
    Store.__init__(keyed, secret="server-secret")
    assert keyed.key("abc") != store.key("abc")
    assert len(keyed.key("abc")) == 64


# -- events --------------------------------------------------------------------


def stream(stream_id: str = "s1", request_id: object = 7) -> StreamState:
    return StreamState(
        stream_id=stream_id, request_id=request_id, owner="proc-a", lease_expires=time.time() + 30
    )


async def test_append_and_read_events_in_order(store: Store) -> None:
    await store.create("ev", new_record())
    opened = await store.open_stream("ev", stream())
    assert (opened.first_seq, opened.last_seq, opened.done) == (1, 0, False)
    for i in range(5):
        stored = await store.append_event("ev", "s1", f'{{"n":{i}}}', event="message")
        assert stored.seq == i + 1
    events = await store.read_events("ev", "s1", after_seq=2)
    assert [e.seq for e in events] == [3, 4, 5]
    assert events[0].data == '{"n":2}'
    assert events[0].event == "message"
    assert await store.read_events("ev", "s1", after_seq=5) == []
    assert [e.seq for e in await store.read_events("ev", "s1", 0, limit=2)] == [1, 2]
    state = await store.load_stream("ev", "s1")
    assert state is not None
    assert state.last_seq == 5
    assert state.request_id == 7


async def test_event_data_keeps_newlines_and_unicode(store: Store) -> None:
    await store.create("ev2", new_record())
    await store.open_stream("ev2", stream())
    await store.append_event("ev2", "s1", "line one\nline two ☃", event=None)
    [event] = await store.read_events("ev2", "s1")
    assert event.data == "line one\nline two ☃"
    assert event.event is None


async def test_streams_are_separate(store: Store) -> None:
    await store.create("multi", new_record())
    await store.open_stream("multi", stream("a"))
    await store.open_stream("multi", stream("b", request_id="req-b"))
    await store.append_event("multi", "a", "a1")
    await store.append_event("multi", "b", "b1")
    await store.append_event("multi", "a", "a2")
    assert [e.data for e in await store.read_events("multi", "a")] == ["a1", "a2"]
    assert [(e.seq, e.data) for e in await store.read_events("multi", "b")] == [(1, "b1")]


async def test_events_of_other_sessions_are_invisible(store: Store) -> None:
    await store.create("one", new_record())
    await store.create("two", new_record())
    await store.open_stream("one", stream("same"))
    await store.append_event("one", "same", "secret")
    assert await store.read_events("two", "same") == []
    assert await store.load_stream("two", "same") is None


async def test_append_needs_session_and_stream(store: Store) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.append_event("ghost", "s1", "x")
    with pytest.raises(SessionNotFoundError):
        await store.open_stream("ghost", stream())
    await store.create("real", new_record())
    with pytest.raises(StreamNotFoundError):
        await store.append_event("real", "never-opened", "x")


async def test_max_events_trims_oldest(store: Store) -> None:
    await store.create("trim", new_record())
    await store.open_stream("trim", stream())
    for i in range(10):
        await store.append_event("trim", "s1", str(i), max_events=4)
    events = await store.read_events("trim", "s1")
    assert [e.seq for e in events] == [7, 8, 9, 10]
    state = await store.load_stream("trim", "s1")
    assert state is not None
    assert (state.first_seq, state.last_seq) == (7, 10)


async def test_reopen_keeps_events_and_takes_over(store: Store) -> None:
    await store.create("take", new_record())
    await store.open_stream("take", stream())
    await store.append_event("take", "s1", "x")
    await store.finish_stream("take", "s1")
    again = await store.open_stream(
        "take", StreamState(stream_id="s1", request_id=7, owner="proc-b", lease_expires=1.0)
    )
    assert again.owner == "proc-b"
    assert again.last_seq == 1
    assert not again.done
    [event] = await store.read_events("take", "s1")
    assert event.data == "x"


async def test_renew_and_finish_stream(store: Store) -> None:
    await store.create("lease", new_record())
    await store.open_stream("lease", stream())
    await store.renew_stream("lease", "s1", 12345.5)
    await store.finish_stream("lease", "s1")
    state = await store.load_stream("lease", "s1")
    assert state is not None
    assert state.lease_expires == pytest.approx(12345.5)
    assert state.done is True


async def test_delete_takes_events_with_it(store: Store) -> None:
    await store.create("del-ev", new_record())
    await store.open_stream("del-ev", stream())
    await store.append_event("del-ev", "s1", "x")
    await store.delete("del-ev")
    await store.create("del-ev", new_record())
    assert await store.load_stream("del-ev", "s1") is None
    assert await store.read_events("del-ev", "s1") == []


async def test_cleanup_takes_events_of_expired_sessions(store: Store) -> None:
    await store.create("exp-ev", new_record(ttl=0.2))
    await store.open_stream("exp-ev", stream())
    await store.append_event("exp-ev", "s1", "x")
    await anyio.sleep(0.4)
    assert await store.cleanup_expired() == 1
    await store.create("exp-ev", new_record())
    assert await store.read_events("exp-ev", "s1") == []


async def test_wait_events_returns_when_an_event_lands(
    store: Store, store_factory: StoreFactory
) -> None:
    producer = await store_factory()
    await store.create("live", new_record())
    await store.open_stream("live", stream())
    got: list[str] = []

    async def follow() -> None:
        events = await store.wait_events("live", "s1", after_seq=0, timeout=10)
        got.extend(e.data for e in events)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await anyio.sleep(0.2)
        assert got == []
        await producer.append_event("live", "s1", "hello")
    assert got == ["hello"]


async def test_wait_events_times_out_empty(store: Store) -> None:
    await store.create("quiet", new_record())
    await store.open_stream("quiet", stream())
    with anyio.fail_after(5):
        assert await store.wait_events("quiet", "s1", after_seq=0, timeout=0.3) == []


async def test_append_events_stores_a_batch_in_order(store: Store) -> None:
    await store.create("batch", new_record())
    await store.open_stream("batch", stream())
    await store.append_event("batch", "s1", "first")
    stored = await store.append_events(
        "batch", "s1", [("a", "message"), ("b\nc", None), ("", "message"), ("é", "x")]
    )
    assert [(e.seq, e.data, e.event) for e in stored] == [
        (2, "a", "message"),
        (3, "b\nc", None),
        (4, "", "message"),
        (5, "é", "x"),
    ]
    assert [e.data for e in await store.read_events("batch", "s1")] == [
        "first",
        "a",
        "b\nc",
        "",
        "é",
    ]
    state = await store.load_stream("batch", "s1")
    assert state is not None
    assert state.last_seq == 5
    assert await store.append_events("batch", "s1", []) == []


async def test_append_events_trims_and_refuses_like_append_event(store: Store) -> None:
    await store.create("batch-trim", new_record())
    await store.open_stream("batch-trim", stream())
    await store.append_events("batch-trim", "s1", [(str(i), None) for i in range(6)], max_events=4)
    await store.append_events("batch-trim", "s1", [("6", None), ("7", None)], max_events=4)
    events = await store.read_events("batch-trim", "s1")
    assert [e.data for e in events] == ["4", "5", "6", "7"]
    state = await store.load_stream("batch-trim", "s1")
    assert state is not None
    assert (state.first_seq, state.last_seq) == (5, 8)
    with pytest.raises(StreamNotFoundError):
        await store.append_events("batch-trim", "nope", [("x", None)])
    with pytest.raises(SessionNotFoundError):
        await store.append_events("ghost", "s1", [("x", None)])


async def test_write_stream_opens_appends_and_finishes_in_one_call(store: Store) -> None:
    await store.create("write", new_record())
    opening = replace(stream(), owner="me", lease_expires=store.now() + 30)
    stored = await store.write_stream(
        "write", "s1", [("a", "message"), ("b", None)], open_as=opening, finish=True
    )
    assert [(e.stream_id, e.seq, e.data, e.event) for e in stored] == [
        ("s1", 1, "a", "message"),
        ("s1", 2, "b", None),
    ]
    state = await store.load_stream("write", "s1")
    assert state is not None
    assert (state.first_seq, state.last_seq, state.done) == (1, 2, True)
    assert (state.owner, state.request_id) == ("me", 7)
    assert [e.data for e in await store.read_events("write", "s1")] == ["a", "b"]
    # A finished stream can be taken over (open again) and keeps its events.
    more = await store.write_stream("write", "s1", [("c", None)], open_as=stream(request_id=8))
    assert [e.seq for e in more] == [3]
    state = await store.load_stream("write", "s1")
    assert state is not None
    assert (state.last_seq, state.done, state.request_id) == (3, False, 8)
    # A second stream of the session, written whole.
    [answer] = await store.write_stream(
        "write", "s2", [("z", "message")], open_as=stream("s2", request_id=9), finish=True
    )
    assert (answer.stream_id, answer.seq, answer.data, answer.event) == ("s2", 1, "z", "message")
    second = await store.load_stream("write", "s2")
    assert second is not None
    assert (second.first_seq, second.last_seq, second.done, second.request_id) == (1, 1, True, 9)
    assert [e.data for e in await store.read_events("write", "s2")] == ["z"]


async def test_write_stream_parts_alone(store: Store) -> None:
    await store.create("parts", new_record())
    assert await store.write_stream("parts", "s1", [], open_as=stream()) == []
    opened = await store.load_stream("parts", "s1")
    assert opened is not None
    assert not opened.done
    assert opened.last_seq == 0
    [one] = await store.write_stream("parts", "s1", [("x", None)])
    assert one.seq == 1
    assert await store.write_stream("parts", "s1", [], finish=True) == []
    done = await store.load_stream("parts", "s1")
    assert done is not None
    assert done.done
    assert done.last_seq == 1
    trimmed = await store.write_stream(
        "parts", "s2", [(str(i), None) for i in range(5)], open_as=stream("s2"), max_events=3
    )
    assert [e.seq for e in trimmed] == [1, 2, 3, 4, 5]
    assert [e.data for e in await store.read_events("parts", "s2")] == ["2", "3", "4"]
    state = await store.load_stream("parts", "s2")
    assert state is not None
    assert (state.first_seq, state.last_seq) == (3, 5)


async def test_write_stream_refuses_without_storing_anything(store: Store) -> None:
    await store.create("refused", new_record())
    with pytest.raises(StreamNotFoundError):
        await store.write_stream("refused", "nope", [("x", None)], finish=True)
    with pytest.raises(SessionNotFoundError):
        await store.write_stream("ghost", "s1", [("x", None)], open_as=stream(), finish=True)
    assert await store.load_stream("ghost", "s1") is None
    assert await store.load_stream("refused", "nope") is None
    with pytest.raises(ValueError, match="open_as"):
        await store.write_stream("refused", "s1", [], open_as=stream("other"))


async def test_delete_streams_removes_those_streams_in_one_call(store: Store) -> None:
    await store.create("many", new_record())
    for stream_id in ("a", "b", "c"):
        await store.write_stream("many", stream_id, [("x", None)], open_as=stream(stream_id))
    assert await store.delete_streams("many", ["a", "c", "nope", "a"]) == 2
    assert await store.load_stream("many", "a") is None
    assert await store.load_stream("many", "c") is None
    assert await store.read_events("many", "a") == []
    kept = await store.load_stream("many", "b")
    assert kept is not None
    assert [e.data for e in await store.read_events("many", "b")] == ["x"]
    assert await store.delete_streams("many", []) == 0
    assert await store.delete_streams("ghost", ["b"]) == 0


async def _open_all(store: Store, session_id: str, stream_ids: list[str]) -> None:
    for stream_id in stream_ids:
        await store.write_stream(session_id, stream_id, [("x", None)], open_as=stream(stream_id))


async def test_record_streams_keeps_the_newest_and_removes_the_rest(store: Store) -> None:
    await store.create("cap", new_record())
    await _open_all(store, "cap", ["a", "b", "c", "d", "e", "get"])
    assert await store.record_streams("cap", ["a", "b"], keep=3) == []
    assert await store.record_streams("cap", ["c", "d", "b", "d"], keep=3) == ["a"]
    assert await store.load_stream("cap", "a") is None
    assert await store.read_events("cap", "a") == []
    for kept in ("b", "c", "d"):
        assert [e.data for e in await store.read_events("cap", kept)] == ["x"]
    # Noting a stream again does not move it: b is still the oldest.
    assert await store.record_streams("cap", ["b", "e"], keep=2) == ["b", "c"]
    assert await store.load_stream("cap", "b") is None
    assert await store.load_stream("cap", "c") is None
    # Never noted, never removed.
    assert await store.load_stream("cap", "get") is not None
    assert await store.record_streams("cap", [], keep=2) == []


async def test_record_streams_list_is_in_meta_only_for_stores_without_their_own(
    store: Store,
) -> None:
    await store.create("cap-meta", new_record())
    await _open_all(store, "cap-meta", ["a", "b"])
    assert await store.record_streams("cap-meta", ["a", "b"], keep=1) == ["a"]
    record = await store.load("cap-meta")  # through a cache, if there is one
    assert record is not None
    expected = None if store.records_streams_natively else ["b"]
    assert record.meta.get("streams") == expected


async def test_record_streams_drops_a_noted_stream_already_gone(store: Store) -> None:
    await store.create("cap-gone", new_record())
    await _open_all(store, "cap-gone", ["a", "b"])
    await store.record_streams("cap-gone", ["a", "b"], keep=5)
    assert await store.delete_stream("cap-gone", "a")
    await _open_all(store, "cap-gone", ["c"])
    assert await store.record_streams("cap-gone", ["c"], keep=1) == ["a", "b"]
    assert await store.load_stream("cap-gone", "c") is not None


async def test_record_streams_of_a_missing_session(store: Store) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.record_streams("ghost", ["a"], keep=1)


async def test_a_new_session_under_an_old_id_starts_with_nothing_noted(store: Store) -> None:
    await store.create("cap-again", new_record())
    await _open_all(store, "cap-again", ["a"])
    await store.record_streams("cap-again", ["a"], keep=5)
    assert await store.delete("cap-again")
    await store.create("cap-again", new_record())
    await _open_all(store, "cap-again", ["b", "c"])
    assert await store.record_streams("cap-again", ["b", "c"], keep=1) == ["b"]


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
async def test_record_streams_refuses_a_bad_keep(store: Store, keep: object) -> None:
    await store.create("cap-bad", new_record())
    with pytest.raises(ValueError, match="keep"):
        await store.record_streams("cap-bad", ["a"], keep=keep)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a b", "a\nb", "a\tb", 7])
async def test_record_streams_refuses_a_bad_stream_id(store: Store, bad: object) -> None:
    await store.create("cap-bad-id", new_record())
    await _open_all(store, "cap-bad-id", ["a"])
    with pytest.raises(ValueError, match="stream id"):
        await store.record_streams("cap-bad-id", ["a", bad], keep=1)  # type: ignore[list-item]
    assert await store.load_stream("cap-bad-id", "a") is not None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
async def test_a_bad_max_events_is_refused_and_stores_nothing(store: Store, bad: object) -> None:
    await store.create("bad-max", new_record())
    await store.open_stream("bad-max", stream())
    with pytest.raises(ValueError, match="max_events"):
        await store.append_event("bad-max", "s1", "x", max_events=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_events"):
        await store.append_events("bad-max", "s1", [("x", None)], max_events=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_events"):
        await store.write_stream("bad-max", "s1", [("x", None)], max_events=bad)  # type: ignore[arg-type]
    assert await store.read_events("bad-max", "s1") == []


async def test_concurrent_batches_get_distinct_consecutive_seqs(
    store: Store, store_factory: StoreFactory
) -> None:
    await store.create("batch-race", new_record())
    await store.open_stream("batch-race", stream())
    writers = [await store_factory() for _ in range(4)]

    async def write(client: Store, n: int) -> None:
        for i in range(5):
            await client.append_events(
                "batch-race", "s1", [(f"{n}-{i}-{j}", None) for j in range(3)]
            )

    async with anyio.create_task_group() as tg:
        for n, client in enumerate(writers):
            tg.start_soon(write, client, n)
    events = await store.read_events("batch-race", "s1", limit=1000)
    assert [e.seq for e in events] == list(range(1, 61))
    assert len({e.data for e in events}) == 60


async def test_delete_stream_removes_only_that_stream(store: Store) -> None:
    await store.create("ds", new_record())
    await store.open_stream("ds", stream("keep"))
    await store.open_stream("ds", stream("drop"))
    await store.append_event("ds", "keep", "k")
    await store.append_event("ds", "drop", "d")
    assert await store.delete_stream("ds", "drop") is True
    assert await store.delete_stream("ds", "drop") is False
    assert await store.load_stream("ds", "drop") is None
    assert await store.read_events("ds", "drop") == []
    assert [e.data for e in await store.read_events("ds", "keep")] == ["k"]
    await store.open_stream("ds", stream("drop"))
    [event] = [await store.append_event("ds", "drop", "again")]
    assert event.seq == 1


# -- by key (operators' tools) ----------------------------------------------------


async def test_load_and_delete_by_key(store: Store) -> None:
    created = await store.create("by-key", new_record(n=1))
    other = await store.create("kept", new_record(n=2))
    assert await store.load_by_key(created.key) == created
    assert await store.load_by_key(store.key("never-created")) is None
    assert await store.delete_by_key(created.key) is True
    assert await store.delete_by_key(created.key) is False
    assert await store.load("by-key") is None
    assert await store.load("kept") == other


async def test_by_key_refuses_what_is_not_a_digest(store: Store) -> None:
    created = await store.create("shape", new_record())
    for bad in ("shape", created.key.upper(), created.key[:-1], created.key + "0", ""):
        assert await store.load_by_key(bad) is None
        assert await store.delete_by_key(bad) is False
    assert await store.load("shape") is not None


async def test_load_by_key_hides_expired(store: Store) -> None:
    created = await store.create("short", new_record(ttl=0.2))
    await anyio.sleep(0.3)
    assert await store.load_by_key(created.key) is None


# -- named locks -------------------------------------------------------------------


async def test_lock_is_exclusive_across_stores_and_not_reentrant(
    store_factory: StoreFactory,
) -> None:
    first, second = await store_factory(), await store_factory()
    assert await first.try_lock("sweep", 30) is True
    assert await second.try_lock("sweep", 30) is False
    assert await first.try_lock("sweep", 30) is False  # not re-entrant
    assert await second.try_lock("other-job", 30) is True


async def test_unlock_frees_the_lock_only_for_its_holder(
    store_factory: StoreFactory, backend: Backend
) -> None:
    first, second = await store_factory(), await store_factory()
    assert await first.try_lock("sweep", 30) is True
    if not backend.shared_instance:  # memory: both names are one store object
        assert await second.unlock("sweep") is False
        assert await second.try_lock("sweep", 30) is False
    assert await first.unlock("sweep") is True
    assert await first.unlock("sweep") is False
    assert await second.try_lock("sweep", 30) is True


async def test_lock_lease_runs_out(store_factory: StoreFactory, backend: Backend) -> None:
    first, second = await store_factory(), await store_factory()
    assert await first.try_lock("sweep", 0.3) is True
    await anyio.sleep(0.5)
    assert await second.try_lock("sweep", 30) is True
    if not backend.shared_instance:
        assert await first.unlock("sweep") is False  # its lease ran out; the new one stays
        assert await first.try_lock("sweep", 30) is False


async def test_racing_try_locks_have_one_winner(store_factory: StoreFactory) -> None:
    contenders = [await store_factory() for _ in range(6)]
    results: list[bool] = []

    async def contend(candidate: Store) -> None:
        results.append(await candidate.try_lock("race", 30))

    async with anyio.create_task_group() as tg:
        for candidate in contenders:
            tg.start_soon(contend, candidate)
    assert sorted(results) == [False] * 5 + [True]


async def test_locks_are_not_sessions(store: Store) -> None:
    assert await store.try_lock("sweep", 30) is True
    assert (await store.list_active()).records == []
    assert await store.count_active() == 0
    assert await store.cleanup_expired() == 0
    assert await store.try_lock("sweep", 30) is False  # cleanup left the lock alone


async def test_lock_names_and_ttls_are_checked(store: Store) -> None:
    for bad_name in ("", "has space", "a{b}", "x" * 65, "é"):
        with pytest.raises(ConfigurationError, match="lock name"):
            await store.try_lock(bad_name, 30)
        with pytest.raises(ConfigurationError, match="lock name"):
            await store.unlock(bad_name)
    for bad_ttl in (0, -1, float("nan"), True):
        with pytest.raises(ConfigurationError, match="ttl"):
            await store.try_lock("sweep", bad_ttl)
