"""End to end: durable SSE streams under the official SDK client, across real processes.

Every server is ``examples/06_streaming_server.py`` in a uvicorn process of its
own (see :mod:`tests.e2e.server`). Its tool ``stream`` reports progress 1..n,
names the producing process in each progress message, can end its client's
connection after ``cut_after`` steps and can hold after ``hold_at`` steps until
the session state says ``release`` — which the test sets through its own
connection to the shared store, so "the producer is still running when the
resume lands" is arranged, not hoped for.

:class:`Router` is the load balancer: it sends the client's POSTs to the
producer and every GET (the resume with ``Last-Event-ID`` included) to the
other process, and keeps a copy of every response body, so the tests check the
wire as well as what the client reports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import Implementation

from mcp_session_mw import Store, create_store
from mcp_session_mw.streams import MSG_STREAM_ORPHANED, STREAM_ORPHANED

from ..dynamodb_server import store_url as dynamodb_url
from ..services import POSTGRES_URL, REDIS_URL, need_service
from .server import run_server

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EXAMPLE = "examples/06_streaming_server.py"
STEPS = 200
RAW_STEPS = 120
CUT_AT = 50
HOLD_AT = 100
LEASE = 2.0
KILL_HOLD_AT = 60
HANDSHAKE = "2025-11-25"
SESSION = "mcp-session-id"
LAST_EVENT_ID = "last-event-id"
CLIENT_INFO = Implementation(name="e2e-durable-streams", version="1.0")
TEST_TIMEOUT = 40.0
"""Bounds a hang; generous because the box has two shared cores."""
HTTP_TIMEOUT = httpx2.Timeout(15.0, read=60.0)


# -- stores shared by two processes -------------------------------------------------------


@dataclass(frozen=True)
class SharedStore:
    """A store URL and a namespace of this test module's own, for every process."""

    name: str
    url: str
    options: dict[str, str]

    def server_args(self) -> list[str]:
        args = [EXAMPLE, "--store", self.url]
        for name, value in self.options.items():
            args.append(f"--store-option={name}={value}")
        return args

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Store]:
        store = create_store(self.url, **self.options)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


async def _wipe(shared: SharedStore) -> None:
    store = create_store(shared.url, **shared.options)
    await store.open()
    if shared.name == "postgresql":
        await store.drop_schema()  # type: ignore[attr-defined]
    elif shared.name == "dynamodb":
        await store.drop_table()  # type: ignore[attr-defined]
    else:
        await store.purge()  # type: ignore[attr-defined]
    await store.close()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    ],
)
def shared(request: pytest.FixtureRequest) -> Iterator[SharedStore]:
    name: str = request.param
    namespace = uuid.uuid4().hex[:10]
    if name != "dynamodb":
        need_service(name)
    if name == "postgresql":
        spec = SharedStore(name, POSTGRES_URL, {"table_prefix": f"e2e{namespace}_"})
    elif name == "dynamodb":  # a table of this module's own, made by the first process
        spec = SharedStore(name, dynamodb_url(f"e2e-{namespace}"), {})
    else:
        spec = SharedStore(name, REDIS_URL, {"prefix": f"test:e2e{namespace}:"})
    yield spec
    anyio.run(_wipe, spec)


class Processes:
    """The module's server processes on one shared store, each started on first use.

    Every one runs with a short stream lease (renewed every third of it, so a
    live producer never loses it). A role whose process is gone (the kill test
    kills its producer) gets a new process the next time it is asked for.
    """

    def __init__(self, shared: SharedStore, stack: ExitStack) -> None:
        self._args = [*shared.server_args(), "--stream-lease", str(LEASE)]
        self._stack = stack
        self._urls: dict[str, str] = {}

    def url(self, role: str) -> str:
        url = self._urls.get(role)
        if url is None or not _accepts(url):
            url = self._stack.enter_context(run_server(self._args))
            self._urls[role] = url
        return url


