"""Durable SSE in process: the official SDK app behind the middleware, driven by hand.

httpx's ASGITransport buffers a whole response, so the requests whose timing
matters (a client that leaves mid-stream, a cut connection, a live follow) are
driven straight through the ASGI callable by :class:`Wire`, which hands the
test each SSE event as the middleware sends it and can play a client that
leaves. The tool ``stream`` is paced by the test (:class:`Pacer`), so "the tool
is still running" is a fact the test arranges, not a timing guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup
from mcp.server.mcpserver import Context, MCPServer
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_session_mw import (
    MemoryStore,
    SessionMiddleware,
    SessionRecord,
    Store,
    StoredEvent,
    StreamState,
    current_session,
)
from mcp_session_mw.jsonrpc import MSG_BAD_EVENT_ID
from mcp_session_mw.streams import (
    EVENTS_LOST,
    MSG_EVENTS_LOST,
    MSG_NO_RESPONSE,
    MSG_STREAM_ORPHANED,
    STREAM_ORPHANED,
    StreamOptions,
    follow_stream,
    publish,
)

from .asgi_lifespan import lifespan
from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

NEW = "2025-11-25"
"""The first revision whose clients get a priming event."""
OLD = "2025-06-18"
STREAM_ID = re.compile(r"[0-9a-f]{16}")
EVENT_ID = re.compile(r"(?P<stream>[0-9a-f]{16}|get)\.(?P<seq>0|[1-9][0-9]*)")
TIMEOUT = 10.0
"""Bounds a hang; no test here waits on it to pass."""


# -- the app: an SDK server whose streaming tool the test paces ---------------------------


class Pacer:
    """Lets the test decide how far the tool may go: step k waits until k is allowed."""

    def __init__(self) -> None:
        self.allowed = 1 << 30
        self._changed = anyio.Event()
        self.finished = anyio.Event()

    def allow(self, steps: int) -> None:
        self.allowed = steps
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, step: int) -> None:
        while step > self.allowed:
            await self._changed.wait()


def build_sdk_app(pacer: Pacer, *, stateless: bool) -> Starlette:
    server = MCPServer("streams")

    @server.tool()
    async def stream(n: int, ctx: Context, cut_after: int | None = None) -> str:
        for step in range(1, n + 1):
            await pacer.wait_for(step)
            await ctx.report_progress(step, n, f"step {step}")
            if step == cut_after:
                await current_session().close_sse_streams()
        pacer.finished.set()
        return f"streamed {n}"

    @server.tool()
    async def announce(text: str) -> str:
        await current_session().notify("notifications/message", {"level": "info", "data": text})
        return "announced"

    return server.streamable_http_app(stateless_http=stateless)


class AppSpy:
    """Passes everything through and records the types of what the app received.

    A disconnect the app hears once its own response is complete (what any
    server tells it then) is recorded as ``http.disconnect (after the response)``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        complete = False

        async def spy_receive() -> Message:
            message = await receive()
            kind = message["type"]
            if kind == "http.disconnect" and complete:
                kind += " (after the response)"
            self.received.append(kind)
            return message

        async def spy_send(message: Message) -> None:
            nonlocal complete
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True

        await self.app(scope, spy_receive, spy_send)


@dataclass
class Server:
    middleware: SessionMiddleware
    spy: AppSpy
    pacer: Pacer
    http: httpx.AsyncClient

    @property
    def store(self) -> Store:
        return self.middleware.store


@asynccontextmanager
async def serving(
    *,
    store: Store | None = None,
    stateless: bool = False,
    own_lifespan: bool = True,
    **options: Any,
) -> AsyncIterator[Server]:
    """The SDK app wrapped in the middleware, with the lifespan running.

    ``own_lifespan=False`` runs the app's lifespan alone, as when the
    middleware's lifespan is never called (a mounted app): each durable
    response then keeps its own clock instead of the process's watcher.
    """
    pacer = Pacer()
    sdk_app = build_sdk_app(pacer, stateless=stateless)
    spy = AppSpy(sdk_app)
    middleware = SessionMiddleware(spy, store=store or MemoryStore(), **options)
    async with (
        lifespan(middleware) if own_lifespan else sdk_app.router.lifespan_context(sdk_app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=middleware), base_url="http://127.0.0.1:8000"
        ) as http,
    ):
        yield Server(middleware, spy, pacer, http)


POST_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
}


async def initialize(server: Server, version: str = NEW) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "streams", "version": "1"},
        },
    }
    response = await server.http.post("/mcp", json=body, headers=POST_HEADERS)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    done = await server.http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**POST_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": version},
    )
    assert done.status_code == 202, done.text
    return session_id


