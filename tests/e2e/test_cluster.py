"""End to end: three instances behind nginx on one shared store — crashes, restarts, outages.

The CI-sized run of the harness in ``cluster/`` (``make cluster-demo`` runs the
full one and docs/reliability.md has its numbers). Per store (PostgreSQL, then
Redis, each in a namespace of its own) a module-scoped :class:`Cluster` starts
a TCP relay to the store, three uvicorn instances of
``examples/08_cluster_server.py`` and nginx round-robining over them; every
client is the official SDK client talking to nginx only. Each test runs one
scenario of :mod:`cluster.scenarios`, whose ``problems`` list each failed check.

nginx is installed with apt-get when missing; where it cannot be, the tests are
skipped with the reason (failed when MCP_SESSION_MW_REQUIRE_SERVICES is set).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from cluster.harness import Cluster
from cluster.nginx import NginxUnavailableError
from cluster.report import summary
from cluster.scenarios import CI, Counts, crash, rolling_restart, round_robin, store_outage
from cluster.stores import store_spec
from mcp_session_mw import MemoryStore, SessionMiddleware
from mcp_session_mw.jsonrpc import INTERNAL_ERROR
from mcp_session_mw.streams import MSG_NO_RESPONSE

from ..services import POSTGRES_URL, REDIS_URL, need_service, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

URLS = {"postgresql": POSTGRES_URL, "redis": REDIS_URL}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    name: str = request.param
    need_service(name)
    try:
        built = Cluster(store_spec(name, URLS[name]), say=print)
    except NginxUnavailableError as exc:
        unavailable(str(exc))
    with built:
        yield built


@pytest.fixture
async def healthy(cluster: Cluster) -> Cluster:
    """The cluster with every instance up (a failed test may have left one down)."""
    await cluster.ensure_all_running()
    return cluster


def passed(counts: Counts) -> bool:
    print(summary([counts]))
    return counts.problem_count == 0


async def test_round_robin_sessions_count_exactly_on_every_instance(healthy: Cluster) -> None:
    counts = await round_robin(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert counts.sessions == CI.round_robin_sessions
    assert counts.tool_calls == CI.round_robin_sessions * CI.calls_per_session
    assert not counts.failed_calls
    assert not counts.http, "no 404 and no 5xx"


async def test_sigkilled_producer_resume_elsewhere_replays_then_gets_the_orphan_error(
    healthy: Cluster,
) -> None:
    counts = await crash(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert (counts.streams, counts.lost, counts.duplicated) == (1, 0, 0)
    assert CI.crash_kill_at <= counts.events <= CI.crash_hold_at


async def test_rolling_restart_loses_no_event_of_a_surviving_producer(healthy: Cluster) -> None:
    counts = await rolling_restart(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert counts.sessions == CI.rolling_sessions
    assert counts.streams > 0
    assert (counts.lost, counts.duplicated, counts.server_errors()) == (0, 0, 0)


async def test_store_outage_answers_503_and_recovers_on_its_own(healthy: Cluster) -> None:
    counts = await store_outage(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert counts.http, "the outage was not seen"
    assert all(cause.startswith("503 ") for cause in counts.http), counts.http


# -- what the rolling restart found, reproduced in one process -----------------------------

HANDSHAKE = "2025-11-25"
FINAL = {"jsonrpc": "2.0", "id": 7, "result": {"content": []}}
RESUME_HUNG = (
    "a resumed stream ended with nothing: the stream is marked done but its final "
    "response was never stored, so the SDK client resumes again and again, forever"
)


async def app_cut_off_while_sending_its_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """A stateless app whose send of the final answer is cancelled, then it returns.

    This is what the SDK app does when uvicorn is told to exit just as a tool
    answers: sse-starlette cancels the task that is inside ``send`` with the
    answer, and the app returns without finishing the response.
    """
    body = json.loads((await receive())["body"])
    if body.get("method") == "initialize":
        result = {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "serverInfo": {"name": "cut-off", "version": "1"},
        }
        answer = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return
    if "id" not in body:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    with anyio.CancelScope() as cut:
        cut.cancel()
        event = f"event: message\ndata: {json.dumps(FINAL)}\n\n".encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})


def _headers(session_id: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": HANDSHAKE,
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    return headers


def _messages(text: str) -> list[Any]:
    return [
        json.loads(line[5:])
        for line in text.splitlines()
        if line.startswith("data:") and line[5:].strip()
    ]


async def test_a_response_cut_off_while_sending_its_answer_still_answers_a_resume() -> None:
    store = MemoryStore()
    app = SessionMiddleware(app_cut_off_while_sending_its_answer, store=store, mode="stateless")
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            initialize = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": HANDSHAKE,
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
            opened = await http.post("/mcp", json=initialize, headers=_headers())
            session_id = opened.headers["mcp-session-id"]
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "x"}}
            cut = await http.post("/mcp", json=call, headers=_headers(session_id))
            stream_id = cut.text.split("id: ", 1)[1].split(".", 1)[0]
            resume = _headers(
                session_id, accept="text/event-stream", last_event_id=f"{stream_id}.0"
            )
            resumed = await http.get("/mcp", headers=resume)
    assert cut.status_code == resumed.status_code == 200
    # Either the answer reached the store before the send was cancelled, or it
    # did not and the middleware stored an error for request 7 in its place;
    # either way a resume replays it (with its event id: stored, not made up).
    no_response = {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": INTERNAL_ERROR, "message": MSG_NO_RESPONSE},
    }
    replayed = [m for m in _messages(resumed.text) if m.get("id") == 7]
    assert len(replayed) == 1, RESUME_HUNG
    assert replayed[0] in (FINAL, no_response)
    assert "id: " in resumed.text.split("data:", 1)[0]
    assert all(m == replayed[0] for m in _messages(cut.text) if m.get("id") == 7)
