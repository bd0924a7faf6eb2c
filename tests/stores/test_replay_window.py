"""The memory store's replay window: the janitor removes finished streams after it."""

from __future__ import annotations

import pytest

from mcp_session_mw import SessionRecord, StreamState
from mcp_session_mw.stores import MemoryStore

pytestmark = pytest.mark.anyio


class ClockedStore(MemoryStore):
    """A memory store whose clock the test moves."""

    clock = 1_000.0

    def now(self) -> float:
        return self.clock


def record(now: float) -> SessionRecord:
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + 600,
        ttl=600,
    )


async def test_the_janitor_removes_finished_streams_after_the_window() -> None:
    store = ClockedStore()
    store.finished_stream_ttl = 5.0
    await store.create("x", record(store.clock))
    state = StreamState("s1", 1, "p", store.clock + 30)
    await store.write_stream("x", "s1", [("answer", None)], open_as=state, finish=True)
    await store.write_stream("x", "s2", [("more", None)], open_as=StreamState("s2", 2, "p"))
    store.clock += 4.0
    await store.cleanup_expired()
    assert await store.load_stream("x", "s1") is not None  # inside the window
    store.clock += 1.0
    await store.cleanup_expired()
    assert await store.load_stream("x", "s1") is None
    assert await store.stream_expired("x", "s1")
    assert not await store.stream_expired("x", "s2")
    assert not await store.stream_expired("x", "never")
    assert await store.load_stream("x", "s2") is not None  # unfinished: the session's ttl


async def test_a_reopened_stream_leaves_the_window() -> None:
    store = ClockedStore()
    store.finished_stream_ttl = 5.0
    await store.create("x", record(store.clock))
    state = StreamState("s1", 1, "p", store.clock + 30)
    await store.write_stream("x", "s1", [("answer", None)], open_as=state, finish=True)
    await store.open_stream("x", state)
    store.clock += 10.0
    await store.cleanup_expired()
    assert await store.load_stream("x", "s1") is not None


async def test_without_a_window_finished_streams_stay() -> None:
    store = ClockedStore()
    await store.create("x", record(store.clock))
    state = StreamState("s1", 1, "p", store.clock + 30)
    await store.write_stream("x", "s1", [("answer", None)], open_as=state, finish=True)
    store.clock += 500.0
    await store.cleanup_expired()
    assert await store.load_stream("x", "s1") is not None