def stream_call(request_id: int, n: int, cut_after: int | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {"n": n}
    if cut_after is not None:
        arguments["cut_after"] = cut_after
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "stream", "arguments": arguments, "_meta": {"progressToken": "p"}},
    }


# -- the client side: one request driven through the ASGI callable ---------------------


@dataclass(frozen=True)
class Frame:
    """One SSE event as the client sees it."""

    id: str | None
    data: str
    event: str | None = None
    retry: int | None = None

    @property
    def message(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value

    @property
    def seq(self) -> int:
        assert self.id is not None
        match = EVENT_ID.fullmatch(self.id)
        assert match is not None, self.id
        return int(match["seq"])

    @property
    def stream(self) -> str:
        assert self.id is not None
        return self.id.partition(".")[0]


def parse_frame(block: str) -> Frame | None:
    """A frame from the lines of one event block; None for a comment-only block."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if not data and not fields:
        return None
    retry = fields.get("retry")
    return Frame(
        fields.get("id"), "\n".join(data), fields.get("event"), int(retry) if retry else None
    )


BeforeSend = Callable[[Message], Awaitable[None]]


@dataclass
class Wire:
    """One HTTP request run through an ASGI app, read event by event as it is sent."""

    status: int = 0
    headers: Headers = field(default_factory=lambda: Headers(raw=[]))
    body: bytes = b""
    sends: list[tuple[str, bool]] = field(default_factory=list)
    """Each message sent: its type, and whether more body follows."""
    gone: bool = False
    """Set by :meth:`leave`: from then on every send fails as a closed socket does."""
    started: anyio.Event = field(default_factory=anyio.Event)
    ended: anyio.Event = field(default_factory=anyio.Event)
    returned: anyio.Event = field(default_factory=anyio.Event)
    _left: anyio.Event = field(default_factory=anyio.Event)
    _text: str = ""
    _frames: list[Frame] = field(default_factory=list)
    _arrived: anyio.Event = field(default_factory=anyio.Event)
    before_send: BeforeSend | None = None

    async def receive(self) -> Message:
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone:
            raise OSError("the client closed the connection")
        if self.before_send is not None:
            await self.before_send(message)
        self.sends.append((message["type"], bool(message.get("more_body", False))))
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = Headers(raw=list(message.get("headers", [])))
            self.started.set()
        elif message["type"] == "http.response.body":
            chunk: bytes = message.get("body", b"")
            self.body += chunk
            self._text += chunk.decode()
            *blocks, self._text = self._text.split("\n\n")
            self._frames.extend(f for f in map(parse_frame, blocks) if f is not None)
            if not message.get("more_body", False):
                self.ended.set()
            self._arrived.set()
            self._arrived = anyio.Event()

    def leave(self) -> None:
        """Play a client that drops the connection."""
        self.gone = True
        self._left.set()

    async def next_frame(self) -> Frame | None:
        """The next event, or None once the response has ended without more."""
        while not self._frames:
            if self.ended.is_set():
                return None
            await self._arrived.wait()
        return self._frames.pop(0)

    async def frames_until(self, stop: Callable[[Frame], bool]) -> list[Frame]:
        """Events up to and including the first for which ``stop`` is true."""
        out: list[Frame] = []
        while True:
            frame = await self.next_frame()
            assert frame is not None, f"the response ended after {out}"
            out.append(frame)
            if stop(frame):
                return out

    async def rest(self) -> list[Frame]:
        """Every event until the response ends."""
        out: list[Frame] = []
        while (frame := await self.next_frame()) is not None:
            out.append(frame)
        return out


def http_scope(method: str, headers: list[tuple[str, str]]) -> Scope:
    raw = [(b"host", b"127.0.0.1:8000")]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def start(
    tg: TaskGroup,
    app: ASGIApp,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    before_send: BeforeSend | None = None,
) -> Wire:
    """Start a request in ``tg``; returns once the response has started."""
    wire = Wire(before_send=before_send)
    scope = http_scope(method, headers)
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await wire.receive()

    async def run() -> None:
        try:
            await app(scope, receive, wire.send)
        finally:
            wire.returned.set()

    tg.start_soon(run)
    await wire.started.wait()
    return wire


async def post(
    tg: TaskGroup,
    server: Server,
    session_id: str,
    message: dict[str, Any],
    version: str = NEW,
    before_send: BeforeSend | None = None,
) -> Wire:
    headers = [
        *POST_HEADERS.items(),
        ("mcp-session-id", session_id),
        ("mcp-protocol-version", version),
    ]
    return await start(
        tg, server.middleware, "POST", headers, json.dumps(message).encode(), before_send
    )


async def get(
    tg: TaskGroup,
    server: Server,
    session_id: str,
    last_event_ids: list[str] | None = None,
    version: str = NEW,
) -> Wire:
    headers = [
        ("accept", "text/event-stream"),
        ("mcp-session-id", session_id),
        ("mcp-protocol-version", version),
    ]
    headers += [("last-event-id", value) for value in last_event_ids or []]
    return await start(tg, server.middleware, "GET", headers)


def is_result(request_id: int) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        return bool(frame.data) and frame.message.get("id") == request_id

    return check


def is_progress(frame: Frame) -> bool:
    return bool(frame.data) and frame.message.get("method") == "notifications/progress"


def progress_of(frames: list[Frame]) -> list[int]:
    return [int(f.message["params"]["progress"]) for f in frames if is_progress(f)]


def results_of(frames: list[Frame], request_id: int) -> list[dict[str, Any]]:
    return [f.message for f in frames if is_result(request_id)(f)]


@asynccontextmanager
async def bounded() -> AsyncIterator[TaskGroup]:
    """A task group for the test's requests, the whole of it bounded by TIMEOUT."""
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            yield tg
            tg.cancel_scope.cancel()


@pytest.fixture(params=[False, True], ids=["stateful", "stateless"])
def stateless(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(params=[True, False], ids=["watcher", "own-clock"])
def own_lifespan(request: pytest.FixtureRequest) -> bool:
    """With the middleware's lifespan (one watcher for the process), or without."""
    return bool(request.param)


# -- event ids, priming ------------------------------------------------------------------


async def test_event_ids_name_a_minted_stream_and_count_from_one() -> None:
    async with serving() as server, bounded() as tg:
        session_id = await initialize(server)
        first = await (await post(tg, server, session_id, stream_call(7, 3))).rest()
        second = await (await post(tg, server, session_id, stream_call(7, 3))).rest()
    for frames in (first, second):
        assert all(f.id is not None and EVENT_ID.fullmatch(f.id) for f in frames), frames
        assert len({f.stream for f in frames}) == 1
        assert STREAM_ID.fullmatch(frames[0].stream)
        assert [f.seq for f in frames] == [0, 1, 2, 3, 4]
        assert progress_of(frames) == [1, 2, 3]
        assert results_of(frames, 7) == [frames[-1].message]
    # The request id repeats; the stream id does not.
    assert first[0].stream != second[0].stream


@pytest.mark.parametrize("version", ["2025-03-26", OLD, NEW])
async def test_priming_event_only_from_2025_11_25(version: str) -> None:
    async with serving(sse_retry_ms=250) as server, bounded() as tg:
        session_id = await initialize(server, version)
        frames = await (await post(tg, server, session_id, stream_call(1, 2), version)).rest()
        standalone = await get(tg, server, session_id, version=version)
        await publish(server.store, session_id, {"jsonrpc": "2.0", "method": "x/ping"})
        outbox = await standalone.frames_until(lambda f: bool(f.data))
        standalone.leave()
    if version == NEW:
        priming = frames[0]
        assert (priming.seq, priming.data, priming.retry) == (0, "", 250)
        assert [f.retry for f in frames[1:]] == [None, None, None]
        assert [(f.id, f.data, f.retry) for f in outbox] == [
            ("get.0", "", 250),
            ("get.1", outbox[1].data, None),
        ]
    else:
        assert [f.seq for f in frames] == [1, 2, 3]
        assert all(f.data and f.retry is None for f in frames + outbox)
        assert [f.id for f in outbox] == ["get.1"]
    assert progress_of(frames) == [1, 2]


# -- write-ahead, the client leaving ----------------------------------------------------


async def test_every_event_is_stored_before_the_client_gets_it(stateless: bool) -> None:
    async with serving(stateless=stateless) as server, bounded() as tg:
        session_id = await initialize(server)
        checked: list[str] = []
        missing: list[str] = []
        pending = ""

        async def check_stored(message: Message) -> None:
            nonlocal pending
            if message["type"] != "http.response.body":
                return
            pending += message.get("body", b"").decode()
            *blocks, pending = pending.split("\n\n")
            for frame in filter(None, map(parse_frame, blocks)):
                if frame.seq == 0:
                    continue  # the priming event is not stored
                stored = await server.store.read_events(session_id, frame.stream, frame.seq - 1, 1)
                if [(e.seq, e.data) for e in stored] == [(frame.seq, frame.data)]:
                    checked.append(str(frame.id))
                else:
                    missing.append(str(frame.id))

        wire = await post(tg, server, session_id, stream_call(3, 20), before_send=check_stored)
        frames = await wire.rest()
    assert missing == []
    assert checked == [f.id for f in frames if f.seq > 0]
    assert len(checked) == 21


class CountingStore(MemoryStore):
    """A memory store that records the size of every batch of events it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def _append_events(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        max_events: int | None,
    ) -> list[StoredEvent]:
        self.batches.append(len(items))
        return await super()._append_events(key, stream_id, items, max_events)


async def test_a_burst_of_events_is_stored_in_a_few_calls() -> None:
    """Events the app sends back to back share store calls; none is lost or reordered.

    The memory store answers at once, so without gathering every event would
    be a call of its own.
    """
    store = CountingStore()
    async with serving(store=store) as server, bounded() as tg:
        session_id = await initialize(server)
        wire = await post(tg, server, session_id, stream_call(3, 200))
        frames = await wire.rest()
    assert progress_of(frames) == list(range(1, 201))
    assert [f.seq for f in frames] == list(range(202))  # priming, 200 progress, the result
    assert sum(store.batches) == 201
    assert len(store.batches) <= 100, store.batches


class WriteCountingStore(MemoryStore):
    """A memory store that records every write_stream call: (events, opens, finishes)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, bool, bool]] = []

    async def _write_stream(
        self,
        key: str,
        stream_id: str,
        items: Sequence[tuple[str, str | None]],
        open_as: StreamState | None,
        finish: bool,
        max_events: int | None,
    ) -> list[StoredEvent]:
        self.writes.append((len(items), open_as is not None, finish))
        return await super()._write_stream(key, stream_id, items, open_as, finish, max_events)


