"""End to end: one MCP session served by two processes at once, request by request.

Two uvicorn processes of ``examples/05_conformance_server.py`` share one store
(PostgreSQL, then Redis). The official SDK client talks to them through
:class:`RoundRobin`, a load balancer stand-in that sends each HTTP request —
POST, GET and DELETE alike — to the next process in turn, so consecutive
messages of one session land on different processes. What must still hold:

- a server-to-client request (elicitation, sampling) is answered with the
  client callback's reply even when that reply reaches the process that did
  not ask (it is handed over through the store);
- notifications reach the client: log messages on the tool call's stream, and
  ``notifications/resources/updated`` on the client's GET stream, which is
  served from the store whichever process the GET reached;
- the logging level the client set holds on every process, and after one of
  them is killed and replaced;
- a reply to a request nobody asked gets 400 and a JSON-RPC error body.

The example takes its store from ``MCP_SESSION_STORE_URL`` and has no option
for a key or table prefix, so the default namespace is used; session ids are
random and every session is deleted at the end (the SDK client deletes its own
on exit, the raw test deletes its one explicitly).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, types
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation

from mcp_session_mw.jsonrpc import INVALID_REQUEST, MSG_NO_PENDING_REQUEST

from ..dynamodb_server import dynamodb_table
from ..services import POSTGRES_URL, REDIS_URL, need_service
from .server import HOST, REPO_ROOT, START_TIMEOUT, STOP_TIMEOUT, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    # resources/subscribe and logging are deprecated for 2026-07-28 only: this is the handshake lane
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

EXAMPLE = "examples/05_conformance_server.py"
STORE_URL_ENV = "MCP_SESSION_STORE_URL"
SESSION = "mcp-session-id"
HANDSHAKE = "2025-11-25"
CLIENT_INFO = Implementation(name="e2e-cross-instance", version="1.0")
TEST_TIMEOUT = 60.0
"""Bounds a hang; generous because the box has two shared cores."""
HTTP_TIMEOUT = httpx2.Timeout(15.0, read=60.0)
NOTIFICATION_WAIT = 10.0
"""How long a notification published through the store may take to reach the GET stream."""
QUIET_WAIT = 1.0
"""How long the client listens for log messages that must not come."""
CALLS = 4
"""Tool calls per check: with strict alternation, two land on each process."""

USER = {"username": "alice", "email": "alice@example.com"}
SAMPLED_TEXT = "sampled by the e2e client"
WATCHED = "test://watched-resource"
LOG_TEXTS = ["Tool execution started", "Tool processing data", "Tool execution completed"]

NOT_STARTED = "server process did not start listening"

SETUP_NOT_SHARED = (
    "issue 9: logging/setLevel and resources/(un)subscribe reach only the app session of the "
    "process that took them; another process's live app session never gets them (they are "
    "replayed only into re-created app sessions)"
)
SERVER_REQUEST_IDS_COLLIDE = (
    "issue 9: each process's app session numbers its server requests from the same start, the "
    "pending table keys them by that id alone, so concurrent elicitations on two processes "
    "share one key: one reply goes to the wrong tool, the other gets 400, a tool hangs"
)
CONCURRENT_TIMEOUT = 20.0
"""Bounds the concurrent-elicitation test, whose failure mode is a tool that never returns."""


# -- two processes on one store ------------------------------------------------------------


@dataclass
class Process:
    """A server process this module started and may kill."""

    url: str
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.kill()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def spawn(store_url: str) -> Iterator[Process]:
    """The example wrapped in the middleware on ``store_url``, on a free loopback port."""
    port = free_port()
    command = [sys.executable, EXAMPLE, "--host", HOST, "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, STORE_URL_ENV: store_url},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = Process(f"http://{HOST}:{port}", proc)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _port_open(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-4000:]
                    pytest.fail(f"{NOT_STARTED}: {command}\n{output}")
                time.sleep(0.05)
            yield process
        finally:
            process.stop()


class Cluster:
    """Two processes on one store; one can be replaced by a fresh process."""

    def __init__(self, store_url: str, stack: ExitStack) -> None:
        self.store_url = store_url
        self._stack = stack
        with ThreadPoolExecutor(2) as pool:  # start-up is mostly imports: do both at once
            managers = [spawn(store_url) for _ in range(2)]
            futures = [pool.submit(m.__enter__) for m in managers]
        for manager, future in zip(managers, futures, strict=True):
            if future.exception() is None:
                stack.push(manager.__exit__)
        self.processes = [f.result() for f in futures]

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    def replace(self, index: int) -> str:
        """SIGKILL process ``index`` (no goodbye to anyone) and start a new one in its place."""
        self.processes[index].kill()
        self.processes[index] = self._stack.enter_context(spawn(self.store_url))
        return self.processes[index].url


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    ],
)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    name: str = request.param
    if name == "dynamodb":  # a table of this module's own, dropped afterwards
        with dynamodb_table() as url, ExitStack() as stack:
            yield Cluster(url, stack)
        return
    need_service(name)
    with ExitStack() as stack:
        yield Cluster(POSTGRES_URL if name == "postgresql" else REDIS_URL, stack)


# -- the round-robin load balancer, watched ------------------------------------------------


@dataclass
class Seen:
    """One HTTP exchange: which process took it, what was sent, what came back."""

    method: str
    index: int
    sent: Any
    status: int = 0
    """0 until the response headers came."""
    body: bytearray = field(default_factory=bytearray)
    answered: anyio.Event = field(default_factory=anyio.Event)

    def messages(self) -> list[Any]:
        """The JSON-RPC messages of the response (SSE data lines or a JSON body)."""
        text = self.body.decode(errors="replace").replace("\r\n", "\n")
        if not text.strip():
            return []
        if not text.lstrip().startswith(("{", "[")):
            out: list[Any] = []
            for block in text.split("\n\n"):
                data = [
                    line[5:].removeprefix(" ") for line in block.split("\n") if line[:5] == "data:"
                ]
                if data and "".join(data):
                    out.append(json.loads("\n".join(data)))
            return out
        try:
            return [json.loads(text)]
        except ValueError:
            return []


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


class RoundRobin(httpx2.AsyncBaseTransport):
    """Each request goes to the next process in turn, whatever its method; all are recorded."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: list[Seen] = []
        self._turn = 0
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        urls = self.cluster.urls
        index = self._turn % len(urls)
        self._turn += 1
        target = httpx2.URL(urls[index])
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        content = await request.aread()
        # Recorded before the answer: a relayed reply is answered only once it was delivered.
        seen = Seen(request.method, index, json.loads(content) if content else None)
        self.seen.append(seen)
        response = await self._inner.handle_async_request(request)
        seen.status = response.status_code
        seen.answered.set()
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, seen.body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

    def replies(self) -> list[tuple[Seen, Seen]]:
        """Each client reply to a server request, with the exchange that carried the request."""
        asked: dict[str, Seen] = {}
        pairs: list[tuple[Seen, Seen]] = []
        for seen in self.seen:  # in order: each app session numbers its requests from 0
            sent = seen.sent
            if seen.method == "POST" and isinstance(sent, dict) and "method" not in sent:
                asker = asked.pop(json.dumps(sent.get("id")), None)
                if asker is not None:
                    pairs.append((seen, asker))
            for message in seen.messages():
                if isinstance(message, dict) and "method" in message and "id" in message:
                    asked[json.dumps(message["id"])] = seen
        return pairs

    async def all_answered(self) -> None:
        """Wait for every request sent so far (a relayed reply may still be in flight)."""
        for seen in list(self.seen):
            await seen.answered.wait()

    def get_streams(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.status == 200]


