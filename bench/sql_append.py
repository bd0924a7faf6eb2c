"""Benchmark: what one stored event costs the SQL store, one at a time and in batches.

The middleware stores every event before it forwards it, so the store's cost per
event is added to a streaming tool call. It stores a burst as one
``append_events`` call; a lone event is a batch of one. This times the store
alone, in one process, against the real servers:

- ``single``: ``append_event`` N times in a row;
- ``batch 10`` / ``batch 100``: ``append_events`` with 10 or 100 items, N / size
  times in a row.

Each append passes ``max_events=50_000`` (the middleware's default), so the
trim rule is part of what is measured. Modes alternate within a round (single,
10, 100, single, …) so background load hits all alike; medians over the rounds
are reported as milliseconds per event and events per second.

    .venv/bin/python bench/sql_append.py
    .venv/bin/python bench/sql_append.py --stores postgresql --events 2000 --rounds 7

Each store gets a table prefix of its own and drops its tables at the end.
Results go in docs/benchmarks.md ("SQL append").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy

from mcp_session_mw import SessionRecord, StreamState
from mcp_session_mw.stores import sql as sql_module
from mcp_session_mw.stores.sql import SQLStore

MAX_EVENTS = 50_000
SIZES = (1, 10, 100)
PAYLOAD = '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}'
URLS = {
    "sqlite": None,  # a file in a temporary directory
    "postgresql": os.environ.get(
        "MCP_SESSION_MW_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "MCP_SESSION_MW_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"
    ),
}


def new_record(ttl: float = 3600.0) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state={},
    )


async def run_mode(
    store: SQLStore, session_id: str, stream_id: str, size: int, events: int
) -> float:
    """Seconds per event for ``events`` events stored ``size`` at a time."""
    calls = max(1, events // size)
    batch = [(PAYLOAD, "message")] * size
    started = time.perf_counter()
    if size == 1:
        for _ in range(calls):
            await store.append_event(
                session_id, stream_id, PAYLOAD, event="message", max_events=MAX_EVENTS
            )
    else:
        for _ in range(calls):
            await store.append_events(session_id, stream_id, batch, max_events=MAX_EVENTS)
    return (time.perf_counter() - started) / (calls * size)


async def server_version(store: SQLStore) -> str:
    async with store.engine.connect() as conn:
        info = conn.dialect.server_version_info or ()
    return ".".join(str(part) for part in info)


async def bench_store(name: str, url: str, args: argparse.Namespace) -> dict[int, list[float]]:
    store = SQLStore.from_url(url, table_prefix=f"bench_{uuid.uuid4().hex[:8]}_")
    results: dict[int, list[float]] = {size: [] for size in SIZES}
    try:
        await store.open()
        version = sqlite3.sqlite_version if name == "sqlite" else await server_version(store)
        print(f"{name} {version}: {url}")
        session_id = f"bench-{uuid.uuid4().hex}"
        await store.create(session_id, new_record())
        for size in SIZES:  # warm up: connections, prepared statements, caches
            await store.open_stream(session_id, StreamState(stream_id=f"warm-{size}", owner="b"))
            await run_mode(store, session_id, f"warm-{size}", size, min(200, args.events))
        for n in range(args.rounds):
            line = []
            for size in SIZES:
                stream_id = f"r{n}-{size}"
                await store.open_stream(session_id, StreamState(stream_id=stream_id, owner="b"))
                per_event = await run_mode(store, session_id, stream_id, size, args.events)
                results[size].append(per_event)
                line.append(f"{'single' if size == 1 else f'batch {size}'} {per_event * 1e3:7.3f}")
                await store.delete_stream(session_id, stream_id)
            print(f"  round {n + 1}: " + "   ".join(line) + "  ms/event")
        await store.delete(session_id)
    finally:
        await store.drop_schema()
        await store.close()
    return results


async def main(args: argparse.Namespace) -> None:
    print(
        f"machine: nproc {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, "
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}"
    )
    print(f"store: {sql_module.__file__}")
    print(f"{args.events} events per mode per round, {args.rounds} rounds, max_events={MAX_EVENTS}")
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores:
            url = URLS[name] or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            results = await bench_store(name, url, args)
            for size in SIZES:
                median = statistics.median(results[size])
                mode = "single" if size == 1 else f"batch {size}"
                summary.append(
                    f"{name:<11} {mode:<10} {median * 1e3:8.3f} ms/event "
                    f"{1 / median:10.0f} events/s   "
                    f"(range {min(results[size]) * 1e3:.3f}-{max(results[size]) * 1e3:.3f})"
                )
    print(f"\nmedians (load at the end {os.getloadavg()[0]:.1f}):")
    print("\n".join(summary))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stores", nargs="+", choices=list(URLS), default=list(URLS))
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