async def test_an_answer_sent_at_once_is_one_store_write() -> None:
    """Open, the answer and finish go to the store together, before the client sees them."""
    store = WriteCountingStore()
    async with serving(store=store) as server, bounded() as tg:
        session_id = await initialize(server)
        frames = await (await post(tg, server, session_id, stream_call(4, 0))).rest()
        assert results_of(frames, 4) == [frames[-1].message]
        state = await store.load_stream(session_id, str(frames[-1].stream))
    assert store.writes == [(1, True, True)]
    assert state is not None
    assert state.done
    assert state.last_seq == 1


async def test_an_answer_sent_at_once_reaches_the_client_in_one_body_that_ends_it(
    own_lifespan: bool,
) -> None:
    """The held response start, then the priming event and the answer in one last body."""
    async with serving(own_lifespan=own_lifespan) as server, bounded() as tg:
        session_id = await initialize(server)
        wire = await post(tg, server, session_id, stream_call(4, 0))
        frames = await wire.rest()
        await wire.returned.wait()
    assert wire.sends == [("http.response.start", False), ("http.response.body", False)]
    assert [frame.seq for frame in frames] == [0, 1]
    assert results_of(frames, 4) == [frames[-1].message]


async def test_a_silent_tool_has_its_stream_stored_before_its_priming_id_is_sent(
    own_lifespan: bool,
) -> None:
    """A tool that sends nothing yet: its stream is opened on its own after OPEN_DELAY.

    The response start and priming event are held until then, so the client
    never holds an event id its stream is not stored under: a resume from it
    on another instance finds the stream, with a live lease.
    """
    store = MemoryStore()
    async with (
        serving(store=store, own_lifespan=own_lifespan) as producer,
        serving(store=store, own_lifespan=own_lifespan) as other,
        bounded() as tg,
    ):
        session_id = await initialize(producer)
        producer.pacer.allow(0)
        wire = await post(tg, producer, session_id, stream_call(6, 2))
        priming = await wire.next_frame()
        assert priming is not None
        assert priming.seq == 0
        state = await store.load_stream(session_id, str(priming.stream))
        assert state is not None
        assert not state.done
        assert state.lease_expires > store.now()
        wire.leave()
        resumed = await get(tg, other, session_id, [str(priming.id)])
        assert resumed.status == 200
        producer.pacer.allow(2)
        frames = await resumed.rest()
    assert progress_of(frames) == [1, 2]
    assert results_of(frames, 6) == [frames[-1].message]