# -- the client ------------------------------------------------------------------------------


@dataclass
class Heard:
    """What the client's callbacks were given."""

    elicited: list[str] = field(default_factory=list)
    sampled: list[str] = field(default_factory=list)
    logs: list[tuple[str, Any]] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    resource_updated: anyio.Event = field(default_factory=anyio.Event)

    async def elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.elicited.append(params.message)
        return types.ElicitResult(action="accept", content=dict(USER))

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        content = params.messages[0].content
        self.sampled.append(content.text if isinstance(content, types.TextContent) else "")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED_TEXT),
            model="e2e-model",
        )

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append((params.level, params.data))

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
            self.resource_updated.set()


@asynccontextmanager
async def sdk_client(router: RoundRobin, heard: Heard) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(transport=router, timeout=HTTP_TIMEOUT) as http,
        Client(
            streamable_http_client("http://mcp.invalid/mcp", http_client=http),
            mode="legacy",
            client_info=CLIENT_INFO,
            elicitation_callback=heard.elicitation,
            sampling_callback=heard.sampling,
            logging_callback=heard.logging,
            message_handler=heard.message,
        ) as client,
    ):
        yield client


def text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    [content] = result.content
    assert isinstance(content, types.TextContent), content
    return content.text


def assert_session_deleted(router: RoundRobin) -> None:
    deletes = [s.status for s in router.seen if s.method == "DELETE"]
    assert deletes == [200], deletes