def _accepts(url: str) -> bool:
    parsed = httpx.URL(url)
    try:
        with socket.create_connection((parsed.host, parsed.port or 80), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def processes(shared: SharedStore) -> Iterator[Processes]:
    with ExitStack() as stack:
        yield Processes(shared, stack)


@pytest.fixture
def producer(processes: Processes) -> str:
    return processes.url("producer")


@pytest.fixture
def follower(processes: Processes, producer: str) -> str:
    """The process that did not produce the stream."""
    return processes.url("follower")


@pytest.fixture(scope="module")
def solo() -> Iterator[str]:
    with run_server([EXAMPLE, "--store", "memory://"]) as base_url:
        yield base_url


# -- the load balancer, watched -------------------------------------------------------------


@dataclass
class Seen:
    """One HTTP exchange as the router saw it; ``body`` fills as the client reads."""

    method: str
    to: str
    last_event_id: str | None
    status: int
    session_id: str | None
    body: bytearray = field(default_factory=bytearray)

    def frames(self) -> list[dict[str, str]]:
        """The SSE events of the body, each as its fields (data lines joined)."""
        out: list[dict[str, str]] = []
        text = self.body.decode().replace("\r\n", "\n")
        for block in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = f"{fields[name]}\n{value}" if name in fields else value
            if fields:
                out.append(fields)
        return out


class _Tee(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class Router(httpx2.AsyncBaseTransport):
    """POSTs go to ``post_to``, everything else to ``get_to``; every response is recorded."""

    def __init__(self, post_to: str, get_to: str) -> None:
        self.post_to = httpx2.URL(post_to)
        self.get_to = httpx2.URL(get_to)
        self.seen: list[Seen] = []
        self.resumed = anyio.Event()
        """Set once a GET with Last-Event-ID has been answered (headers received)."""
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        target = self.post_to if request.method == "POST" else self.get_to
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        response = await self._inner.handle_async_request(request)
        seen = Seen(
            request.method,
            str(target),
            request.headers.get(LAST_EVENT_ID),
            response.status_code,
            response.headers.get(SESSION),
        )
        self.seen.append(seen)
        if seen.method == "GET" and seen.last_event_id is not None:
            self.resumed.set()
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, seen.body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

    def session_id(self) -> str:
        ids = {s.session_id for s in self.seen if s.session_id}
        assert len(ids) == 1, ids
        return ids.pop()

    def resumes(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.last_event_id is not None]


@asynccontextmanager
async def sdk_client(router: Router) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(transport=router, timeout=HTTP_TIMEOUT) as http,
        Client(
            streamable_http_client("http://mcp.invalid/mcp", http_client=http),
            mode="legacy",
            client_info=CLIENT_INFO,
        ) as client,
    ):
        yield client


@dataclass
class Progress:
    """What the client's progress callback was given."""

    values: list[int] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.values.append(int(progress))
        if message is not None:
            self.pids.add(int(message.rsplit(" ", 1)[1]))


def wire_messages(router: Router) -> list[dict[str, Any]]:
    """Every JSON-RPC message the client received on any response, in arrival order."""
    out: list[dict[str, Any]] = []
    for seen in router.seen:
        for frame in seen.frames():
            if frame.get("data"):
                out.append(json.loads(frame["data"]))
    return out


def wire_progress(router: Router) -> list[int]:
    return [
        int(m["params"]["progress"])
        for m in wire_messages(router)
        if m.get("method") == "notifications/progress"
    ]


def answers(router: Router) -> list[dict[str, Any]]:
    """The JSON-RPC responses among the messages the client received."""
    return [
        m for m in wire_messages(router) if "method" not in m and ("result" in m or "error" in m)
    ]


def stream_args(**extra: int) -> dict[str, Any]:
    return {"n": STEPS, "delay_ms": 2, "cut_after": CUT_AT, **extra}


# -- 1. one process: cut after 50, the client resumes ------------------------------------


async def test_sdk_client_resumes_a_cut_stream_and_gets_everything_once(solo: str) -> None:
    router = Router(solo, solo)
    progress = Progress()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router) as client:
            result = await client.call_tool("stream", stream_args(), progress_callback=progress)
    assert not result.is_error, result
    assert result.structured_content == {"result": f"streamed {STEPS}"}
    assert progress.values == list(range(1, STEPS + 1))
    assert_wire_exactly_once(router)


def assert_wire_exactly_once(router: Router) -> None:
    """On the wire: each progress once, the result once, and it came on a resume."""
    [call_post] = [
        s for s in router.seen if s.method == "POST" and any(map(progress_value, s.frames()))
    ]
    cut = [json.loads(f["data"]) for f in call_post.frames() if f.get("data")]
    assert all("method" in m for m in cut), "the result came before the cut"
    assert 1 <= len(cut) <= CUT_AT
    assert wire_progress(router) == list(range(1, STEPS + 1))
    [tool_result] = [a for a in answers(router) if "result" in a and "content" in a["result"]]
    resumes = router.resumes()
    assert resumes, "the client never resumed with Last-Event-ID"
    assert all(s.status == 200 for s in resumes)
    assert any(tool_result in map(_data, r.frames()) for r in resumes)
    ids = [f["id"] for s in router.seen for f in s.frames() if "id" in f]
    assert len(ids) == len(set(ids)), "an event id reached the client twice"


def _data(frame: dict[str, str]) -> Any:
    return json.loads(frame["data"]) if frame.get("data") else None


# -- 2. two processes on one store: the resume lands on the other one ----------------------


async def test_sdk_client_resume_lands_on_the_other_process_mid_stream(
    shared: SharedStore, producer: str, follower: str
) -> None:
    router = Router(producer, follower)
    progress = Progress()
    with anyio.fail_after(TEST_TIMEOUT):
        async with shared.connect() as store, sdk_client(router) as client:

            async def release_when_resumed() -> None:
                await router.resumed.wait()
                stream_id = str(router.resumes()[0].last_event_id).partition(".")[0]
                session_id = router.session_id()
                state = await store.load_stream(session_id, stream_id)
                # The producer holds at HOLD_AT until released: it is mid-stream.
                assert state is not None
                assert not state.done, state
                await store.update(session_id, {"release": True})

            async with anyio.create_task_group() as tg:
                tg.start_soon(release_when_resumed)
                result = await client.call_tool(
                    "stream", stream_args(hold_at=HOLD_AT), progress_callback=progress
                )
    assert not result.is_error, result
    assert progress.values == list(range(1, STEPS + 1))
    assert len(progress.pids) == 1, "every step is made by the producer"
    assert all(r.to == str(httpx2.URL(follower)) for r in router.resumes())
    assert_wire_exactly_once(router)