async def test_a_client_that_leaves_does_not_stop_the_tool(stateless: bool) -> None:
    async with serving(stateless=stateless) as server, bounded() as tg:
        session_id = await initialize(server)
        server.pacer.allow(3)
        wire = await post(tg, server, session_id, stream_call(4, 10))
        seen = await wire.frames_until(lambda f: progress_of([f]) == [3])
        wire.leave()
        server.pacer.allow(10)
        await server.pacer.finished.wait()
        await wire.returned.wait()
        stream_id = seen[0].stream
        state = await server.store.load_stream(session_id, stream_id)
        stored = await server.store.read_events(session_id, stream_id, 0, 100)
        resumed = await (await get(tg, server, session_id, [str(seen[-1].id)])).rest()
    assert "http.disconnect" not in server.spy.received
    assert state is not None
    assert state.done
    assert state.last_seq == 11
    assert [e.seq for e in stored] == list(range(1, 12))
    assert progress_of(seen) == [1, 2, 3]
    assert progress_of(resumed) == list(range(4, 11))
    assert results_of(resumed, 4) == [resumed[-1].message]
    assert resumed[-1].message["result"]["content"][0]["text"] == "streamed 10"
    assert [f.seq for f in resumed] == list(range(seen[-1].seq + 1, 12))


