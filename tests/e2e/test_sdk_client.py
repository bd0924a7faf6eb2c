"""End to end: the official MCP Python SDK client against ``examples/01_sdk_server.py``.

Every server here is a real uvicorn process on a loopback port (see
:mod:`tests.e2e.server`), and every test runs twice: once with the SDK app in
its ordinary stateful mode (the middleware re-hydrates it) and once with the
app stateless (the middleware alone holds the session).

What the SDK client offers and what it does not, as of mcp 2.3.0:

- ``Client(url)`` hides its transport, so the tests hand it a
  ``streamable_http_client`` built on an ``httpx2.AsyncClient`` whose response
  hook records every exchange; that is how they see the session id it holds.
- A client cannot be pointed at an existing session: ``Client`` always sends
  ``initialize``, and the middleware mints a new id for every ``initialize``.
  What does carry a session across a server restart is a client that stays
  connected while the process behind its URL is replaced; :class:`Rerouting`
  plays the load balancer that makes one URL reach whichever process is up.

Most servers come from :func:`tests.e2e.server.run_server`; the two tests that
must kill or signal a process themselves (a crash before a restart, a SIGTERM
with a client connected) start it with :func:`spawn`, which hands over the
process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation

from mcp_session_mw.jsonrpc import (
    INVALID_REQUEST,
    MSG_BODY_TOO_LARGE,
    MSG_PARSE_ERROR,
    MSG_SESSION_NOT_FOUND,
    MSG_SESSION_REQUIRED,
    PARSE_ERROR,
)
from mcp_session_mw.options import DEFAULT_MAX_BODY_SIZE

from .server import HOST, REPO_ROOT, START_TIMEOUT, free_port, run_server

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EXAMPLE = "examples/01_sdk_server.py"
MODES: dict[str, list[str]] = {"stateful": [], "stateless": ["--stateless"]}

BARE_APP = """
import argparse, importlib.util, uvicorn
parser = argparse.ArgumentParser()
parser.add_argument("--host")
parser.add_argument("--port", type=int)
parser.add_argument("--stateless", action="store_true")
args = parser.parse_args()
spec = importlib.util.spec_from_file_location("example", "examples/01_sdk_server.py")
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
app = example.build_server().streamable_http_app(stateless_http=args.stateless)
uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
"""
"""The same SDK server as the example, without the middleware: what the app says alone."""

SESSION = "mcp-session-id"
VERSION = "mcp-protocol-version"
HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
CLIENT_INFO = Implementation(name="e2e-sdk-client", version="1.0")

MIDDLEWARE_ID = re.compile(r"[A-Za-z0-9_-]{43}")
"""What the middleware mints: 32 random bytes, URL-safe base64 without padding."""
SDK_APP_ID = re.compile(r"[0-9a-f]{32}")
"""What the SDK app mints in stateful mode (uuid4().hex); the client must never see one."""

TEST_TIMEOUT = 45.0
"""Bounds a hang; generous because server start-up on a loaded two-core box is slow."""
HTTP_TIMEOUT = 15.0
SHUTDOWN_GRACE = 10.0
"""How long a SIGTERMed server may take to exit; the bare SDK app needs well under a second."""

NOT_STARTED = "server did not start listening:"
SHUTDOWN_HANG = (
    "the server did not exit within {grace:.0f} s of SIGTERM while an SDK client stayed "
    "connected (uvicorn waits for open responses; the client's GET stream never ended)"
)


# -- the SDK client, watched -----------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    method: str
    status: int
    sent_session: str | None
    got_session: str | None


class Rerouting(httpx2.AsyncBaseTransport):
    """Sends each request to whichever server process is current: a load balancer stand-in.

    The SDK client keeps talking to one URL while the test replaces the process
    behind it, which is how a deploy looks from the client's side.
    """

    def __init__(self) -> None:
        self.target: httpx2.URL | None = None
        self._inner = httpx2.AsyncHTTPTransport()

    def route_to(self, base_url: str) -> None:
        self.target = httpx2.URL(base_url)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self.target is None:
            raise RuntimeError("Rerouting has no target yet")
        request.url = request.url.copy_with(host=self.target.host, port=self.target.port)
        request.headers["host"] = f"{self.target.host}:{self.target.port}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Wire:
    """Every HTTP exchange an SDK client made, recorded by an httpx2 response hook."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.get_stream_open = anyio.Event()

    async def record(self, response: httpx2.Response) -> None:
        request = response.request
        self.exchanges.append(
            Exchange(
                request.method,
                response.status_code,
                request.headers.get(SESSION),
                response.headers.get(SESSION),
            )
        )
        if request.method == "GET" and response.status_code == 200:
            self.get_stream_open.set()

    def session_id(self) -> str:
        """The one session id the client was given; fails if it was given several."""
        ids = {e.got_session for e in self.exchanges if e.got_session is not None}
        assert len(ids) == 1, ids
        return ids.pop()

    def deletes(self) -> list[tuple[int, str | None]]:
        return [(e.status, e.sent_session) for e in self.exchanges if e.method == "DELETE"]


