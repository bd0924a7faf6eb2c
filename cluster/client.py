"""The official SDK client, pointed at the load balancer, with what it saw written down.

Each session is ``mcp.Client`` on the handshake lane (``mode="legacy"``) over
``streamable_http_client`` with an ``httpx2`` client of our own, whose transport
notes every response (method, status) and the stream id of every SSE response
(from its first event id), and every ``Last-Event-ID`` the client resumed with.
The SDK resumes broken streams by itself; nothing here helps it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import Implementation

HTTP_TIMEOUT = httpx2.Timeout(30.0, read=120.0)
"""Bounds a stuck request; generous, the box is small and shared."""
STREAM_UNANSWERED = "no answer within {limit:.0f} s; resumed {resumes} times, last from {last}"
LAST_EVENT_ID = "last-event-id"
SESSION_HEADER = "mcp-session-id"


@dataclass
class Wire:
    """What one session's HTTP client sent and got."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    stream_ids: list[tuple[str, str]] = field(default_factory=list)
    """(tool name, stream id) of every tools/call answered with SSE, in order."""
    resumed_from: list[str] = field(default_factory=list)
    """Every Last-Event-ID sent on a GET."""
    session_id: str = ""
    """The Mcp-Session-Id the server gave."""
    last_call_status: int = 0
    """The HTTP status of the latest tools/call."""

    def count(self, predicate: str = "5xx") -> int:
        if predicate == "5xx":
            return sum(n for (_, status), n in self.statuses.items() if status >= 500)
        return sum(n for (_, status), n in self.statuses.items() if str(status) == predicate)


class _FirstEventId(httpx2.AsyncByteStream):
    """Passes a response body through and hands its first ``id:`` field to ``found``."""

    def __init__(self, inner: httpx2.AsyncByteStream, found: Callable[[str], None]) -> None:
        self._inner = inner
        self._found: Callable[[str], None] | None = found
        self._pending = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            if self._found is not None:
                self._pending += chunk
                lines = self._pending.replace(b"\r", b"\n").split(b"\n")
                self._pending = lines.pop()
                for line in lines:
                    if line.startswith(b"id:"):
                        self._found(line[3:].strip().decode())
                        self._found = None
                        break
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class WatchedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and LAST_EVENT_ID in request.headers:
            self._wire.resumed_from.append(request.headers[LAST_EVENT_ID])
        response = await self._inner.handle_async_request(request)
        self._wire.statuses[request.method, response.status_code] += 1
        if not self._wire.session_id:
            self._wire.session_id = response.headers.get(SESSION_HEADER, "")
        tool = _tool_called(request)
        if tool is not None:
            self._wire.last_call_status = response.status_code
        is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
        if tool is None or not is_sse:
            return response
        stream_ids = self._wire.stream_ids
        stream_ids.append((tool, ""))
        index = len(stream_ids) - 1

        def found(event_id: str) -> None:
            stream_ids[index] = (tool, event_id.partition(".")[0])

        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_FirstEventId(response.stream, found),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _tool_called(request: httpx2.Request) -> str | None:
    if request.method != "POST":
        return None
    try:
        body = json.loads(request.content)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("method") == "tools/call":
        name = body.get("params", {}).get("name")
        return name if isinstance(name, str) else None
    return None


@dataclass
class StreamRecord:
    """One call of the ``stream`` tool as the client saw it."""

    n: int
    started: float
    ended: float = 0.0
    progress: list[int] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    result_pid: int | None = None
    error: str | None = None
    error_code: int | None = None
    stream_id: str = ""
    unanswered: bool = False
    """True when the call was given up after ``limit`` seconds without an answer."""

    @property
    def lost(self) -> int:
        return len(set(range(1, self.n + 1)) - set(self.progress))

    @property
    def duplicated(self) -> int:
        return len(self.progress) - len(set(self.progress))

    @property
    def producer(self) -> int | None:
        return self.result_pid if self.result_pid is not None else min(self.pids, default=None)


class Session:
    """One SDK client session and what it saw."""

    def __init__(self, client: Client, wire: Wire) -> None:
        self.client = client
        self.wire = wire
        self.counted = 0
        """Successful ``count`` calls so far."""

    async def count(self) -> tuple[int, int]:
        """Call ``count``: (the session's count, the pid that counted). Raises MCPError."""
        result = await self.client.call_tool("count", {})
        if result.is_error or result.structured_content is None:
            raise MCPError(0, f"count failed: {result.content}")
        self.counted += 1
        return int(result.structured_content["count"]), int(result.structured_content["pid"])

    async def stream(
        self,
        n: int,
        *,
        delay_ms: int = 0,
        hold_at: int | None = None,
        on_step: Callable[[StreamRecord], Awaitable[None]] | None = None,
        limit: float | None = None,
    ) -> StreamRecord:
        """Call ``stream``; an error (MCPError) is recorded, not raised.

        With ``limit``, a call that has no answer after that many seconds is
        given up and recorded as ``unanswered`` (the session stays usable).
        """
        record = StreamRecord(n, time.monotonic())
        before = len(self.wire.stream_ids)
        resumes_before = len(self.wire.resumed_from)
        with anyio.move_on_after(limit) as bound:
            await self._call_stream(record, on_step, delay_ms, hold_at)
        if bound.cancelled_caught:
            record.unanswered = True
            resumed = self.wire.resumed_from[resumes_before:]
            record.error = STREAM_UNANSWERED.format(
                limit=limit, resumes=len(resumed), last=resumed[-1] if resumed else None
            )
        record.ended = time.monotonic()
        for tool, stream_id in self.wire.stream_ids[before:]:
            if tool == "stream":
                record.stream_id = stream_id
        return record

    async def _call_stream(
        self,
        record: StreamRecord,
        on_step: Callable[[StreamRecord], Awaitable[None]] | None,
        delay_ms: int,
        hold_at: int | None,
    ) -> None:
        n = record.n

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            record.progress.append(int(progress))
            if message is not None:
                record.pids.add(int(message.rsplit(" ", 1)[1]))
            if on_step is not None:
                await on_step(record)

        arguments: dict[str, int] = {"n": n, "delay_ms": delay_ms}
        if hold_at is not None:
            arguments["hold_at"] = hold_at
        try:
            result = await self.client.call_tool("stream", arguments, progress_callback=on_progress)
        except MCPError as exc:
            record.error, record.error_code = exc.message, exc.code
        else:
            if result.is_error or result.structured_content is None:
                record.error = f"tool error: {result.content}"
            else:
                record.result_pid = int(result.structured_content["pid"])


@asynccontextmanager
async def open_session(url: str, name: str = "cluster-harness") -> AsyncIterator[Session]:
    wire = Wire()
    async with (
        httpx2.AsyncClient(transport=WatchedTransport(wire), timeout=HTTP_TIMEOUT) as http,
        Client(
            streamable_http_client(url, http_client=http),
            mode="legacy",
            client_info=Implementation(name=name, version="1.0"),
        ) as client,
    ):
        yield Session(client, wire)