async def test_resume_on_another_instance_follows_the_live_stream() -> None:
    store = MemoryStore()
    async with (
        serving(store=store) as producer,
        serving(store=store) as other,
        bounded() as tg,
    ):
        session_id = await initialize(producer)
        producer.pacer.allow(2)
        wire = await post(tg, producer, session_id, stream_call(5, 6))
        seen = await wire.frames_until(lambda f: progress_of([f]) == [2])
        wire.leave()
        resumed = await get(tg, other, session_id, [str(seen[-1].id)])
        # Replay ends where the producer is; the rest arrives live, as produced.
        producer.pacer.allow(4)
        live = await resumed.frames_until(lambda f: progress_of([f]) == [4])
        assert not producer.pacer.finished.is_set()
        producer.pacer.allow(6)
        live += await resumed.rest()
    assert progress_of(live) == [3, 4, 5, 6]
    assert results_of(live, 5) == [live[-1].message]


async def test_close_sse_streams_ends_the_connection_and_the_rest_is_resumable() -> None:
    async with serving() as server, bounded() as tg:
        session_id = await initialize(server)
        wire = await post(tg, server, session_id, stream_call(6, 8, cut_after=3))
        cut = await wire.rest()
        await server.pacer.finished.wait()
        resumed = await (await get(tg, server, session_id, [str(cut[-1].id)])).rest()
    assert results_of(cut, 6) == []
    assert 1 <= len(progress_of(cut)) <= 3
    assert progress_of(cut) + progress_of(resumed) == list(range(1, 9))
    assert len(results_of(resumed, 6)) == 1


async def test_max_stream_seconds_cuts_the_connection_and_events_keep_being_stored(
    own_lifespan: bool,
) -> None:
    async with (
        serving(max_stream_seconds=0.3, own_lifespan=own_lifespan) as server,
        bounded() as tg,
    ):
        session_id = await initialize(server)
        server.pacer.allow(2)
        wire = await post(tg, server, session_id, stream_call(8, 5))
        cut = await wire.rest()
        assert not server.pacer.finished.is_set()
        server.pacer.allow(5)
        await server.pacer.finished.wait()
        await wire.returned.wait()
        stored = await server.store.read_events(session_id, cut[0].stream, 0, 100)
        resumed = await (await get(tg, server, session_id, [str(cut[-1].id)])).rest()
    assert cut[0].retry is not None
    assert progress_of(cut) == [1, 2]
    assert len(stored) == 6
    assert progress_of(resumed) == [3, 4, 5]
    assert len(results_of(resumed, 8)) == 1


# -- what Last-Event-ID may name ---------------------------------------------------------


async def assert_bad_event_id(wire: Wire) -> None:
    await wire.ended.wait()
    assert wire.status == 400, wire.body
    assert wire.headers["content-type"] == "application/json"
    body = json.loads(wire.body)
    assert body["error"]["message"] == MSG_BAD_EVENT_ID
    assert "progress" not in wire.body.decode()


async def test_another_sessions_event_id_is_refused_and_replays_nothing() -> None:
    async with serving() as server, bounded() as tg:
        owner = await initialize(server)
        stranger = await initialize(server)
        frames = await (await post(tg, server, owner, stream_call(2, 3))).rest()
        await publish(server.store, owner, {"jsonrpc": "2.0", "method": "x/secret"})
        for event_id in (frames[0].id, frames[1].id, "get.0", "get.1"):
            await assert_bad_event_id(await get(tg, server, stranger, [str(event_id)]))
        mine = await (await get(tg, server, owner, [str(frames[1].id)])).rest()
    assert progress_of(mine) == [2, 3]


MALFORMED: list[Callable[[str], str]] = [
    lambda s: s,
    lambda s: f"{s}.",
    lambda s: f"{s.upper()}.1",
    lambda s: f"{s}.01",
    lambda s: f"{s}.-1",
    lambda s: f"{s}.+1",
    lambda s: f"{s}.1.2",
    lambda s: f"{s}/1",
    lambda s: f"{s}.1;x",
    lambda s: f" {s}.1",
    lambda s: f"{s}.1 x",
    lambda s: f"{s[:-1]}.1",
    lambda s: f"{s}0.1",
    lambda s: f"{s}.{'9' * 19}",
    lambda s: f"{s}.1é",
    lambda s: "x" * 41,
    lambda s: "GET.1",
    lambda s: "get.1",  # well formed, but this session has no standalone stream yet
    lambda s: "0123456789abcdef.1",  # well formed, no such stream
]