def processes_serving(router: RoundRobin, method: str, tool: str | None = None) -> set[int]:
    """The processes that took requests of ``method`` (for tools/call, of ``tool``)."""
    return {
        s.index
        for s in router.seen
        if isinstance(s.sent, dict)
        and s.sent.get("method") == method
        and (tool is None or s.sent.get("params", {}).get("name") == tool)
    }


def assert_both_processes_served(router: RoundRobin, tool: str) -> None:
    served = processes_serving(router, "tools/call", tool)
    assert served == {0, 1}, f"{tool} calls reached processes {served}"


def notifications_on_get(router: RoundRobin, method: str) -> list[Any]:
    return [
        m
        for s in router.get_streams()
        for m in s.messages()
        if isinstance(m, dict) and m.get("method") == method
    ]


# -- 1. server-to-client requests: the reply reaches the process that asked ----------------


async def test_elicitation_completes_when_replies_land_on_the_other_process(
    cluster: Cluster,
) -> None:
    router = RoundRobin(cluster)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router, heard) as client:
            texts = [
                text_of(await client.call_tool("test_elicitation", {"message": f"who {n}?"}))
                for n in range(CALLS)
            ]
            await router.all_answered()
    assert texts == [f"User response: action=accept, content={json.dumps(USER)}"] * CALLS
    assert heard.elicited == [f"who {n}?" for n in range(CALLS)]
    pairs = router.replies()
    assert len(pairs) == CALLS
    assert [reply.status for reply, _ in pairs] == [202] * CALLS, [r.body for r, _ in pairs]
    relayed = [reply for reply, asked in pairs if reply.index != asked.index]
    assert relayed, "no reply reached the process that did not ask: nothing was relayed"
    assert_session_deleted(router)


async def test_sampling_completes_when_replies_land_on_the_other_process(
    cluster: Cluster,
) -> None:
    router = RoundRobin(cluster)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router, heard) as client:
            texts = [
                text_of(await client.call_tool("test_sampling", {"prompt": f"ping {n}"}))
                for n in range(CALLS)
            ]
            await router.all_answered()
    assert texts == [f"LLM response: {SAMPLED_TEXT}"] * CALLS
    assert heard.sampled == [f"ping {n}" for n in range(CALLS)]
    pairs = router.replies()
    assert len(pairs) == CALLS
    assert [reply.status for reply, _ in pairs] == [202] * CALLS, [r.body for r, _ in pairs]
    assert any(reply.index != asked.index for reply, asked in pairs), "nothing was relayed"
    assert_session_deleted(router)