@asynccontextmanager
async def sdk_client(
    url: str, *, mode: str = "legacy", transport: httpx2.AsyncBaseTransport | None = None
) -> AsyncIterator[tuple[Client, Wire]]:
    """The SDK client (handshake lane unless told otherwise), and what it sent and got."""
    wire = Wire()
    async with (
        httpx2.AsyncClient(
            transport=transport, timeout=HTTP_TIMEOUT, event_hooks={"response": [wire.record]}
        ) as http,
        Client(
            streamable_http_client(url, http_client=http), mode=mode, client_info=CLIENT_INFO
        ) as client,
    ):
        yield client, wire


async def sdk_count(client: Client) -> int:
    result = await client.call_tool("count", {})
    assert not result.is_error, result
    assert result.structured_content is not None
    value = result.structured_content["result"]
    assert isinstance(value, int)
    return value


# -- raw HTTP --------------------------------------------------------------------------


def headers_for(
    session: str | None = None, version: str | None = HANDSHAKE, **extra: str
) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if session is not None:
        headers[SESSION] = session
    if version is not None:
        headers[VERSION] = version
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return headers


def messages_of(response: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of a response, whether a JSON body or an SSE stream."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return [response.json()]
    messages: list[Any] = []
    data: list[str] = []
    for line in [*response.text.splitlines(), ""]:
        if line == "":
            if any(data):  # a priming event carries an empty data field
                messages.append(json.loads("\n".join(data)))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return messages


def answer_to(response: httpx.Response, request_id: int | str) -> dict[str, Any]:
    found = [m for m in messages_of(response) if isinstance(m, dict) and m.get("id") == request_id]
    assert len(found) == 1, (response.status_code, response.text)
    answer: dict[str, Any] = found[0]
    return answer


async def raw_initialize(http: httpx.AsyncClient, url: str) -> str:
    """Open a session by hand, as a client would; returns its id."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "e2e-raw", "version": "1.0"},
        },
    }
    response = await http.post(url, json=initialize, headers=headers_for(version=None))
    assert response.status_code == 200, response.text
    session_id = response.headers[SESSION]
    assert MIDDLEWARE_ID.fullmatch(session_id), session_id
    assert answer_to(response, 0)["result"]["protocolVersion"] == HANDSHAKE
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = await http.post(url, json=initialized, headers=headers_for(session_id))
    assert response.status_code == 202, response.text
    return session_id


def tool_call(request_id: int, name: str = "count") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": {}},
    }


async def raw_count(http: httpx.AsyncClient, url: str, session_id: str, request_id: int) -> int:
    response = await http.post(url, json=tool_call(request_id), headers=headers_for(session_id))
    assert response.status_code == 200, response.text
    assert response.headers.get(SESSION) == session_id
    result = answer_to(response, request_id)["result"]
    assert not result.get("isError"), result
    value = result["structuredContent"]["result"]
    assert isinstance(value, int)
    return value


def assert_jsonrpc_error(
    response: httpx.Response, status: int, code: int, message: str, request_id: int | None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert SESSION not in response.headers
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": code, "message": message},
    }


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"


# -- servers -----------------------------------------------------------------------------


@dataclass
class Spawned:
    """A server process the test may signal or kill itself."""

    url: str
    proc: subprocess.Popen[bytes]

    def signal(self, signum: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def spawn(args: list[str]) -> Iterator[Spawned]:
    """Like :func:`run_server`, but hands over the process (run_server keeps it to itself)."""
    port = free_port()
    command = [sys.executable, *args, "--host", HOST, "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        spawned = Spawned(f"http://{HOST}:{port}/mcp", proc)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _port_open(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-4000:]
                    pytest.fail(f"{NOT_STARTED} {command}\n{output}")
                time.sleep(0.05)
            yield spawned
        finally:
            spawned.kill()


def start_all(stack: ExitStack, *arg_lists: list[str]) -> list[str]:
    """Start several servers at once (start-up is mostly imports); their /mcp URLs, in order."""
    managers = [run_server(args) for args in arg_lists]
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    for manager, future in zip(managers, futures, strict=True):
        if future.exception() is None:
            stack.push(manager.__exit__)
    return [f"{future.result()}/mcp" for future in futures]


@pytest.fixture(scope="module", params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def servers(mode: str) -> Iterator[tuple[str, str]]:
    """The example with the middleware (memory store), and the same SDK app without it."""
    with ExitStack() as stack:
        wrapped, bare = start_all(
            stack,
            [EXAMPLE, "--store", "memory://", *MODES[mode]],
            ["-c", BARE_APP, *MODES[mode]],
        )
        yield wrapped, bare


@pytest.fixture
def server(servers: tuple[str, str]) -> str:
    return servers[0]


@pytest.fixture
def bare_server(servers: tuple[str, str]) -> str:
    return servers[1]


# -- 1. the SDK client's session is the middleware's -------------------------------------


async def test_sdk_client_counts_on_the_middlewares_session_id(
    mode: str, server: str, bare_server: str
) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(server) as (client, wire):
            counts = [await sdk_count(client) for _ in range(3)]
            who = await client.call_tool("whoami", {})
            negotiated = client.protocol_version
        async with sdk_client(bare_server) as (_, bare_wire):
            pass
    assert counts == [1, 2, 3]
    session_id = wire.session_id()
    assert MIDDLEWARE_ID.fullmatch(session_id), session_id
    assert not SDK_APP_ID.fullmatch(session_id)
    first, *rest = wire.exchanges
    assert (first.method, first.sent_session) == ("POST", None)
    assert {e.sent_session for e in rest} == {session_id}
    assert who.structured_content == {"result": f"{CLIENT_INFO.name} on {negotiated}"}
    # What the same app hands out on its own: its ids (stateful) or none (stateless).
    bare_ids = {e.got_session for e in bare_wire.exchanges}
    if mode == "stateful":
        (bare_id,) = bare_ids
        assert bare_id is not None
        assert SDK_APP_ID.fullmatch(bare_id), bare_id
    else:
        assert bare_ids == {None}


async def test_each_sdk_client_gets_its_own_session(server: str) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(server) as (first, first_wire), sdk_client(server) as (second, _):
            assert await sdk_count(first) == 1
            assert await sdk_count(second) == 1
            assert await sdk_count(first) == 2
        async with sdk_client(server) as (third, third_wire):
            assert await sdk_count(third) == 1
    assert first_wire.session_id() != third_wire.session_id()


# -- 2. a restart on the same SQLite file keeps the session -------------------------------


async def test_session_survives_a_restart(mode: str, tmp_path: Path) -> None:
    """The first process is SIGKILLed (a crash; no graceful shutdown), a second one takes over."""
    args = [EXAMPLE, "--store", sqlite_url(tmp_path), *MODES[mode]]
    router = Rerouting()
    with anyio.fail_after(TEST_TIMEOUT), spawn(args) as first, ExitStack() as later:
        router.route_to(first.url)
        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http,
            sdk_client("http://mcp.invalid/mcp", transport=router) as (client, wire),
        ):
            assert [await sdk_count(client) for _ in range(2)] == [1, 2]
            first.kill()
            with pytest.raises(httpx.ConnectError):
                await http.post(first.url, json=tool_call(1))

            second_url = f"{later.enter_context(run_server(args))}/mcp"
            router.route_to(second_url)
            # The same SDK client, unaware of the restart, keeps its session...
            assert await sdk_count(client) == 3
            session_id = wire.session_id()
            # ...and so does anyone else holding the id, on the new process.
            assert await raw_count(http, second_url, session_id, 41) == 4
            assert await sdk_count(client) == 5
        # The client's exit (terminate_on_close) ended the session on the new process.
        assert wire.session_id() == session_id
        assert wire.deletes() == [(200, session_id)]
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            gone = await http.post(second_url, json=tool_call(5), headers=headers_for(session_id))
        assert_jsonrpc_error(gone, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND, 5)


@pytest.mark.parametrize("variant", ["bare-sdk-app", *MODES])
async def test_sigterm_with_a_connected_client_shuts_down(variant: str) -> None:
    """A graceful stop (a deploy) must not wait for connected clients to leave.

    uvicorn waits for open responses before it exits; the SDK's own GET stream
    ends when uvicorn starts shutting down. The bare app is the control case.
    """
    if variant in MODES:
        args = [EXAMPLE, "--store", "memory://", *MODES[variant]]
    else:
        args = ["-c", BARE_APP]
    with anyio.fail_after(TEST_TIMEOUT), spawn(args) as process:
        async with sdk_client(process.url) as (client, wire):
            await client.list_tools()
            with anyio.fail_after(HTTP_TIMEOUT):
                await wire.get_stream_open.wait()
            process.signal(signal.SIGTERM)
            try:
                await anyio.to_thread.run_sync(process.proc.wait, SHUTDOWN_GRACE)
                exited = True
            except subprocess.TimeoutExpired:
                exited = False
    assert exited, SHUTDOWN_HANG.format(grace=SHUTDOWN_GRACE)


# -- 3. two processes at once on one SQLite file -----------------------------------------


async def test_two_processes_share_one_session_exactly(mode: str, tmp_path: Path) -> None:
    args = [EXAMPLE, "--store", sqlite_url(tmp_path), *MODES[mode]]
    with anyio.fail_after(TEST_TIMEOUT), ExitStack() as stack:
        # Both start at once on a fresh file, as `uvicorn --workers 2` would.
        urls = start_all(stack, args, args)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            session_id = await raw_initialize(http, urls[0])
            alternating = [await raw_count(http, urls[i % 2], session_id, i) for i in range(10)]
            assert alternating == list(range(1, 11))

            concurrent: list[int] = []

            async def call(request_id: int) -> None:
                url = urls[request_id % 2]
                concurrent.append(await raw_count(http, url, session_id, request_id))

            async with anyio.create_task_group() as tg:
                for request_id in range(10, 30):
                    tg.start_soon(call, request_id)
            assert sorted(concurrent) == list(range(11, 31))

            # Deleted through one process, the session is gone on the other too.
            deleted = await http.delete(urls[1], headers=headers_for(session_id))
            assert deleted.status_code == 200, deleted.text
            response = await http.post(urls[0], json=tool_call(99), headers=headers_for(session_id))
            assert_jsonrpc_error(response, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND, 99)


# -- 4. DELETE ends the session ------------------------------------------------------------


async def test_client_exit_deletes_the_session(server: str) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(server) as (client, wire):
            assert await sdk_count(client) == 1
        session_id = wire.session_id()
        assert wire.deletes() == [(200, session_id)]
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(server, json=tool_call(7), headers=headers_for(session_id))
    assert_jsonrpc_error(response, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND, 7)


async def test_explicit_delete_then_404(server: str) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            session_id = await raw_initialize(http, server)
            assert await raw_count(http, server, session_id, 1) == 1
            deleted = await http.delete(server, headers=headers_for(session_id))
            assert deleted.status_code == 200, deleted.text
            again = await http.delete(server, headers=headers_for(session_id))
            call = await http.post(server, json=tool_call(2), headers=headers_for(session_id))
    assert_jsonrpc_error(again, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND, None)
    assert_jsonrpc_error(call, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND, 2)


# -- 5. the modern lane passes through untouched -----------------------------------------


def modern_request(
    request_id: int, method: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A 2026-07-28 request: the SDK wants the version and capabilities in ``_meta``."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {**(params or {}), "_meta": meta},
    }


MODERN_EXCHANGES = [
    pytest.param(
        "POST",
        modern_request(1, "server/discover"),
        {"mcp_method": "server/discover"},
        200,
        id="discover",
    ),
    pytest.param(
        "POST", modern_request(2, "tools/list"), {"mcp_method": "tools/list"}, 200, id="tools-list"
    ),
    pytest.param(
        "POST",
        modern_request(3, "tools/list"),
        {"mcp_method": "tools/list", "mcp_session_id": "not-a-session"},
        200,
        id="made-up-session-id",
    ),
    pytest.param(
        "POST",
        modern_request(4, "tools/call", {"name": "count", "arguments": {}}),
        {"mcp_method": "tools/call", "mcp_name": "count"},
        200,
        id="tools-call",
    ),
    pytest.param(
        "POST", {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, {}, 400, id="no-meta"
    ),
    pytest.param("DELETE", None, {}, 405, id="delete"),
    pytest.param("GET", None, {}, 405, id="get"),
]
"""Requests on the 2026-07-28 lane and the status the SDK app itself gives each."""


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    headers = sorted((k, v) for k, v in response.headers.multi_items() if k != "date")
    body: Any = response.json() if response.content else None
    return response.status_code, headers, body


@pytest.mark.parametrize(("method", "body", "extra", "status"), MODERN_EXCHANGES)
async def test_modern_lane_answers_are_the_apps_own(
    server: str,
    bare_server: str,
    method: str,
    body: dict[str, Any] | None,
    extra: dict[str, str],
    status: int,
) -> None:
    """The bare app's own answer (status, headers bar Date, body): nothing added or checked."""
    headers = headers_for(version=MODERN, **extra)
    with anyio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            wrapped = await http.request(method, server, json=body, headers=headers)
            bare = await http.request(method, bare_server, json=body, headers=headers)
    assert comparable(wrapped) == comparable(bare)
    assert wrapped.status_code == status
    assert SESSION not in wrapped.headers


async def test_sdk_client_on_the_modern_lane_gets_no_session(server: str) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(server, mode=MODERN) as (client, wire):
            tools = await client.list_tools()
            who = await client.call_tool("whoami", {})
    assert {tool.name for tool in tools.tools} == {"count", "whoami"}
    # No session reaches the tool on this lane: current_session() raises inside it.
    assert who.is_error
    assert wire.exchanges, "the client made no HTTP request"
    for exchange in wire.exchanges:
        assert (exchange.status, exchange.sent_session, exchange.got_session) == (200, None, None)


# -- 6. malformed requests through the real socket ---------------------------------------

TOO_LARGE = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"'
    + b"x" * DEFAULT_MAX_BODY_SIZE
    + b'"}}'
)


