"""Benchmark: what the Redis store costs over raw redis-py on a session's hot path.

Each request of a live MCP session loads its record and slides its expiry. The
store does that as ``load`` (HMGET, JSON decode into a SessionRecord) plus
``touch`` (one Lua script that renews every key of the session and its index
entry). The baseline is the least a hand-written client could do: GET the same
payload and PEXPIRE it, with ``redis.asyncio`` in the same process, against the
same server, at the same concurrency.

Rounds alternate (raw, store, raw, store…) so a noisy neighbour hits both alike;
each round runs ``--ops`` load-plus-touch operations from ``--concurrency``
tasks over ``--sessions`` sessions. Medians of operations per second are
reported, with the ratio store / raw. Target: at least 0.7. A third column
times the store's one-round-trip fast path, ``load(session_id, touch=True)``.

Everything goes away at the end (own key prefix, purged).

    .venv/bin/python bench/redis_store.py
    .venv/bin/python bench/redis_store.py --url redis://127.0.0.1:6379/0 --rounds 7

Results go in docs/redis.md ("Benchmark").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as redis_asyncio

from mcp_session_mw import SessionRecord
from mcp_session_mw.stores.redis import RedisStore

TTL = 600.0
Operation = Callable[[int], Awaitable[None]]


def sample_record(i: int) -> SessionRecord:
    """A record the size a real one has: client info, capabilities, a little state."""
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        requested_protocol_version="2025-11-25",
        client_info={"name": "bench-client", "version": "1.0.0"},
        capabilities={"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}},
        created_at=now,
        last_accessed=now,
        expires_at=now + TTL,
        ttl=TTL,
        state={"user": f"user-{i}", "cart": [1, 2, 3], "step": i % 7},
    )


async def run_round(operation: Operation, sessions: int, ops: int, concurrency: int) -> float:
    """Operations per second for ``ops`` operations spread over ``concurrency`` tasks."""
    counter = iter(range(ops))

    async def worker() -> None:
        for n in counter:
            await operation(n % sessions)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ops / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    store = RedisStore.from_url(args.url, prefix=prefix)
    raw = redis_asyncio.from_url(args.url)
    raw_keys = [f"{prefix}raw:{i}" for i in range(args.sessions)]
    session_ids = [f"bench-session-{i}" for i in range(args.sessions)]
    try:
        await store.open()
        info = await raw.info("server")
        for i, sid in enumerate(session_ids):
            record = await store.create(sid, sample_record(i))
            await raw.set(raw_keys[i], record.payload(), px=int(TTL * 1000))

        async def store_op(i: int) -> None:
            sid = session_ids[i]
            if await store.load(sid) is None:
                raise RuntimeError("session vanished")
            await store.touch(sid)

        async def fast_op(i: int) -> None:
            if await store.load(session_ids[i], touch=True) is None:
                raise RuntimeError("session vanished")

        ttl_ms = int(TTL * 1000)

        async def raw_op(i: int) -> None:
            key = raw_keys[i]
            if await raw.get(key) is None:
                raise RuntimeError("key vanished")
            await raw.pexpire(key, ttl_ms)

        # Warm both (connections, script cache) before timing anything.
        await run_round(raw_op, args.sessions, 2000, args.concurrency)
        await run_round(store_op, args.sessions, 2000, args.concurrency)
        await run_round(fast_op, args.sessions, 2000, args.concurrency)

        raw_rates: list[float] = []
        store_rates: list[float] = []
        fast_rates: list[float] = []
        for n in range(args.rounds):
            raw_rates.append(await run_round(raw_op, args.sessions, args.ops, args.concurrency))
            store_rates.append(await run_round(store_op, args.sessions, args.ops, args.concurrency))
            fast_rates.append(await run_round(fast_op, args.sessions, args.ops, args.concurrency))
            print(
                f"round {n + 1}: raw {raw_rates[-1]:8.0f}   store {store_rates[-1]:8.0f}   "
                f"load(touch=True) {fast_rates[-1]:8.0f} ops/s"
            )
        raw_median = statistics.median(raw_rates)
        store_median = statistics.median(store_rates)
        fast_median = statistics.median(fast_rates)
        print()
        print(
            f"machine: nproc {os.cpu_count()}, Python {platform.python_version()}, "
            f"Redis {info['redis_version']}, redis-py {redis.__version__}"
        )
        print(
            f"{args.rounds} rounds x {args.ops} load+touch, {args.concurrency} tasks, "
            f"{args.sessions} sessions"
        )
        print(f"raw redis.asyncio GET+PEXPIRE  median {raw_median:8.0f} ops/s")
        print(f"RedisStore load, then touch    median {store_median:8.0f} ops/s")
        print(f"RedisStore load(touch=True)    median {fast_median:8.0f} ops/s")
        print(f"ratio store / raw: {store_median / raw_median:.2f} (target >= 0.70)")
        print(f"ratio load(touch=True) / raw: {fast_median / raw_median:.2f}")
    finally:
        await store.purge()
        await store.close()
        await raw.aclose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--url", default=os.environ.get("MCP_SESSION_MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