async def test_concurrent_elicitations_on_both_processes_both_complete(
    cluster: Cluster,
) -> None:
    """Two tool calls in flight at once, one per process, each waiting for an elicitation.

    Each process's app session numbers its own server requests the same way,
    so the two elicitations may carry the same JSON-RPC id; each reply must
    still reach the process (and the tool) that asked.
    """
    router = RoundRobin(cluster)
    heard = Heard()
    both_asked = anyio.Event()

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        heard.elicited.append(params.message)
        if len(heard.elicited) == 2:
            both_asked.set()
        with anyio.move_on_after(NOTIFICATION_WAIT):
            await both_asked.wait()  # answer only once both tools are waiting
        return types.ElicitResult(action="accept", content={**USER, "username": params.message})

    heard.elicitation = elicitation  # type: ignore[method-assign]
    texts: dict[str, str] = {}
    with anyio.fail_after(CONCURRENT_TIMEOUT):
        async with sdk_client(router, heard) as client:
            text_of(await client.call_tool("test_tool_with_logging", {}))  # tools/list goes first

            async def call(name: str) -> None:
                result = await client.call_tool("test_elicitation", {"message": name})
                texts[name] = text_of(result)

            async with anyio.create_task_group() as tg:
                for name in ("first", "second"):
                    tg.start_soon(call, name)
                    await anyio.sleep(0.2)  # keep the order of the two POSTs
            await router.all_answered()
    assert processes_serving(router, "tools/call", "test_elicitation") == {0, 1}
    assert both_asked.is_set(), "the two tools were not waiting at the same time"
    for name in ("first", "second"):
        content = json.dumps({**USER, "username": name})
        assert texts[name] == f"User response: action=accept, content={content}"
    assert [reply.status for reply, _ in router.replies()] == [202, 202]
    assert_session_deleted(router)


# -- 2. notifications ------------------------------------------------------------------------


async def test_log_messages_arrive_from_both_processes(cluster: Cluster) -> None:
    router = RoundRobin(cluster)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router, heard) as client:
            for _ in range(CALLS):
                text = text_of(await client.call_tool("test_tool_with_logging", {}))
                assert text == "Tool with logging executed successfully"
    assert_both_processes_served(router, "test_tool_with_logging")
    assert [data for _, data in heard.logs] == LOG_TEXTS * CALLS
    assert {level for level, _ in heard.logs} == {"info"}
    assert_session_deleted(router)


async def test_resource_updates_from_both_processes_reach_the_get_stream(
    cluster: Cluster,
) -> None:
    """Both processes publish ``resources/updated``; the one GET stream carries every one.

    The client subscribes twice in a row, so each process's app session has the
    subscription whether or not a subscription made on one reaches the other
    (that is the next test); this one is about the GET stream alone.
    """
    router = RoundRobin(cluster)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router, heard) as client:
            for _ in range(2):
                await client.subscribe_resource(WATCHED)
            for _ in range(CALLS):
                heard.resource_updated = anyio.Event()
                text = text_of(await client.call_tool("update_watched_resource", {}))
                assert text == "notified"
                with anyio.fail_after(NOTIFICATION_WAIT):
                    await heard.resource_updated.wait()
            for _ in range(2):
                await client.unsubscribe_resource(WATCHED)
            after = [text_of(await client.call_tool("update_watched_resource", {})) for _ in "ab"]
    assert processes_serving(router, "resources/subscribe") == {0, 1}
    assert processes_serving(router, "resources/unsubscribe") == {0, 1}
    assert after == ["not subscribed"] * 2
    assert_both_processes_served(router, "update_watched_resource")
    assert heard.updated == [WATCHED] * CALLS
    assert len(router.get_streams()) == 1
    on_get = notifications_on_get(router, "notifications/resources/updated")
    assert len(on_get) == CALLS, "the updates did not all come on the client's GET stream"
    assert_session_deleted(router)


