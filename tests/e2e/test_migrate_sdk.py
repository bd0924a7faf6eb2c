"""End to end: an SDK client's session moves to another store with ``mcp-session-mw migrate``.

A real SDK client opens a session through the middleware on store A (SQLite),
counts twice, the server stops, the command copies A into B (PostgreSQL or
Redis), a server on B takes over the URL, and the same client goes on: the
count carries on, nothing sends ``initialize`` again, and a GET with
``Last-Event-ID`` replays on B what the server on A stored after that event.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import anyio
import httpx
import pytest

from mcp_session_mw import create_store
from mcp_session_mw.streams import format_event_id

from ..services import POSTGRES_URL, REDIS_URL, need_service
from .server import run_server
from .test_sdk_client import (
    HTTP_TIMEOUT,
    TEST_TIMEOUT,
    Rerouting,
    headers_for,
    sdk_client,
    sdk_count,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SERVER = """
import argparse, importlib.util, json, uvicorn
from mcp_session_mw import SessionMiddleware, create_store
parser = argparse.ArgumentParser()
parser.add_argument("--store")
parser.add_argument("--options", default="{}")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
args = parser.parse_args()
spec = importlib.util.spec_from_file_location("example", "examples/01_sdk_server.py")
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
store = create_store(args.store, **json.loads(args.options))
app = SessionMiddleware(example.build_server().streamable_http_app(), store=store)
uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
"""
"""Example 1's server on a store URL with options (a private prefix)."""


@pytest.fixture(params=["postgresql", "redis"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str], list[str]]]:
    """B: its URL, its store options, the CLI flags naming them; wiped afterwards."""
    need_service(request.param)
    namespace = uuid.uuid4().hex[:10]
    if request.param == "redis":
        url, options = REDIS_URL, {"prefix": f"test:mig{namespace}:"}
    else:
        url, options = POSTGRES_URL, {"table_prefix": f"mig{namespace}_"}
    flags = [item for name, value in options.items() for item in ("--to-option", f"{name}={value}")]
    yield url, options, flags

    async def wipe() -> None:
        store = create_store(url, **options)
        await store.open()
        if request.param == "redis":
            await store.purge()  # type: ignore[attr-defined]
        else:
            await store.drop_schema()  # type: ignore[attr-defined]
        await store.close()

    anyio.run(wipe)


def _migrate(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_session_mw.cli", "migrate", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


async def test_a_migrated_sdk_session_carries_on_and_resumes_on_the_new_store(
    tmp_path: object, target: tuple[str, dict[str, str], list[str]]
) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path}/a.db"
    target_url, options, flags = target
    router = Rerouting()
    with anyio.fail_after(TEST_TIMEOUT * 2), ExitStack() as first_server:
        router.route_to(
            f"{first_server.enter_context(run_server(['-c', SERVER, '--store', source_url]))}/mcp"
        )
        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http,
            sdk_client("http://mcp.invalid/mcp", transport=router) as (client, wire),
        ):
            assert [await sdk_count(client) for _ in range(2)] == [1, 2]
            session_id = wire.session_id()
            first_server.close()  # the server on A stops

            moved = _migrate("--from", source_url, "--to", target_url, *flags)
            assert moved["sessions"] == 1
            assert moved["events"]
            assert _migrate("--from", source_url, "--to", target_url, *flags)["events"] == 0

            # A request stream of the first process, read on B by its key.
            b_store = create_store(target_url, **options)
            await b_store.open()
            key = b_store.key(session_id)
            streams = [s for s in await b_store.list_streams_by_key(key) if s.request_id]
            await b_store.close()
            answered = [s for s in streams if s.done and s.last_seq >= 1]
            assert answered, streams
            stream = answered[0]  # its priming event was seq 0, its answer is stored from 1

            second_args = ["-c", SERVER, "--store", target_url, "--options", json.dumps(options)]
            with run_server(second_args) as second:
                router.route_to(f"{second}/mcp")
                # The same client, with no new initialize, on B.
                assert await sdk_count(client) == 3
                resume = await http.get(
                    f"{second}/mcp",
                    headers=headers_for(
                        session_id,
                        accept="text/event-stream",
                        last_event_id=format_event_id(stream.stream_id, 0),
                    ),
                )
                assert resume.status_code == 200, resume.text
                assert f"id: {format_event_id(stream.stream_id, 1)}" in resume.text
                assert '"result"' in resume.text
                assert wire.session_id() == session_id
                initializes = [
                    e for e in wire.exchanges if e.method == "POST" and e.sent_session is None
                ]
                assert len(initializes) == 1
