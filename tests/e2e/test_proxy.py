"""End to end: ``mcp-session-mw proxy`` in front of a server on the official TypeScript SDK.

Two upstream processes (``tests/e2e/ts_upstream/server.mjs``, stateful, sessions
in their own memory) each sit behind their own proxy process; the two proxies
share one store (PostgreSQL, then Redis). The official Python SDK client talks
to the proxies through :class:`Alternating`, which sends each HTTP request to
the other proxy than the one before, so every session is re-created in both
upstreams and every server-to-client reply may reach the proxy that did not
ask. What must hold:

- calls alternate proxies and every one is answered; the client only ever
  holds the proxies' durable id, never an upstream's own;
- an upstream SIGKILLed is a 502 while it is down, and once restarted its
  sessions are re-created on the next call;
- a proxy SIGKILLed and restarted serves the same sessions;
- a progress stream cut on one proxy resumes on the other with every event
  exactly once;
- elicitation completes when the reply lands on the other proxy.

Processes restart on their old port, so URLs stay valid. Session ids are
random and the SDK client deletes its session on exit.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager, suppress
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

from mcp_session_mw.jsonrpc import INTERNAL_ERROR
from mcp_session_mw.proxy.errors import MSG_UNREACHABLE

from ..services import POSTGRES_URL, REDIS_URL, need_service
from .server import ServerProcess, server_process
from .ts_server import SCRIPT as UPSTREAM_SCRIPT
from .ts_server import node

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SESSION = "mcp-session-id"
LAST_EVENT_ID = "last-event-id"
HANDSHAKE = "2025-11-25"
CLIENT_INFO = Implementation(name="e2e-proxy", version="1.0")
TEST_TIMEOUT = 90.0
"""Bounds a hang; generous because the box has two shared cores and four processes start."""
HTTP_TIMEOUT = httpx2.Timeout(15.0, read=60.0)
CALLS = 4
USER = {"username": "alice", "email": "alice@example.com"}
STEPS = 12
STEP_MS = 100
CUT_AFTER = 3
"""Progress events the first connection reads before the client drops it."""


# -- processes ---------------------------------------------------------------------------


class Restartable:
    """One process of this module; SIGKILLed and started again on the same port."""

    def __init__(self, args: list[str], stack: ExitStack) -> None:
        self._args = args
        self._stack = stack
        self.process: ServerProcess = self._start(None)

    def _start(self, port: int | None) -> ServerProcess:
        manager: AbstractContextManager[ServerProcess] = server_process(self._args, port=port)
        return self._stack.enter_context(manager)

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.proc.pid, signal.SIGKILL)
        self.process.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.process = self._start(self.port)


@dataclass
class Pair:
    """Two upstreams, a proxy in front of each, one shared store."""

    upstreams: list[Restartable]
    proxies: list[Restartable]

    @property
    def urls(self) -> list[str]:
        return [f"{p.url}/mcp" for p in self.proxies]


def _start_all(factories: list[Any]) -> list[Restartable]:
    with ThreadPoolExecutor(len(factories)) as pool:  # start-up is mostly imports
        futures = [pool.submit(f) for f in factories]
    return [f.result() for f in futures]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    name: str = request.param
    need_service(name)
    node()
    store = POSTGRES_URL if name == "postgresql" else REDIS_URL
    with ExitStack() as stack:
        upstreams = _start_all([lambda: Restartable([UPSTREAM_SCRIPT], stack)] * 2)

        def proxy(upstream: Restartable) -> Restartable:
            args = ["-m", "mcp_session_mw.cli", "proxy", "--upstream", f"{upstream.url}/mcp"]
            return Restartable([*args, "--store", store, "--log-level", "warning"], stack)

        proxies = _start_all([lambda u=u: proxy(u) for u in upstreams])
        yield Pair(upstreams, proxies)


# -- the client, alternating proxies -------------------------------------------------------


@dataclass
class Seen:
    method: str
    index: int
    sent: Any
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    answered: anyio.Event = field(default_factory=anyio.Event)


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


class Alternating(httpx2.AsyncBaseTransport):
    """Each request to the other proxy than the one before; every exchange recorded."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.seen: list[Seen] = []
        self._turn = 0
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        index = self._turn % 2
        self._turn += 1
        target = httpx2.URL(self.pair.urls[index])
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        content = await request.aread()
        seen = Seen(request.method, index, json.loads(content) if content else None)
        self.seen.append(seen)
        response = await self._inner.handle_async_request(request)
        seen.status = response.status_code
        seen.headers = dict(response.headers)
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

    async def all_answered(self) -> None:
        """Wait for every request sent so far (a relayed reply is answered once delivered)."""
        for seen in list(self.seen):
            await seen.answered.wait()

    def session_ids(self) -> set[str]:
        return {s.headers[SESSION] for s in self.seen if SESSION in s.headers}