async def test_raw_client_drops_at_50_and_resumes_on_the_other_process(
    shared: SharedStore, producer: str, follower: str
) -> None:
    """The client, not the server, drops the connection; the resume goes to the other process."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with shared.connect() as store, httpx.AsyncClient(timeout=15.0) as http:
            session_id = await raw_initialize(http, producer)
            call = tool_call(7, {"n": RAW_STEPS, "delay_ms": 2, "hold_at": HOLD_AT})
            async with http.stream(
                "POST", f"{producer}/mcp", json=call, headers=headers_for(session_id)
            ) as response:
                assert response.status_code == 200
                before = await read_frames(response.aiter_lines(), until=progress_is(CUT_AT))
            # Leaving the block closed the connection mid-stream.
            last_id = before[-1]["id"]
            resume = headers_for(session_id, accept="text/event-stream", last_event_id=last_id)
            async with http.stream("GET", f"{follower}/mcp", headers=resume) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                replayed = await read_frames(lines, until=progress_is(HOLD_AT))
                state = await store.load_stream(session_id, last_id.partition(".")[0])
                assert state is not None
                assert not state.done, state
                await store.update(session_id, {"release": True})
                after = await read_frames(lines, until=None)
    assert [progress_value(f) for f in before if progress_value(f)] == list(range(1, CUT_AT + 1))
    rest = replayed + after
    assert [progress_value(f) for f in rest[:-1]] == list(range(CUT_AT + 1, RAW_STEPS + 1))
    final = json.loads(rest[-1]["data"])
    assert final["id"] == 7
    assert final["result"]["structuredContent"] == {"result": f"streamed {RAW_STEPS}"}
    first = int(last_id.partition(".")[2]) + 1
    assert [int(f["id"].partition(".")[2]) for f in rest] == list(range(first, first + len(rest)))


# -- 3. the producer dies: the resumed stream ends with an error, within the lease ----------


async def test_sdk_client_gets_an_error_when_the_producer_is_killed(
    shared: SharedStore, producer: str, follower: str
) -> None:
    router = Router(producer, follower)
    reported = Progress()
    killed: list[int] = []

    async def kill_at_cut(progress: float, total: float | None, message: str | None) -> None:
        await reported(progress, total, message)
        if int(progress) == CUT_AT and not killed:
            [pid] = reported.pids
            os.kill(pid, signal.SIGKILL)  # the producer: a process run_server started
            killed.append(pid)

    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router) as client:
            with pytest.raises(MCPError) as raised, anyio.fail_after(LEASE * 3 + 5):
                await client.call_tool(
                    "stream",
                    {"n": STEPS, "delay_ms": 2, "hold_at": KILL_HOLD_AT},
                    progress_callback=kill_at_cut,
                )
    assert killed, "the producer was never killed"
    assert (raised.value.code, raised.value.message) == (STREAM_ORPHANED, MSG_STREAM_ORPHANED)
    got = reported.values
    assert got == list(range(1, len(got) + 1))
    assert CUT_AT <= len(got) <= KILL_HOLD_AT
    [resume] = router.resumes()
    assert resume.to == str(httpx2.URL(follower))
    frames = [f for f in resume.frames() if f.get("data")]
    assert json.loads(frames[-1]["data"])["error"] == {
        "code": STREAM_ORPHANED,
        "message": MSG_STREAM_ORPHANED,
    }


# -- raw HTTP helpers ------------------------------------------------------------------------


def headers_for(session_id: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": HANDSHAKE,
    }
    if session_id is not None:
        headers[SESSION] = session_id
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return headers


def tool_call(request_id: int, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "stream", "arguments": arguments, "_meta": {"progressToken": "t"}},
    }


async def raw_initialize(http: httpx.AsyncClient, base_url: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "e2e-raw", "version": "1.0"},
        },
    }
    response = await http.post(f"{base_url}/mcp", json=body, headers=headers_for())
    assert response.status_code == 200, response.text
    session_id = response.headers[SESSION]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = await http.post(f"{base_url}/mcp", json=done, headers=headers_for(session_id))
    assert response.status_code == 202, response.text
    return session_id


def progress_value(frame: dict[str, str]) -> int | None:
    message = _data(frame)
    if isinstance(message, dict) and message.get("method") == "notifications/progress":
        return int(message["params"]["progress"])
    return None


def progress_is(value: int) -> Any:
    return lambda frame: progress_value(frame) == value


async def read_frames(lines: AsyncIterator[str], until: Any) -> list[dict[str, str]]:
    """Events with data up to the one ``until`` accepts (or, with None, to the end)."""
    frames: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if fields.get("data"):
                frames.append(fields)
                if until is not None and until(fields):
                    return frames
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    assert until is None, f"the stream ended after {len(frames)} events"
    return frames