async def test_a_subscription_taken_by_one_process_holds_on_the_other(cluster: Cluster) -> None:
    router = RoundRobin(cluster)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router, heard) as client:
            await client.subscribe_resource(WATCHED)
            texts = [
                text_of(await client.call_tool("update_watched_resource", {})) for _ in range(CALLS)
            ]
            await client.unsubscribe_resource(WATCHED)
            after = [text_of(await client.call_tool("update_watched_resource", {})) for _ in "ab"]
    assert_both_processes_served(router, "update_watched_resource")
    assert texts == ["notified"] * CALLS, "a process did not know of the subscription"
    assert after == ["not subscribed"] * 2, "a process did not know of the unsubscription"
    assert_session_deleted(router)


# -- 3. the logging level ---------------------------------------------------------------------


async def test_a_logging_level_taken_by_one_process_holds_on_the_other(cluster: Cluster) -> None:
    router = RoundRobin(cluster)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router, heard) as client:
            await client.set_logging_level("error")
            for _ in range(CALLS):
                text_of(await client.call_tool("test_tool_with_logging", {}))
            await anyio.sleep(QUIET_WAIT)
    assert_both_processes_served(router, "test_tool_with_logging")
    assert heard.logs == [], "info messages arrived after logging/setLevel error"
    assert_session_deleted(router)


async def test_logging_level_holds_after_a_process_is_killed_and_replaced(
    cluster: Cluster,
) -> None:
    """The level is set on both processes; the one that took it last is SIGKILLed.

    Its replacement knows the session only from the store, so the level must
    come from the setup the middleware recorded and replays.
    """
    router = RoundRobin(cluster)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT * 2):
        async with sdk_client(router, heard) as client:
            for _ in range(2):
                await client.set_logging_level("error")
            [*_, last] = [
                s
                for s in router.seen
                if isinstance(s.sent, dict) and s.sent.get("method") == "logging/setLevel"
            ]
            await anyio.to_thread.run_sync(cluster.replace, last.index)
            for _ in range(CALLS):
                text_of(await client.call_tool("test_tool_with_logging", {}))
            await anyio.sleep(QUIET_WAIT)
    assert processes_serving(router, "logging/setLevel") == {0, 1}
    assert_both_processes_served(router, "test_tool_with_logging")
    assert heard.logs == [], "info messages arrived after logging/setLevel error and a restart"
    assert_session_deleted(router)


# -- 4. a reply nobody asked for ---------------------------------------------------------------


async def test_reply_to_an_unknown_request_gets_400_on_every_process(cluster: Cluster) -> None:
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": HANDSHAKE,
    }
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {"elicitation": {}},
            "clientInfo": {"name": "e2e-raw", "version": "1.0"},
        },
    }
    [first, second] = cluster.urls
    with anyio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(timeout=15.0) as http:
            response = await http.post(f"{first}/mcp", json=initialize, headers=headers)
            assert response.status_code == 200, response.text
            headers[SESSION] = response.headers[SESSION]
            try:
                done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                response = await http.post(f"{second}/mcp", json=done, headers=headers)
                assert response.status_code == 202, response.text
                for number, url in enumerate([first, second, first]):
                    reply = {"jsonrpc": "2.0", "id": f"nobody-{number}", "result": {}}
                    response = await http.post(f"{url}/mcp", json=reply, headers=headers)
                    assert response.status_code == 400, response.text
                    assert response.headers["content-type"].startswith("application/json")
                    assert response.json() == {
                        "jsonrpc": "2.0",
                        "id": f"nobody-{number}",
                        "error": {"code": INVALID_REQUEST, "message": MSG_NO_PENDING_REQUEST},
                    }
            finally:
                response = await http.delete(f"{second}/mcp", headers=headers)
                assert response.status_code == 200, response.text