@dataclass
class Heard:
    elicited: list[str] = field(default_factory=list)

    async def elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.elicited.append(params.message)
        return types.ElicitResult(action="accept", content=dict(USER))


@asynccontextmanager
async def sdk_client(router: Alternating, heard: Heard | None = None) -> AsyncIterator[Client]:
    heard = heard or Heard()
    async with (
        httpx2.AsyncClient(transport=router, timeout=HTTP_TIMEOUT) as http,
        Client(
            streamable_http_client("http://mcp.invalid/mcp", http_client=http),
            mode="legacy",
            client_info=CLIENT_INFO,
            elicitation_callback=heard.elicitation,
        ) as client,
    ):
        yield client


def text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    [content] = result.content
    assert isinstance(content, types.TextContent), content
    return content.text


async def whoami(client: Client) -> dict[str, Any]:
    seen: dict[str, Any] = json.loads(text_of(await client.call_tool("whoami", {})))
    return seen


async def whoami_on_both(client: Client, router: Alternating) -> list[dict[str, Any]]:
    """``whoami`` until both proxies answered one (twice, as requests alternate); all results."""
    seen: list[dict[str, Any]] = []
    for _ in range(6):
        seen.append(await whoami(client))
        if len(set(proxy_of(router, "whoami")[-len(seen) :])) == 2:
            break
    return seen


def proxy_of(router: Alternating, tool: str) -> list[int]:
    return [
        s.index
        for s in router.seen
        if isinstance(s.sent, dict) and s.sent.get("params", {}).get("name") == tool
    ]


# -- raw HTTP -------------------------------------------------------------------------------


def raw_headers(session_id: str, **extra: str) -> dict[str, str]:
    """Headers of a request in ``session_id`` (none yet: ``""``), plus ``extra``."""
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": HANDSHAKE,
        **extra,
    }
    if session_id:
        headers[SESSION] = session_id
    return headers


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    """(id, JSON data) of each SSE event with data in ``text``."""
    events: list[tuple[str | None, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event_id = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data and "".join(data):
            events.append((event_id, json.loads("\n".join(data))))
    return events


# -- tests --------------------------------------------------------------------------------------


async def test_calls_alternate_proxies_and_the_client_holds_only_the_durable_id(
    pair: Pair,
) -> None:
    router = Alternating(pair)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router) as client:
            texts = [
                text_of(await client.call_tool("echo", {"text": f"n{n}"})) for n in range(CALLS)
            ]
            seen = await whoami_on_both(client, router)
    assert texts == [f"n{n}" for n in range(CALLS)]
    assert set(proxy_of(router, "echo")) == {0, 1}
    assert {s["pid"] for s in seen} == {p.process.proc.pid for p in pair.upstreams}
    [durable] = router.session_ids()
    upstream_ids = {s["session"] for s in seen}
    assert len(upstream_ids) == 2
    assert durable not in upstream_ids
    for exchange in router.seen:  # no header, and no body but whoami's own, names them
        assert not upstream_ids & set(exchange.headers.values())
        if exchange.sent and exchange.sent.get("params", {}).get("name") != "whoami":
            assert not any(i in exchange.body.decode() for i in upstream_ids)
    for item, proxy in zip(seen, proxy_of(router, "whoami"), strict=True):
        assert item["host"] == pair.upstreams[proxy].url.split("//")[1]
        assert item["forwarded_for"] == "127.0.0.1"
        assert item["forwarded_host"] == pair.proxies[proxy].url.split("//")[1]
        assert item["forwarded_proto"] == "http"


async def test_an_upstream_killed_is_502_then_restarted_serves_the_session(pair: Pair) -> None:
    router = Alternating(pair)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router) as client:
            before = await whoami_on_both(client, router)
            [session_id] = router.session_ids()
            pair.upstreams[0].kill()
            call = {"jsonrpc": "2.0", "id": 99, "method": "tools/call"}
            call["params"] = {"name": "echo", "arguments": {"text": "down"}}
            async with httpx.AsyncClient(timeout=30) as raw:
                answer = await raw.post(pair.urls[0], json=call, headers=raw_headers(session_id))
            assert answer.status_code == 502, answer.text
            assert answer.json()["error"] == {"code": INTERNAL_ERROR, "message": MSG_UNREACHABLE}
            await anyio.to_thread.run_sync(pair.upstreams[0].restart)
            after = await whoami_on_both(client, router)
            texts = [
                text_of(await client.call_tool("echo", {"text": f"n{n}"})) for n in range(CALLS)
            ]
    assert texts == [f"n{n}" for n in range(CALLS)]
    restarted = pair.upstreams[0].process.proc.pid
    assert restarted in {s["pid"] for s in after}
    assert restarted not in {s["pid"] for s in before}
    assert router.session_ids() == {session_id}