@pytest.mark.parametrize("variant", MALFORMED)
async def test_malformed_or_unknown_event_ids_are_400(variant: Callable[[str], str]) -> None:
    async with serving() as server, bounded() as tg:
        session_id = await initialize(server)
        frames = await (await post(tg, server, session_id, stream_call(2, 2))).rest()
        bad = variant(frames[0].stream)
        await assert_bad_event_id(await get(tg, server, session_id, [bad]))


async def test_two_last_event_id_headers_are_400() -> None:
    async with serving() as server, bounded() as tg:
        session_id = await initialize(server)
        frames = await (await post(tg, server, session_id, stream_call(2, 2))).rest()
        ids = [str(frames[1].id), str(frames[2].id)]
        await assert_bad_event_id(await get(tg, server, session_id, ids))


async def test_a_trimmed_resume_position_is_answered_with_events_lost() -> None:
    async with serving(max_events_per_stream=5) as server, bounded() as tg:
        session_id = await initialize(server)
        frames = await (await post(tg, server, session_id, stream_call(9, 20))).rest()
        stream_id = frames[0].stream
        state = await server.store.load_stream(session_id, stream_id)
        kept = await (await get(tg, server, session_id, [f"{stream_id}.16"])).rest()
        lost = await (await get(tg, server, session_id, [f"{stream_id}.15"])).rest()
        primed = await (await get(tg, server, session_id, [f"{stream_id}.0"])).rest()
    assert progress_of(frames) == list(range(1, 21))
    assert state is not None
    assert (state.first_seq, state.last_seq) == (17, 21)
    assert [f.seq for f in kept] == [17, 18, 19, 20, 21]
    assert progress_of(kept) == [17, 18, 19, 20]
    error = {"jsonrpc": "2.0", "id": 9, "error": {"code": EVENTS_LOST, "message": MSG_EVENTS_LOST}}
    assert [f.message for f in lost] == [error]
    assert [f.message for f in primed] == [error]


async def test_a_resume_after_the_replay_window_is_answered_with_events_lost() -> None:
    async with serving(finished_stream_ttl=0.001) as server, bounded() as tg:
        session_id = await initialize(server)
        frames = await (await post(tg, server, session_id, stream_call(9, 2))).rest()
        stream_id = frames[0].stream
        await anyio.sleep(0.05)  # well past the window: the next sweep removes the stream
        await server.store.cleanup_expired()
        gone = await server.store.load_stream(session_id, stream_id)
        lost = await (await get(tg, server, session_id, [f"{stream_id}.1"])).rest()
    assert progress_of(frames) == [1, 2]
    assert gone is None
    error = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": EVENTS_LOST, "message": MSG_EVENTS_LOST},
    }
    assert [f.message for f in lost] == [error]


async def test_a_stream_whose_producer_stopped_ends_with_an_error_for_its_request() -> None:
    async with serving(stream_lease=10) as server, bounded() as tg:
        session_id = await initialize(server)
        store = server.store
        # What a process that died mid-stream leaves behind: an open stream, a lease.
        stream_id = "00112233445566ff"
        await store.open_stream(
            session_id,
            StreamState(
                stream_id=stream_id,
                request_id="req-1",
                owner="dead-process",
                lease_expires=store.now() + 0.5,
            ),
        )
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
        await store.append_event(session_id, stream_id, json.dumps(progress), event="message")
        resumed = await (await get(tg, server, session_id, [f"{stream_id}.0"])).rest()
        state = await store.load_stream(session_id, stream_id)
        again = await (await get(tg, server, session_id, [f"{stream_id}.1"])).rest()
    error = {
        "jsonrpc": "2.0",
        "id": "req-1",
        "error": {"code": STREAM_ORPHANED, "message": MSG_STREAM_ORPHANED},
    }
    assert [f.id for f in resumed] == [f"{stream_id}.1", f"{stream_id}.2"]
    assert resumed[1].message == error
    assert state is not None
    assert state.done
    # The error is stored: the next resume replays it, then ends.
    assert [(f.id, f.message) for f in again] == [(f"{stream_id}.2", error)]


