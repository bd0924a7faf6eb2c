"""Benchmark: 1,000 SSE streams open at once on one process, and how late their events are.

1,000 clients (a session each, their own connection) call the ``ticks`` tool of
bench/app_server.py at the same time: it reports progress ``n`` times,
``interval`` seconds apart, each progress message carrying the server's wall
clock at the moment the tool emitted it. Every client reads its POST's SSE
stream as it arrives and records, for each progress event emitted once all
the streams are open (the ramp, 1,000 tool calls starting at once, is left
out), receive time minus emit time (client and server share the machine's
clock). Reported: how many
streams were open at once at the peak, whether every call got all its events
and its result, and the p50 / p99 / max delay. The SDK alone (its stateful
mode) runs the same load first as the reference; then the same app behind
SessionMiddleware (re-hydration mode) on each store, where every event is
stored before it is forwarded.

    .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --streams 500 --stores memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import BenchError, machine
from requests import AppServer, RawSession, available, percentile, store_prefix
from streaming import _drop, _versions, store_url

from mcp_session_mw.sse import SSEEvent, SSEParser

STREAMS = 1_000
TICKS = 4
INTERVAL = 2.0
SCALE_STORES = ("memory",)
OPEN_CONCURRENCY = 50


@dataclass
class Run:
    server: str
    streams: int
    delays: list[float] = field(default_factory=list)
    complete: int = 0
    peak_open: int = 0
    seconds: float = 0.0

    def p(self, q: float) -> float:
        return 1000 * percentile(self.delays, q) if self.delays else float("nan")


async def open_many(url: str, count: int) -> list[RawSession]:
    """Open ``count`` sessions, ``OPEN_CONCURRENCY`` at a time."""
    sessions: list[RawSession] = []
    queue = list(range(count))

    async def opener() -> None:
        while queue:
            queue.pop()
            sessions.append(await RawSession(url).open())

    await asyncio.gather(*(opener() for _ in range(OPEN_CONCURRENCY)))
    return sessions


async def tick_stream(session: RawSession, run: Run, state: dict[str, float]) -> None:
    """One ticks call; delays of its progress events go to ``run``."""
    body = session.body(
        "tools/call",
        {
            "name": "ticks",
            "arguments": {"n": TICKS, "interval": INTERVAL},
            "_meta": {"progressToken": 1},
        },
    )
    parser = SSEParser()
    progress = 0
    done = False
    opened = False
    try:
        async for item in session.connection.stream("POST", session.headers(), body):
            if not isinstance(item, bytes):
                if item.status != 200:
                    raise BenchError(f"ticks: {item.status}")
                state["open"] += 1
                opened = True
                state["peak"] = max(state["peak"], state["open"])
                if state["open"] == run.streams:
                    state["all_open_at"] = time.time()
                continue
            received = time.time()
            for event in parser.feed(item):
                if not isinstance(event, SSEEvent) or not event.data:
                    continue
                message = json.loads(event.data)
                if message.get("method") == "notifications/progress":
                    emitted = float(message["params"]["message"])
                    if emitted >= state["all_open_at"]:
                        run.delays.append(received - emitted)
                    progress += 1
                elif "result" in message:
                    done = True
    finally:
        if opened:
            state["open"] -= 1
    if done and progress == TICKS:
        run.complete += 1


async def load(url: str, name: str, streams: int) -> Run:
    sessions = await open_many(url, streams)
    run = Run(name, streams)
    state = {"open": 0.0, "peak": 0.0, "all_open_at": float("inf")}
    started = time.perf_counter()
    try:
        results = await asyncio.gather(
            *(tick_stream(s, run, state) for s in sessions), return_exceptions=True
        )
        run.seconds = time.perf_counter() - started
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            print(f"  {name}: {len(failures)} calls failed, first: {failures[0]!r}")
    finally:
        await asyncio.gather(*(s.delete() for s in sessions), return_exceptions=True)
        for session in sessions:
            session.close()
    run.peak_open = int(state["peak"])
    print(
        f"  {name:10s} {run.complete}/{streams} complete, peak {run.peak_open} open,"
        f" delay p50 {run.p(0.5):.1f} ms p99 {run.p(0.99):.1f} ms",
        flush=True,
    )
    return run


def bench_store(name: str, streams: int) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    url = store_url(name, workdir)
    prefix = store_prefix(name)
    try:
        with AppServer(["--store", url, "--prefix", prefix]) as server:
            return asyncio.run(load(server.url, name, streams))
    finally:
        if name != "memory":
            asyncio.run(_drop(url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)


def run(stores: Sequence[str], streams: int) -> list[Run]:
    with AppServer([]) as bare:
        runs = [asyncio.run(load(bare.url, "SDK alone", streams))]
    for name in stores:
        runs.append(bench_store(name, streams))
    return runs


def table(runs: Sequence[Run]) -> list[str]:
    lines = [
        f"{runs[0].streams:,} clients call a tool at once that emits {TICKS} progress events"
        f" {INTERVAL:g} s apart; delay = client receive time - tool emit time, for the"
        " events emitted once every stream was open.",
        "",
        "| server | streams open at peak | calls complete | events timed | delay p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        worst = 1000 * max(r.delays) if r.delays else float("nan")
        lines.append(
            f"| {r.server} | {r.peak_open:,} | {r.complete:,} / {r.streams:,} | {len(r.delays):,} "
            f"| {r.p(0.5):.1f} ms | **{r.p(0.99):.1f} ms** | {worst:.1f} ms |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=STREAMS)
    parser.add_argument("--stores", nargs="+", default=list(SCALE_STORES))
    args = parser.parse_args()
    stores = available(args.stores)
    info = machine()
    info.update(asyncio.run(_versions(stores)))
    for key, value in info.items():
        print(f"{key}: {value}")
    runs = run(stores, args.streams)
    print()
    print("\n".join(table(runs)))


if __name__ == "__main__":
    main()
