"""Prometheus metrics, the /metrics endpoint, store spans, and running without either extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.types import Message

from mcp_session_mw import MemoryStore, SessionMiddleware, SessionRecord, StreamState, relay
from mcp_session_mw import metrics as metrics_module
from mcp_session_mw.janitor import Janitor
from mcp_session_mw.metrics import SPAN_PREFIX, instrument, metrics_app, refresh_active_sessions
from mcp_session_mw.relay import PENDING_KEY
from mcp_session_mw.streams import MSG_EVENTS_LOST, StreamOptions, follow_stream

from .asgi_lifespan import ACCEPT, BASE_URL, PROTOCOL_VERSION, RawMCP, messages

pytestmark = pytest.mark.anyio


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Deltas:
    """Counter values now, to compare with later (other tests count into the same registry)."""

    def __init__(self, *names: tuple[str, dict[str, str]]) -> None:
        self.names = names
        self.before = [sample(name, **labels) for name, labels in names]

    def now(self) -> list[float]:
        return [
            sample(name, **labels) - before
            for (name, labels), before in zip(self.names, self.before, strict=True)
        ]


def build_app() -> Starlette:
    server = MCPServer("metrics")

    @server.tool()
    async def steps() -> int:
        """Answers on an SSE stream: one stored event."""
        return 3

    return server.streamable_http_app()


@asynccontextmanager
async def client_for(middleware: SessionMiddleware, app: Starlette) -> AsyncIterator[RawMCP]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield RawMCP(client, f"{BASE_URL}/mcp")


def record(ttl: float) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version=PROTOCOL_VERSION,
        requested_protocol_version=PROTOCOL_VERSION,
        client_info={},
        capabilities={},
        principal=None,
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
    )


async def test_session_lifecycle_is_counted() -> None:
    counted = Deltas(
        ("mcp_session_sessions_created_total", {}),
        ("mcp_session_sessions_resumed_total", {}),
        ("mcp_session_sessions_deleted_total", {}),
        ("mcp_session_sessions_expired_total", {}),
        ("mcp_session_events_stored_total", {}),
        ("mcp_session_store_seconds_count", {"operation": "create"}),
        ("mcp_session_store_seconds_count", {"operation": "load"}),
    )
    store = MemoryStore()
    first_app, second_app = build_app(), build_app()
    async with client_for(SessionMiddleware(first_app, store=store), first_app) as one:
        await one.initialize()
        await one.call_tool("steps")
        async with client_for(SessionMiddleware(second_app, store=store), second_app) as two:
            two.session_id = one.session_id
            await two.call_tool("steps")  # re-created in the second app
            assert (await two.client.delete(two.url, headers=two.headers())).status_code == 200
    await store.create("expired", record(ttl=0.01))
    await anyio.sleep(0.02)
    assert await Janitor(store, 60).turn() == 1
    created, resumed, deleted, expired, stored, creates, loads = counted.now()
    assert (created, resumed, deleted, expired) == (1, 1, 1, 1)
    assert stored == 2  # each call's result
    assert creates == 2  # the session and the expired one
    assert loads >= 3


async def test_rejections_are_counted_by_reason_and_status() -> None:
    counted = Deltas(
        ("mcp_session_rejected_requests_total", {"reason": "session_not_found", "status": "404"}),
        ("mcp_session_rejected_requests_total", {"reason": "parse_error", "status": "400"}),
        ("mcp_session_rejected_requests_total", {"reason": "session_required", "status": "400"}),
    )
    app = build_app()
    async with client_for(SessionMiddleware(app, store="memory://"), app) as client:
        headers = {"accept": ACCEPT, "content-type": "application/json"}
        body = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
        await client.client.post(
            client.url, headers={**headers, "mcp-session-id": "x"}, content=body
        )
        await client.client.post(client.url, headers=headers, content=b"{not json")
        await client.client.post(client.url, headers=headers, content=body)
        await client.client.post(client.url, headers=headers, content=body)
    assert counted.now() == [1, 1, 2]


async def test_replays_and_gaps_are_counted() -> None:
    counted = Deltas(
        ("mcp_session_events_replayed_total", {}),
        ("mcp_session_replay_gaps_total", {}),
    )
    store = MemoryStore()
    app = build_app()
    async with client_for(SessionMiddleware(app, store=store), app) as client:
        await client.initialize()
        assert client.session_id is not None
        stream = "0123456789abcdef"
        await store.open_stream(client.session_id, StreamState(stream, request_id=7))
        for n in range(5):
            # The last one answers request 7, as a finished stream's last event does.
            data = f'{{"n":{n}}}' if n < 4 else f'{{"n":{n},"id":7,"result":{{}}}}'
            await store.append_event(client.session_id, stream, data, max_events=3)
        await store.finish_stream(client.session_id, stream)
        get_headers = {**client.headers(), "accept": "text/event-stream"}
        resumed = await client.client.get(
            client.url, headers={**get_headers, "last-event-id": f"{stream}.3"}
        )
        assert [m["n"] for m in messages(resumed)] == [3, 4]
        lost = await client.client.get(
            client.url, headers={**get_headers, "last-event-id": f"{stream}.1"}
        )
        assert messages(lost)[0]["error"]["message"] == MSG_EVENTS_LOST
    assert counted.now() == [2, 1]


async def test_metrics_endpoint_serves_the_registry_and_counts_live_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_module, "_watched", weakref.WeakSet())  # other tests' stores
    app = build_app()
    endpoint = httpx.ASGITransport(app=metrics_app())
    async with httpx.AsyncClient(transport=endpoint, base_url=BASE_URL) as scraper:
        async with client_for(SessionMiddleware(app, store="memory://"), app) as client:
            await client.initialize()  # opens the store: it is watched from now on
            await refresh_active_sessions(max_age=0)
            assert sample("mcp_session_active_sessions") == 1
            await RawMCP(client.client, client.url).initialize()
            await RawMCP(client.client, client.url).initialize()
            await refresh_active_sessions()  # a count younger than max_age is kept
            assert sample("mcp_session_active_sessions") == 1
            await refresh_active_sessions(max_age=0)
            assert sample("mcp_session_active_sessions") == 3
            page = await scraper.get("/metrics")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/plain")
        assert "mcp_session_sessions_created_total" in page.text
        assert 'mcp_session_store_seconds_bucket{le="0.001",operation="load"}' in page.text
        openmetrics = await scraper.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")
        head = await scraper.head("/metrics")
        assert (head.status_code, head.content) == (200, b"")
        post = await scraper.post("/metrics")
        assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


async def test_store_calls_get_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(metrics_module, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(metrics_module, "_tracing", lambda: True)
    store = instrument(MemoryStore())
    await store.create("traced", record(ttl=60))
    assert await store.load("traced") is not None
    assert await store.try_lock("job", 5)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [SPAN_PREFIX + op for op in ("create", "load", "try_lock")]
    assert spans[1].attributes is not None
    assert spans[1].attributes["mcp_session_mw.store"] == "MemoryStore"
    assert all("traced" not in str(s.attributes) for s in spans)  # never the session id


def test_instrument_keeps_the_store_object_and_is_idempotent() -> None:
    store = MemoryStore()
    assert instrument(store) is store
    wrapped = store.load
    assert instrument(store) is store
    assert store.load is wrapped
    assert isinstance(store, MemoryStore)


def test_without_the_extras_nothing_is_recorded_and_the_endpoint_says_so() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None
        sys.modules["opentelemetry"] = None
        import anyio, httpx
        from starlette.applications import Starlette
        from mcp_session_mw import MemoryStore, SessionMiddleware, MissingExtraError
        from mcp_session_mw import metrics

        store = MemoryStore()
        middleware = SessionMiddleware(Starlette(), store=store)
        assert not metrics.enabled()
        assert "load" not in vars(store)  # not wrapped: no cost at all

        async def main() -> None:
            transport = httpx.ASGITransport(app=middleware)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answer = await client.post("/mcp", content=b"{", headers={
                    "content-type": "application/json", "accept": "application/json"})
                assert answer.status_code == 400
            await metrics.refresh_active_sessions(max_age=0)

        anyio.run(main)
        try:
            metrics.metrics_app()
        except MissingExtraError as exc:
            print("missing:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "missing:" in done.stdout
    assert "prometheus" in done.stdout


def test_store_seconds_buckets_count_each_call_once_up_to_its_bound() -> None:
    observe = metrics_module.STORE_SECONDS.labels("test_buckets").observe
    for seconds in (0.0001, 0.001, 0.0011, 0.3, 9.0):  # 0.001 is on a bound: le is inclusive
        observe(seconds)

    def bucket(le: str) -> float:
        return sample("mcp_session_store_seconds_bucket", operation="test_buckets", le=le)

    assert bucket("0.0005") == 1
    assert bucket("0.001") == 2
    assert bucket("0.0025") == 3
    assert bucket("0.25") == 3
    assert bucket("0.5") == 4
    assert bucket("5.0") == 4
    assert bucket("+Inf") == 5
    assert sample("mcp_session_store_seconds_count", operation="test_buckets") == 5
    total = sample("mcp_session_store_seconds_sum", operation="test_buckets")
    assert total == pytest.approx(0.0001 + 0.001 + 0.0011 + 0.3 + 9.0)


async def test_a_served_stream_is_counted_open_while_it_is_served() -> None:
    store = MemoryStore()
    now = store.now()
    record = SessionRecord(
        key="",
        protocol_version=PROTOCOL_VERSION,
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
        ttl=60,
    )
    await store.create("sid", record)
    stream = "0123456789abcdef"
    await store.open_stream("sid", StreamState(stream, request_id=7))
    await store.append_event("sid", stream, '{"n":1}')
    await store.append_event("sid", stream, '{"id":7,"result":{}}')
    await store.finish_stream("sid", stream)
    before = sample("mcp_session_streams_open")
    seen: list[float] = []
    body = b""

    async def send(message: Message) -> None:
        nonlocal body
        if message["type"] == "http.response.body" and message.get("body"):
            body += message["body"]
            seen.append(sample("mcp_session_streams_open") - before)

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.fail_after(10):
        await follow_stream(
            store=store,
            session_id="sid",
            stream_id=stream,
            after_seq=0,
            send=send,
            receive=receive,
            options=StreamOptions(),
        )
    # Both events were sent, and every frame while the stream counted as open.
    assert b'{"n":1}' in body
    assert b'"result"' in body
    assert seen
    assert seen == [1.0] * len(seen)
    assert sample("mcp_session_streams_open") == before


async def test_a_reply_handed_to_its_owner_is_counted() -> None:
    counted = Deltas(("mcp_session_relayed_replies_total", {}))
    store = MemoryStore()
    now = store.now()
    record = SessionRecord(
        key="",
        protocol_version=PROTOCOL_VERSION,
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
        ttl=60,
        meta={PENDING_KEY: {'"k"': ["proc-a", 7]}},
    )
    await store.create("sid", record)

    async def owner_takes_it() -> None:
        await anyio.sleep(0.1)
        await relay.settle(store, "sid", '"k"')

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(owner_takes_it)
            assert await relay.hand_over(store, "sid", "proc-a", b"{}", '"k"', 10.0)
    assert counted.now() == [1]