@pytest.mark.parametrize(
    ("body", "session", "status", "code", "message", "request_id"),
    [
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
            None,
            400,
            INVALID_REQUEST,
            MSG_SESSION_REQUIRED,
            1,
            id="missing-session-header",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
            "A" * 43,
            404,
            INVALID_REQUEST,
            MSG_SESSION_NOT_FOUND,
            1,
            id="unknown-session",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
            "not a valid\tid",
            404,
            INVALID_REQUEST,
            MSG_SESSION_NOT_FOUND,
            1,
            id="malformed-session",
        ),
        pytest.param(
            b'{"jsonrpc": "2.0", "id": 1, "method": ',
            None,
            400,
            PARSE_ERROR,
            MSG_PARSE_ERROR,
            None,
            id="bad-json",
        ),
        pytest.param(
            TOO_LARGE,
            None,
            413,
            INVALID_REQUEST,
            MSG_BODY_TOO_LARGE,
            None,
            id="body-over-the-limit",
        ),
    ],
)
async def test_malformed_requests_get_jsonrpc_errors(
    server: str,
    body: bytes,
    session: str | None,
    status: int,
    code: int,
    message: str,
    request_id: int | None,
) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(server, content=body, headers=headers_for(session))
            assert_jsonrpc_error(response, status, code, message, request_id)
            # The server is still fine afterwards, on a fresh connection.
            session_id = await raw_initialize(http, server)
            assert await raw_count(http, server, session_id, 2) == 1