async def follow_directly(store: Store, session_id: str, stream_id: str, after: int) -> list[Frame]:
    """What :func:`follow_stream` sends a client resuming after ``after`` (no app involved)."""
    bodies: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message.get("body", b""))

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.fail_after(TIMEOUT):
        await follow_stream(
            store=store,
            session_id=session_id,
            stream_id=stream_id,
            after_seq=after,
            send=send,
            receive=receive,
            options=StreamOptions(follow_interval=0.05),
        )
    text = b"".join(bodies).decode()
    return [f for f in map(parse_frame, text.split("\n\n")) if f is not None]


async def finished_stream(store: Store, events: list[dict[str, Any]]) -> tuple[str, str]:
    """A session with one request stream (request id 5) holding ``events``, marked done."""
    now = store.now()
    session_id = "s" * 43
    await store.create(
        session_id,
        SessionRecord(
            key="",
            protocol_version=NEW,
            requested_protocol_version=NEW,
            client_info={},
            capabilities={},
            principal=None,
            created_at=now,
            last_accessed=now,
            expires_at=now + 60,
            ttl=60,
        ),
    )
    stream_id = "0123456789abcdef"
    await store.open_stream(session_id, StreamState(stream_id=stream_id, request_id=5))
    for event in events:
        await store.append_event(session_id, stream_id, json.dumps(event), event="message")
    await store.finish_stream(session_id, stream_id)
    return session_id, stream_id


PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
NO_ANSWER = {"jsonrpc": "2.0", "id": 5, "error": {"code": -32603, "message": MSG_NO_RESPONSE}}


async def test_a_finished_stream_without_its_response_ends_a_resume_with_an_error(
    store: Store,
) -> None:
    # What a producer cut off while storing its answer left behind (before the fix).
    session_id, stream_id = await finished_stream(store, [PROGRESS, PROGRESS])
    from_start = await follow_directly(store, session_id, stream_id, 0)
    from_middle = await follow_directly(store, session_id, stream_id, 1)
    from_end = await follow_directly(store, session_id, stream_id, 2)
    assert [f.id for f in from_start] == [f"{stream_id}.1", f"{stream_id}.2", None]
    assert from_start[-1].message == NO_ANSWER
    assert [(f.id, f.message) for f in from_middle] == [
        (f"{stream_id}.2", PROGRESS),
        (None, NO_ANSWER),
    ]
    assert [(f.id, f.message) for f in from_end] == [(None, NO_ANSWER)]
    state = await store.load_stream(session_id, stream_id)
    assert state is not None
    assert state.last_seq == 2, "answered without writing to a finished stream"


async def test_a_finished_stream_without_any_event_ends_a_resume_with_an_error(
    store: Store,
) -> None:
    session_id, stream_id = await finished_stream(store, [])
    assert [(f.id, f.message) for f in await follow_directly(store, session_id, stream_id, 0)] == [
        (None, NO_ANSWER)
    ]


async def test_a_finished_stream_with_its_response_ends_a_resume_with_nothing_more(
    store: Store,
) -> None:
    answer = {"jsonrpc": "2.0", "id": 5, "result": {"content": []}}
    session_id, stream_id = await finished_stream(store, [PROGRESS, answer])
    from_start = await follow_directly(store, session_id, stream_id, 0)
    from_end = await follow_directly(store, session_id, stream_id, 2)
    assert [f.message for f in from_start] == [PROGRESS, answer]
    assert from_end == []


# -- the standalone GET stream -----------------------------------------------------------


async def test_standalone_stream_gets_notifications_published_by_another_instance() -> None:
    store = MemoryStore()
    async with (
        serving(store=store) as here,
        serving(store=store) as elsewhere,
        bounded() as tg,
    ):
        session_id = await initialize(here)
        wire = await get(tg, here, session_id)
        assert wire.status == 200
        assert wire.headers["content-type"].startswith("text/event-stream")
        handle = await elsewhere.middleware.get_session(session_id)
        assert handle is not None
        await handle.notify("notifications/message", {"level": "info", "data": "one"})
        await publish(store, session_id, {"jsonrpc": "2.0", "method": "x/two"})
        tool = await (
            await post(
                tg,
                elsewhere,
                session_id,
                {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "tools/call",
                    "params": {"name": "announce", "arguments": {"text": "three"}},
                },
            )
        ).rest()
        frames = await wire.frames_until(lambda f: f.id == "get.3")
        wire.leave()
        await wire.returned.wait()  # the follow ends when its client leaves
        resumed = await get(tg, elsewhere, session_id, ["get.1"])
        replayed = await resumed.frames_until(lambda f: f.id == "get.3")
        resumed.leave()
    assert len(results_of(tool, 3)) == 1
    assert [f.id for f in frames] == ["get.0", "get.1", "get.2", "get.3"]
    assert frames[1].message["params"] == {"level": "info", "data": "one"}
    assert frames[2].message["method"] == "x/two"
    assert frames[3].message["params"]["data"] == "three"
    assert [(f.id, f.data) for f in replayed] == [(f.id, f.data) for f in frames[2:]]