async def test_a_proxy_killed_and_restarted_serves_the_same_session(pair: Pair) -> None:
    router = Alternating(pair)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router) as client:
            assert text_of(await client.call_tool("echo", {"text": "before"})) == "before"
            await anyio.to_thread.run_sync(pair.proxies[1].restart)
            texts = [
                text_of(await client.call_tool("echo", {"text": f"n{n}"})) for n in range(CALLS)
            ]
    assert texts == [f"n{n}" for n in range(CALLS)]
    assert len(router.session_ids()) == 1
    assert set(proxy_of(router, "echo")) == {0, 1}


async def test_a_progress_stream_cut_on_one_proxy_resumes_on_the_other_exactly_once(
    pair: Pair,
) -> None:
    router = Alternating(pair)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router):
            [session_id] = router.session_ids()
            call = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {
                    "name": "count",
                    "arguments": {"steps": STEPS, "delay_ms": STEP_MS},
                    "_meta": {"progressToken": "p"},
                },
            }
            first: list[tuple[str | None, Any]] = []
            async with httpx.AsyncClient(timeout=30) as raw:
                headers = raw_headers(session_id)
                async with raw.stream("POST", pair.urls[0], json=call, headers=headers) as response:
                    assert response.status_code == 200
                    text = ""
                    async for chunk in response.aiter_text():
                        text += chunk
                        first = sse_events(text)
                        progress = [e for e in first if e[1].get("method")]
                        if len(progress) >= CUT_AFTER:
                            break  # the client drops the connection mid-stream
                last_id = first[-1][0]
                assert last_id is not None
                resume = raw_headers(session_id, **{LAST_EVENT_ID: last_id})
                resume["accept"] = "text/event-stream"
                rest = await raw.get(pair.urls[1], headers=resume)
            assert rest.status_code == 200, rest.text
    events = first + sse_events(rest.text)
    steps = [e[1]["params"]["progress"] for e in events if e[1].get("method")]
    results = [e[1] for e in events if e[1].get("id") == 7]
    assert steps == list(range(1, STEPS + 1))
    assert len(results) == 1
    assert results[0]["result"]["content"][0]["text"] == f"counted {STEPS}"
    ids = [e[0] for e in events]
    assert len(ids) == len(set(ids))


async def test_elicitation_completes_when_replies_land_on_the_other_proxy(pair: Pair) -> None:
    router = Alternating(pair)
    heard = Heard()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_client(router, heard) as client:
            texts = [
                text_of(await client.call_tool("test_elicitation", {"message": f"who {n}?"}))
                for n in range(CALLS)
            ]
            await router.all_answered()
    assert (
        texts
        == [f"User response: action=accept, content={json.dumps(USER, separators=(',', ':'))}"]
        * CALLS
    )
    assert heard.elicited == [f"who {n}?" for n in range(CALLS)]
    asked = {
        json.dumps(m[1]["id"]): s.index
        for s in router.seen
        for m in sse_events(s.body.decode())
        if m[1].get("method") == "elicitation/create"
    }
    replies = [
        (s.index, s.status)
        for s in router.seen
        if isinstance(s.sent, dict)
        and "method" not in s.sent
        and json.dumps(s.sent.get("id")) in asked
    ]
    assert len(replies) == CALLS
    assert all(status == 202 for _, status in replies), replies
    relayed = [
        1
        for s in router.seen
        if isinstance(s.sent, dict)
        and "method" not in s.sent
        and asked.get(json.dumps(s.sent.get("id"))) not in (None, s.index)
    ]
    assert relayed, "no reply reached the proxy that did not ask: nothing was relayed"


async def test_a_forwarded_client_is_listed_once_then_the_peer(pair: Pair) -> None:
    """X-Forwarded-For from a balancer in front gets the proxy's TCP peer appended, once."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"},
        },
    }
    forwarded = {"x-forwarded-for": "203.0.113.9"}
    with anyio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(timeout=30) as raw:
            opened = await raw.post(pair.urls[0], json=init, headers=raw_headers("", **forwarded))
            assert opened.status_code == 200, opened.text
            session_id = opened.headers[SESSION]
            headers = raw_headers(session_id, **forwarded)
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await raw.post(pair.urls[0], json=done, headers=headers)).status_code == 202
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
            call["params"] = {"name": "whoami", "arguments": {}}
            answer = await raw.post(pair.urls[0], json=call, headers=headers)
            assert (await raw.delete(pair.urls[0], headers=headers)).status_code == 200
    [(_, reply)] = [e for e in sse_events(answer.text) if e[1].get("id") == 2]
    seen = json.loads(reply["result"]["content"][0]["text"])
    assert seen["forwarded_for"] == "203.0.113.9, 127.0.0.1"
