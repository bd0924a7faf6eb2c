"""Benchmark: the scaled-down run docs/capacity.md checks its model against (Redis).

Creates ``--sessions`` sessions, then makes ``--calls-per-session`` finished
one-answer calls in each (as the middleware stores them: one ``write_stream``
per call), all inside the replay window, and measures from Redis itself: the
growth of ``used_memory`` (everything the server holds, keyspace overhead
included) and of ``total_commands_processed`` (server-side commands; a Lua
script counts as its EVALSHA plus each command it runs). Prints them beside what
the model predicts from the per-item figures of ``bench/storage.py``.

    .venv/bin/python bench/capacity.py --sessions 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from bench.storage import answer, record
from mcp_session_mw.records import StreamState
from mcp_session_mw.stores.redis import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"
BATCH = 200


async def info(store: Any) -> tuple[int, int]:
    memory = await store.client.info("memory")
    stats = await store.client.info("stats")
    return int(memory["used_memory"]), int(stats["total_commands_processed"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--calls-per-session", type=int, default=1)
    parser.add_argument("--bytes-per-session", type=float, default=909.0)
    parser.add_argument("--bytes-per-call", type=float, default=420.0)
    args = parser.parse_args()
    store = RedisStore.from_url(REDIS_URL, prefix=f"cap:{uuid.uuid4().hex[:8]}:")
    await store.open()
    store.finished_stream_ttl = 3600.0
    ids = [uuid.uuid4().hex for _ in range(args.sessions)]
    try:
        mem0, ops0 = await info(store)
        started = time.perf_counter()
        for at in range(0, len(ids), BATCH):
            await asyncio.gather(*(store.create(sid, record()) for sid in ids[at : at + BATCH]))
        created = time.perf_counter() - started
        mem1, ops1 = await info(store)
        started = time.perf_counter()
        for n in range(args.calls_per_session):

            async def call(sid: str, request_id: int) -> None:
                stream_id = uuid.uuid4().hex[:16]
                state = StreamState(stream_id, request_id, "bench", time.time() + 10.0)
                await store.write_stream(
                    sid, stream_id, [(answer(request_id), "message")], open_as=state, finish=True
                )

            for at in range(0, len(ids), BATCH):
                await asyncio.gather(*(call(sid, n + 1) for sid in ids[at : at + BATCH]))
        called = time.perf_counter() - started
        mem2, ops2 = await info(store)
        calls = args.sessions * args.calls_per_session
        predicted = args.sessions * args.bytes_per_session + calls * args.bytes_per_call
        print(
            json.dumps(
                {
                    "sessions": args.sessions,
                    "calls": calls,
                    "memory_predicted": round(predicted),
                    "memory_measured": mem2 - mem0,
                    "memory_error": round((predicted - (mem2 - mem0)) / (mem2 - mem0), 3),
                    "commands_per_create": round((ops1 - ops0) / args.sessions, 2),
                    "commands_per_call": round((ops2 - ops1) / calls, 2),
                    "creates_per_s": round(args.sessions / created),
                    "calls_per_s": round(calls / called),
                    "memory_sessions": mem1 - mem0,
                }
            )
        )
    finally:
        await store.purge()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