async def test_standalone_stream_sleeps_on_the_follower_and_wakes_for_another_instance(
    store_factory: StoreFactory,
) -> None:
    """On every store: the idle GET stream is one registration with the store's follower.

    What another instance (another store handle, its own connections)
    publishes wakes it; once the client leaves, nothing waits any more.
    """
    mine, theirs = await store_factory(), await store_factory()
    async with serving(store=mine) as here, bounded() as tg:
        session_id = await initialize(here)
        wire = await get(tg, here, session_id)
        assert wire.status == 200
        with anyio.fail_after(20):
            while mine.follower.waiting == 0:  # noqa: ASYNC110 - a count, no event
                await anyio.sleep(0.01)
        await publish(theirs, session_id, {"jsonrpc": "2.0", "method": "x/elsewhere"})
        frames = await wire.frames_until(lambda f: f.id == "get.1")
        wire.leave()
        await wire.returned.wait()
        assert mine.follower.waiting == 0
    assert [f.id for f in frames] == ["get.0", "get.1"]
    assert frames[1].message["method"] == "x/elsewhere"


# -- odds and ends the tests above lean on -------------------------------------------------


def test_frame_parser_reads_what_the_tests_expect() -> None:
    frame = parse_frame("event: message\nid: get.4\nretry: 10\ndata: {}\n: ping")
    assert frame == Frame("get.4", "{}", "message", 10)
    assert parse_frame(": ping") is None


# -- an app that writes its SSE body byte for byte ------------------------------------------

ANSWER = {"jsonrpc": "2.0", "id": 9, "result": {"ok": True}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}


def sse_frame(message: dict[str, Any], eol: bytes = b"\r\n") -> bytes:
    return b"event: message" + eol + b"data: " + json.dumps(message).encode() + eol + eol


def scripted_sse_app(chunks: Sequence[bytes]) -> ASGIApp:
    """A stateless app: initialize answered in JSON, any request with ``chunks`` as its SSE body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = json.loads((await receive())["body"])
        if request.get("method") == "initialize":
            result = {"protocolVersion": NEW, "capabilities": {}, "serverInfo": {"name": "s"}}
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result})
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


async def scripted_call(chunks: Sequence[bytes]) -> tuple[list[Frame], list[StoredEvent]]:
    """One request to the scripted app: what its client got, and what the store holds."""
    store = MemoryStore()
    middleware = SessionMiddleware(scripted_sse_app(chunks), store=store, mode="stateless")
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": NEW}
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        opened = await client.post("/mcp", json=init, headers=headers)
        session_id = opened.headers["mcp-session-id"]
        call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "x"}}
        with anyio.fail_after(TIMEOUT):
            answer = await client.post(
                "/mcp", json=call, headers={**headers, "mcp-session-id": session_id}
            )
    frames = [f for f in map(parse_frame, answer.text.split("\n\n")) if f is not None]
    stream = frames[0].stream
    stored = await store.read_events(session_id, str(stream), 0)
    return frames, stored


async def test_a_bom_at_the_start_of_an_apps_body_is_skipped() -> None:
    bom = b"\xef\xbb\xbf"
    frames, stored = await scripted_call([bom + sse_frame(NOTE), sse_frame(ANSWER)])
    assert [f.message for f in frames if f.data] == [NOTE, ANSWER]
    assert [(json.loads(e.data), e.event) for e in stored] == [
        (NOTE, "message"),
        (ANSWER, "message"),
    ]


async def test_frames_split_anywhere_or_sharing_a_chunk_are_stored_alike() -> None:
    body = sse_frame(NOTE) + sse_frame(NOTE, b"\n") + sse_frame(ANSWER)
    for chunks in ([body], [body[:5], body[5:40], body[40:]], [sse_frame(NOTE), body[40:]]):
        frames, stored = await scripted_call(chunks)
        assert [json.loads(e.data) for e in stored][-1] == ANSWER
        assert [f.message for f in frames if f.data][-1] == ANSWER


async def test_after_a_body_that_cannot_be_parsed_the_rest_is_dropped_and_the_request_errs() -> (
    None
):
    frames, stored = await scripted_call([b"data: \xff\r\n\r\n", sse_frame(ANSWER)])
    messages = [f.message for f in frames if f.data]
    assert len(messages) == 1
    assert messages[0]["id"] == 9
    assert messages[0]["error"]["message"] == MSG_NO_RESPONSE
    assert [json.loads(e.data) for e in stored] == messages
