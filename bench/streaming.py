"""Benchmark: what durable SSE costs a tool that streams 10,000 events.

A tool sends N progress notifications back to back (bench/stream_server.py).
The same SDK app is served bare (its own stateful mode) and wrapped in
SessionMiddleware on each store; the wrapped server parses, stores and
forwards every event before the client sees it. The client (raw HTTP, httpx)
times each call from sending the POST to receiving the result, after all N
notifications. Bare and wrapped runs alternate (bare, wrapped, bare, wrapped…)
so a noisy neighbour hits both alike; medians are reported, with the ratio
wrapped / bare. After each wrapped run the finished stream is replayed with a
GET carrying ``Last-Event-ID: <stream>.0`` and timed until its stored result
arrives; replay should be faster than producing the events live was.

Targets: wrapped / bare at most 1.5 on Redis and PostgreSQL, 2 on SQLite
(memory is reported for reference); replay faster than live on every store.

Everything the bench stores goes away at the end: each session is DELETEd after
its round, then the SQL tables (own prefix) are dropped and the Redis keys
(own prefix) purged.

    .venv/bin/python bench/streaming.py                  # all stores, 10,000 events
    .venv/bin/python bench/streaming.py --stores redis --rounds 5

Results go in docs/benchmarks.md ("Durable streams").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common import (
    BenchError,
    McpSession,
    ServerProcess,
    Timer,
    machine,
    median,
    new_client,
    sse_events,
)
from stream_server import store_options

from mcp_session_mw import create_store

HERE = Path(__file__).resolve().parent
SERVER = HERE / "stream_server.py"
POSTGRES_URL = os.environ.get(
    "MCP_SESSION_MW_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MCP_SESSION_MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STORES = ("memory", "sqlite", "postgresql", "redis", "dynamodb")
TARGETS: dict[str, float | None] = {
    "memory": None,
    "sqlite": 2.0,
    "postgresql": 1.5,
    "redis": 1.5,
    "dynamodb": None,
}
WARMUP_EVENTS = 500
STORE_BUDGET = 60.0
"""Seconds one store may take before its remaining rounds are skipped (one round always runs)."""


@dataclass
class Live:
    seconds: float
    events: int
    request_id: int
    stream_id: str | None


@dataclass
class StoreResult:
    store: str
    bare: list[float] = field(default_factory=list)
    wrapped: list[float] = field(default_factory=list)
    replay: list[float] = field(default_factory=list)
    leftover_sessions: int = 0

    @property
    def ratio(self) -> float:
        return median(self.wrapped) / median(self.bare)

    @property
    def paired(self) -> list[float]:
        return [w / b for b, w in zip(self.bare, self.wrapped, strict=True)]

    @property
    def replay_ratio(self) -> float:
        return median(self.replay) / median(self.wrapped)


def _final_for(data: str, request_id: int) -> dict[str, object] | None:
    """The JSON-RPC response to ``request_id`` carried by ``data``, else None."""
    if '"result"' not in data and '"error"' not in data:
        return None
    message = json.loads(data)
    if isinstance(message, dict) and message.get("id") == request_id:
        return message
    return None


def call_stream(session: McpSession, n: int) -> Live:
    """Call the ``stream`` tool; time until its result arrives after n notifications."""
    request_id = session.next_id()
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "stream", "arguments": {"n": n}, "_meta": {"progressToken": "bench"}},
    }
    progress = 0
    stream_id: str | None = None
    seconds: float | None = None
    with (
        Timer() as timer,
        session.client.stream(
            "POST", session.url, json=body, headers=session.headers()
        ) as response,
    ):
        if response.status_code != 200:
            response.read()
            raise BenchError(f"tools/call: {response.status_code} {response.text[:300]}")
        for event in sse_events(response):
            if not event.data:  # the middleware's priming event names the stream
                if event.id and stream_id is None:
                    stream_id = event.id.rpartition(".")[0]
                continue
            final = _final_for(event.data, request_id)
            if final is None:
                progress += 1
                continue
            seconds = timer.elapsed()
            if "result" not in final:
                raise BenchError(f"tools/call failed: {event.data[:300]}")
    if seconds is None or progress != n:
        raise BenchError(f"got {progress} of {n} notifications, result: {seconds is not None}")
    return Live(seconds, progress, request_id, stream_id)


def replay(session: McpSession, stream_id: str, request_id: int, n: int) -> float:
    """GET the finished stream from its start; time until its stored result arrives."""
    headers = session.headers(accept="text/event-stream", **{"last-event-id": f"{stream_id}.0"})
    count = 0
    seconds: float | None = None
    with (
        Timer() as timer,
        session.client.stream("GET", session.url, headers=headers) as response,
    ):
        if response.status_code != 200:
            response.read()
            raise BenchError(f"replay: {response.status_code} {response.text[:300]}")
        for event in sse_events(response):
            if not event.data:
                continue
            count += 1
            if _final_for(event.data, request_id) is not None:
                seconds = timer.elapsed()
    if seconds is None or count != n + 1:
        raise BenchError(f"replay got {count} events, expected {n + 1} ending in the result")
    return seconds


def one_run(server: ServerProcess, n: int, result: StoreResult | None, bare: bool) -> None:
    """A fresh session, one timed tool call (and, wrapped, one timed replay), DELETE."""
    with new_client() as client, McpSession(client, server.url) as session:
        live = call_stream(session, n)
        if bare:
            if result is not None:
                result.bare.append(live.seconds)
            return
        if live.stream_id is None:
            raise BenchError("the wrapped server sent no priming event with a stream id")
        seconds = replay(session, live.stream_id, live.request_id, n)
        if result is not None:
            result.wrapped.append(live.seconds)
            result.replay.append(seconds)


def store_url(name: str, workdir: Path) -> str:
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'b.db'}"
    if name == "postgresql":
        return POSTGRES_URL
    if name == "redis":
        return REDIS_URL
    if name == "dynamodb":
        from dynamodb_local import dynamodb_url

        return dynamodb_url()
    raise ValueError(name)


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    if parts.hostname is None:
        return True
    try:
        with socket.create_connection((parts.hostname, parts.port or 0), timeout=1.0):
            return True
    except OSError:
        return False


async def _drop(url: str, prefix: str) -> int:
    """Drop what the bench stored under ``prefix``; returns the sessions still live first."""
    store = create_store(url, **store_options(url, prefix))
    await store.open()
    try:
        leftover = await store.count_active()
        drop: Callable[[], object] | None = (
            getattr(store, "drop_schema", None)
            or getattr(store, "purge", None)
            or getattr(store, "drop_table", None)
        )
        if drop is not None:
            await drop()  # type: ignore[misc]
        return leftover
    finally:
        await store.close()


async def _versions(stores: list[str]) -> dict[str, str]:
    versions = {"sqlite": sqlite3.sqlite_version}
    if "postgresql" in stores:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
        try:
            versions["postgresql"] = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    if "redis" in stores:
        import redis.asyncio

        client = redis.asyncio.from_url(REDIS_URL)
        try:
            versions["redis"] = (await client.info("server"))["redis_version"]
        finally:
            await client.aclose()
    return versions


def bench_store(name: str, bare: ServerProcess, n: int, rounds: int, budget: float) -> StoreResult:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    url = store_url(name, workdir)
    tag = secrets.token_hex(4)
    prefix = f"bench:{tag}:" if name == "redis" else f"bench_{tag}_"
    result = StoreResult(name)
    try:
        with ServerProcess(SERVER, ["--store", url, "--prefix", prefix]) as wrapped:
            one_run(bare, WARMUP_EVENTS, None, bare=True)
            one_run(wrapped, WARMUP_EVENTS, None, bare=False)
            started = time.perf_counter()
            for index in range(rounds):
                if index > 0 and time.perf_counter() - started > budget:
                    rounds_done = f"{index} round" + ("s" if index > 1 else "")
                    print(f"  {name:10s} over its {budget:g}s budget: stopped after {rounds_done}")
                    break
                one_run(bare, n, result, bare=True)
                one_run(wrapped, n, result, bare=False)
                print(
                    f"  {name:10s} round {index + 1}: bare {result.bare[-1]:.2f}s"
                    f"  wrapped {result.wrapped[-1]:.2f}s  replay {result.replay[-1]:.2f}s",
                    flush=True,
                )
    finally:
        if name != "memory":
            result.leftover_sessions = asyncio.run(_drop(url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(results: list[StoreResult], n: int, rounds: int) -> None:
    print()
    print(f"{n:,} events per call; medians (seconds) of alternating rounds, up to {rounds}")
    print()
    print(
        "| store | rounds | bare | wrapped | wrapped / bare (per round) | target | met "
        "| replay | replay / live | met |"
    )
    print("|---|---:|---:|---:|---|---:|---|---:|---:|---|")
    for r in results:
        target = TARGETS[r.store]
        paired = ", ".join(f"{p:.2f}" for p in r.paired)
        met = "—" if target is None else verdict(r.ratio <= target)
        print(
            f"| {r.store} | {len(r.bare)} | {median(r.bare):.2f} | {median(r.wrapped):.2f} "
            f"| **{r.ratio:.2f}** ({paired}) | {'—' if target is None else f'≤ {target:g}'} "
            f"| {met} | {median(r.replay):.2f} | {r.replay_ratio:.2f} "
            f"| {verdict(r.replay_ratio < 1)} |"
        )
    for r in results:
        if r.leftover_sessions:
            print(f"warning: {r.leftover_sessions} {r.store} sessions were still live at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument(
        "--budget",
        type=float,
        default=STORE_BUDGET,
        help="seconds per store after which no new round starts (default %(default)s)",
    )
    args = parser.parse_args()

    stores = [s for s in args.stores if s in ("memory", "sqlite") or reachable(store_url(s, HERE))]
    for skipped in sorted(set(args.stores) - set(stores)):
        print(f"skipped {skipped}: not reachable at {store_url(skipped, HERE)}")
    info = machine()
    info.update(asyncio.run(_versions(stores)))
    for key, value in info.items():
        print(f"{key}: {value}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    results = []
    with ServerProcess(SERVER, ["--bare"]) as bare:
        for name in stores:
            results.append(bench_store(name, bare, args.events, args.rounds, args.budget))
    report(results, args.events, args.rounds)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
