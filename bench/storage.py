"""Benchmark: bytes a finished tools/call and a streamed event leave in each store.

Measured from the store itself, never estimated: Redis ``MEMORY USAGE`` summed
over every key the namespace holds, PostgreSQL ``pg_total_relation_size`` of
the three tables after ``VACUUM``, SQLite pages in use after ``VACUUM`` (a file
of its own), MariaDB ``data_length + index_length`` from
``information_schema`` after ``OPTIMIZE TABLE`` (InnoDB counts whole 16 KiB
pages, so only large runs say much there).

Each run creates ``--sessions`` sessions (the baseline), then makes
``--calls`` one-answer calls spread over them, as the middleware stores one: a
single ``write_stream`` that opens the stream, stores the response and
finishes it, and every 10 streams one ``record_streams`` (the
``max_streams_per_session`` bookkeeping). Then one stream per session gets
``--events`` progress notifications. Bytes per call and per event are the
growth divided by the count.

    .venv/bin/python bench/storage.py
    .venv/bin/python bench/storage.py --backends redis,sqlite --calls 5000

Results go in docs/benchmarks.md ("Bytes per call").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp_session_mw import SessionRecord
from mcp_session_mw.records import StreamState
from mcp_session_mw.stores import Store, create_store

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+asyncmy://root@127.0.0.1:3306/test"
TTL = 3600.0
RECORD_EVERY = 10
CAP = 100

Sizer = Callable[[], Awaitable[int]]


def record() -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        requested_protocol_version="2025-11-25",
        client_info={"name": "bench-client", "version": "1.0.0"},
        capabilities={"sampling": {}, "elicitation": {}},
        created_at=now,
        last_accessed=now,
        expires_at=now + TTL,
        ttl=TTL,
        state={},
    )


def answer(request_id: int) -> str:
    """An echo tool's response, as an MCP server sends it."""
    result = {"content": [{"type": "text", "text": f"echo {request_id}"}], "isError": False}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def progress(i: int) -> str:
    params = {"progressToken": "tok-1", "progress": i, "total": 1000, "message": "working"}
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})


async def one_call(store: Store, session_id: str, request_id: int) -> str:
    stream_id = uuid.uuid4().hex[:16]
    state = StreamState(stream_id, request_id, "bench", time.time() + 10.0)
    await store.write_stream(
        session_id, stream_id, [(answer(request_id), "message")], open_as=state, finish=True
    )
    return stream_id


async def run(store: Store, size: Sizer, sessions: int, calls: int, events: int) -> dict[str, Any]:
    ids = [uuid.uuid4().hex for _ in range(sessions)]
    for session_id in ids:
        await store.create(session_id, record())
    base = await size()
    pending: dict[str, list[str]] = {session_id: [] for session_id in ids}
    for n in range(calls):
        session_id = ids[n % sessions]
        pending[session_id].append(await one_call(store, session_id, n + 1))
        if len(pending[session_id]) >= CAP // RECORD_EVERY:
            await store.record_streams(session_id, pending[session_id], keep=CAP)
            pending[session_id] = []
    after_calls = await size()
    for session_id in ids:
        state = StreamState("0123456789abcdef", 1, "bench", time.time() + 10.0)
        await store.open_stream(session_id, state)
        items = [(progress(i), "message") for i in range(events)]
        for at in range(0, events, 100):
            await store.append_events(session_id, state.stream_id, items[at : at + 100])
    after_events = await size()
    return {
        "sessions": sessions,
        "calls": calls,
        "events": events * sessions,
        "bytes_per_session": round(base / sessions),
        "bytes_per_call": round((after_calls - base) / calls),
        "bytes_per_event": round((after_events - after_calls) / (events * sessions)),
    }


async def redis_bytes(store: Any, prefix: str) -> int:
    client = store.client
    total = 0
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        total += int(await client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)
    return total


async def sql_bytes(store: Any, dialect: str, path: Path | None) -> int:
    import sqlalchemy as sa

    t = store._db.t
    names = [t.sessions.name, t.streams.name, t.events.name]
    engine = store._engine
    if dialect == "sqlite":
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM"))
            pages = (await conn.execute(sa.text("PRAGMA page_count"))).scalar_one()
            free = (await conn.execute(sa.text("PRAGMA freelist_count"))).scalar_one()
            page = (await conn.execute(sa.text("PRAGMA page_size"))).scalar_one()
        return int((pages - free) * page)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        total = 0
        for name in names:
            if dialect == "postgresql":
                await conn.execute(sa.text(f'VACUUM "{name}"'))
                q = sa.text("SELECT pg_total_relation_size(:n)")
                total += int((await conn.execute(q, {"n": name})).scalar_one())
            else:
                await conn.execute(sa.text(f"OPTIMIZE TABLE `{name}`"))
                await conn.execute(sa.text(f"ANALYZE TABLE `{name}`"))
                q = sa.text(
                    "SELECT data_length + index_length FROM information_schema.tables"
                    " WHERE table_schema = DATABASE() AND table_name = :n"
                )
                total += int((await conn.execute(q, {"n": name})).scalar_one())
        return total


async def measure(backend: str, sessions: int, calls: int, events: int) -> dict[str, Any]:
    namespace = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "storage.db"
        store: Any
        if backend == "redis":
            prefix = f"bench:{namespace}:"
            store = create_store(REDIS_URL, prefix=prefix)
        else:
            url = {
                "sqlite": f"sqlite+aiosqlite:///{path}",
                "postgresql": POSTGRES_URL,
                "mariadb": MARIADB_URL,
            }[backend]
            store = create_store(url, table_prefix=f"b{namespace}_")
        await store.open()
        try:
            if backend == "redis":

                async def size() -> int:
                    return await redis_bytes(store, prefix)
            else:
                dialect = {"sqlite": "sqlite", "postgresql": "postgresql"}.get(backend, "mysql")

                async def size() -> int:
                    return await sql_bytes(store, dialect, path)

            result = await run(store, size, sessions, calls, events)
        finally:
            if backend == "redis":
                await store.purge()
            else:
                await store.drop_schema()
            await store.close()
    return {"backend": backend, **result}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="redis,sqlite,postgresql,mariadb")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100, help="streamed events per session")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        print(json.dumps(await measure(backend, args.sessions, args.calls, args.events)))


if __name__ == "__main__":
    asyncio.run(main())
