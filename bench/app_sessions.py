"""Benchmark: what a held app session costs (RSS) against what re-creating one costs (ms).

In re-hydration mode each process keeps app sessions as a cache: a held one
answers at once, a missing one is re-created in the app (``initialize`` +
``notifications/initialized``) from the store. This measures both sides, in
process (``httpx.ASGITransport``, the middleware's lifespan running, so every
held app session has its GET-stream worker, as in production), against the
official SDK's stateful app (``MCPServer``, one tool, no session cap):

- ``held``: RSS (``VmRSS``) before and after opening N sessions that all stay
  held (``max_local_sessions`` above N): bytes per held app session.
- ``recreate``: ``tools/call`` latency on a held session, and on one this
  process does not hold (``max_local_sessions=1``, two sessions taken in turn,
  so every call re-creates and evicts), in alternating rounds: the difference
  is the re-creation cost.
- ``scale``: 100,000 sessions created (``initialize`` through the middleware,
  or with ``--seed`` straight in the store, as initialize writes them), then a
  ``tools/call`` on a sample of them (each re-created, the least recently used
  closed), in one process with the shipped defaults: the process's RSS at the
  end and at its peak.

Each part runs in a fresh subprocess so its RSS is its own.

    .venv/bin/python bench/app_sessions.py
    .venv/bin/python bench/app_sessions.py --parts scale --sessions 100000 --store sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo"}}


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@asynccontextmanager
async def serving(store_url: str, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serving_with(store_url, **options) as (client, _):
        yield client


@asynccontextmanager
async def serving_with(
    store_url: str, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    sys.path.insert(0, str(ROOT))
    from mcp.server.mcpserver import MCPServer

    from mcp_session_mw import SessionMiddleware
    from tests.asgi_lifespan import lifespan

    server = MCPServer("bench")

    @server.tool()
    async def echo() -> str:
        return "ok"

    app = server.streamable_http_app(max_sessions=None)
    middleware = SessionMiddleware(app, store=store_url, cleanup_interval=None, **options)
    async with lifespan(middleware):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            yield client, middleware


async def seed(middleware: Any, count: int) -> list[str]:
    """Create ``count`` sessions straight in the store, as initialize would have."""
    from mcp_session_mw.protocol import mint_session_id
    from mcp_session_mw.records import SessionRecord

    await middleware.open_store()
    ids = []
    now = middleware.store.now()
    for _ in range(count):
        session_id = mint_session_id()
        record = SessionRecord(
            key="",
            protocol_version="2025-06-18",
            requested_protocol_version="2025-06-18",
            client_info=INIT["params"]["clientInfo"],  # type: ignore[index]
            capabilities={},
            principal=None,
            created_at=now,
            last_accessed=now,
            expires_at=now + middleware.ttl,
            ttl=middleware.ttl,
        )
        await middleware.store.create(session_id, record)
        ids.append(session_id)
    return ids


async def initialize(client: httpx.AsyncClient) -> str:
    response = await client.post("/mcp", json=INIT, headers=HEADERS)
    if response.status_code != 200:
        raise RuntimeError(f"initialize failed: {response.status_code} {response.text}")
    session_id = response.headers["mcp-session-id"]
    done = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**HEADERS, "mcp-session-id": session_id},
    )
    if done.status_code != 202:
        raise RuntimeError(f"notifications/initialized failed: {done.status_code} {done.text}")
    return session_id


async def call(client: httpx.AsyncClient, session_id: str) -> None:
    response = await client.post(
        "/mcp", json=CALL, headers={**HEADERS, "mcp-session-id": session_id}
    )
    if response.status_code != 200 or '"ok"' not in response.text:
        raise RuntimeError(f"tools/call failed: {response.status_code} {response.text}")


async def held(store_url: str, sessions: int) -> dict[str, Any]:
    async with serving(store_url, max_local_sessions=sessions + 10) as client:
        warm = [await initialize(client) for _ in range(200)]
        for session_id in warm:
            await call(client, session_id)
        gc.collect()
        before = rss_bytes()
        opened = [await initialize(client) for _ in range(sessions)]
        for session_id in opened:
            await call(client, session_id)
        gc.collect()
        after = rss_bytes()
    return {
        "sessions": sessions,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "bytes_per_held_app_session": (after - before) / sessions,
    }


async def recreate(store_url: str, rounds: int, calls: int) -> dict[str, Any]:
    held_ms: list[float] = []
    recreated_ms: list[float] = []
    async with serving(store_url, max_local_sessions=1) as cold:
        pair = [await initialize(cold) for _ in range(2)]
        async with serving(store_url) as warm:
            kept = await initialize(warm)
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(calls):
                    await call(warm, kept)
                held_ms.append((time.perf_counter() - start) * 1000 / calls)
                start = time.perf_counter()
                for i in range(calls):
                    await call(cold, pair[i % 2])  # the other one was evicted: re-created
                recreated_ms.append((time.perf_counter() - start) * 1000 / calls)
    held_median = statistics.median(held_ms)
    recreated_median = statistics.median(recreated_ms)
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        "held_call_ms": held_median,
        "recreated_call_ms": recreated_median,
        "recreation_cost_ms": recreated_median - held_median,
    }


async def scale(store_url: str, sessions: int, sample: int, seeded: bool) -> dict[str, Any]:
    start = time.perf_counter()
    async with serving_with(store_url) as (client, middleware):
        ids = []
        if seeded:
            ids = await seed(middleware, sessions)
        for i in range(0 if seeded else sessions):
            ids.append(await initialize(client))
            if i % 10_000 == 9_999:
                print(f"  {i + 1} sessions, rss {rss_bytes() / 2**20:.0f} MB", file=sys.stderr)
        created_s = time.perf_counter() - start
        step = max(1, sessions // sample)
        for session_id in ids[::step]:
            await call(client, session_id)
        gc.collect()
        rss = rss_bytes()
    return {
        "sessions": sessions,
        "created": "in the store" if seeded else "by initialize",
        "sampled_calls": len(ids[::step]),
        "seconds_to_create": created_s,
        "rss_mb": rss / 2**20,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
    }


def store_for(kind: str, directory: str) -> str:
    if kind == "memory":
        return "memory://"
    return f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"


def child(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mcp").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        url = store_for(args.store, directory)
        if args.child == "held":
            result = asyncio.run(held(url, args.held_sessions))
        elif args.child == "recreate":
            result = asyncio.run(recreate(url, args.rounds, args.calls))
        else:
            result = asyncio.run(scale(url, args.sessions, args.sample, args.seed))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["held", "recreate", "scale"])
    parser.add_argument("--store", choices=["memory", "sqlite"], default="sqlite")
    parser.add_argument("--held-sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument(
        "--seed",
        action="store_true",
        help="scale: create the sessions straight in the store, not by initialize",
    )
    parser.add_argument("--child", choices=["held", "recreate", "scale"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for part in args.parts:
        command = [sys.executable, __file__, "--child", part, *sys.argv[1:]]
        output = subprocess.run(
            command, check=True, capture_output=False, text=True, env=env, stdout=subprocess.PIPE
        ).stdout
        print(f"{part} ({args.store}): {output.strip()}")


if __name__ == "__main__":
    main()
