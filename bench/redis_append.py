"""Benchmark: durable-stream appends per second on the Redis store, one by one vs batched.

A streaming tool's producer writes its events one after another, each write a
round trip (one Lua script call). ``append_events`` stores a batch in the same
one call, so while a write is in flight the events that pile up behind it can
go together. This measures the store alone, no HTTP: one producer per stream
writing ``--events`` events of a realistic size (an MCP progress notification)
as single ``append_event`` calls, then as ``append_events`` batches of 10 and of
100. ``--streams`` producers run at once, each on its own stream and session.

Rounds alternate (single, 10, 100, single…) so a noisy neighbour hits every
mode alike; medians of events per second are reported, with the milliseconds
each call (each round trip) took on average.

Everything goes away at the end (own key prefix, purged).

    .venv/bin/python bench/redis_append.py
    .venv/bin/python bench/redis_append.py --rounds 7 --streams 4

Results go in docs/redis.md ("Benchmark").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid

import redis

from mcp_session_mw import SessionRecord, StreamState
from mcp_session_mw.stores.redis import RedisStore

TTL = 600.0
BATCHES = (1, 10, 100)


def progress_event(i: int) -> str:
    """One SSE data payload as the middleware stores it: a progress notification."""
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {
                "progressToken": "bench-token",
                "progress": i,
                "total": 1_000_000,
                "message": f"step {i} of the long-running tool",
            },
        }
    )


def new_record() -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + TTL,
        ttl=TTL,
    )


async def produce(store: RedisStore, session_id: str, batch: int, events: int) -> None:
    """Write ``events`` events to a fresh stream, ``batch`` per call (1: append_event)."""
    stream_id = uuid.uuid4().hex
    state = StreamState(
        stream_id=stream_id, request_id=1, owner="bench", lease_expires=time.time() + TTL
    )
    await store.open_stream(session_id, state)
    payloads = [progress_event(i) for i in range(events)]
    if batch == 1:
        for data in payloads:
            await store.append_event(session_id, stream_id, data, event="message")
    else:
        for start in range(0, events, batch):
            items = [(data, "message") for data in payloads[start : start + batch]]
            await store.append_events(session_id, stream_id, items)
    # Keep memory flat across rounds: the next round opens a fresh stream.
    await store.delete_stream(session_id, stream_id)


async def run_round(store: RedisStore, sessions: list[str], batch: int, events: int) -> float:
    """Events per second over every producer of one round."""
    started = time.perf_counter()
    await asyncio.gather(*(produce(store, sid, batch, events) for sid in sessions))
    return len(sessions) * events / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    store = RedisStore.from_url(args.url, prefix=prefix)
    sessions = [f"bench-append-{i}" for i in range(args.streams)]
    try:
        await store.open()
        info = await store.client.info("server")
        for sid in sessions:
            await store.create(sid, new_record())
        for batch in BATCHES:  # connections, script cache
            await run_round(store, sessions, batch, min(args.events, 500))

        rates: dict[int, list[float]] = {batch: [] for batch in BATCHES}
        for n in range(args.rounds):
            line = []
            for batch in BATCHES:
                rates[batch].append(await run_round(store, sessions, batch, args.events))
                line.append(f"batch {batch:3d} {rates[batch][-1]:8.0f}")
            print(f"round {n + 1}: " + "   ".join(line) + " events/s")

        print()
        print(
            f"machine: nproc {os.cpu_count()}, Python {platform.python_version()}, "
            f"Redis {info['redis_version']}, redis-py {redis.__version__}"
        )
        print(
            f"{args.rounds} rounds x {args.events} events per stream, {args.streams} "
            f"stream(s) at once, {len(progress_event(0))}-byte events"
        )
        single = statistics.median(rates[1])
        for batch in BATCHES:
            median = statistics.median(rates[batch])
            per_call_ms = 1000 * batch * args.streams / median
            label = "append_event" if batch == 1 else f"append_events x{batch}"
            print(
                f"{label:<20} median {median:9.0f} events/s   {per_call_ms:6.2f} ms per call   "
                f"{median / single:5.1f}x single"
            )
    finally:
        await store.purge()
        await store.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--url", default=os.environ.get("MCP_SESSION_MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--events", type=int, default=5000, help="events per stream per round")
    parser.add_argument("--streams", type=int, default=1, help="producers at once")
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
