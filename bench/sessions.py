"""Benchmark: sessions opened per second, per store, against the SDK alone.

N clients (default 16), each on its own keep-alive connection, open sessions
back to back for a short window: ``initialize``, ``notifications/initialized``
(the two requests a client needs before its first call), then ``DELETE``, so
sessions do not pile up between windows (the SDK keeps up to 10,000; the
middleware's re-hydration mode holds one app session and its relay per
session). The figure is completed open-and-close cycles per second; the
wrapped server (the SDK's stateful app in re-hydration mode, on the store
under test) and the bare SDK take turns, the order flipping every round.

    .venv/bin/python bench/sessions.py
    .venv/bin/python bench/sessions.py --stores redis --rounds 5
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import median
from requests import (
    AppServer,
    RawSession,
    command_line,
    cpu_seconds,
    store_prefix,
)
from streaming import _drop, store_url

WINDOW = 2.0


@dataclass
class Cycles:
    count: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / max(self.count, 1)


async def cycle_sessions(server: AppServer, clients: int, seconds: float) -> Cycles:
    """Every client opens and closes sessions back to back; cycles completed in time count."""
    sessions = [RawSession(server.url) for _ in range(clients)]
    done = 0
    cpu_before = cpu_seconds(server)
    started = time.perf_counter()
    deadline = started + seconds

    async def client(session: RawSession) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            session.session_id = None
            await session.open()
            await session.delete()
            if time.perf_counter() <= deadline:
                done += 1

    try:
        await asyncio.gather(*(client(s) for s in sessions))
    finally:
        for session in sessions:
            session.close()
    return Cycles(done, seconds, cpu_seconds(server) - cpu_before)


@dataclass
class StoreRun:
    store: str
    bare: list[Cycles] = field(default_factory=list)
    wrapped: list[Cycles] = field(default_factory=list)
    leftover_sessions: int = 0

    @property
    def ratio(self) -> float:
        return median([c.rate for c in self.wrapped]) / median([c.rate for c in self.bare])

    @property
    def paired(self) -> list[float]:
        return [w.rate / b.rate for b, w in zip(self.bare, self.wrapped, strict=True)]


async def measure(
    bare: AppServer, wrapped: AppServer, clients: int, window: float, rounds: int, run: StoreRun
) -> None:
    await cycle_sessions(bare, clients, 0.5)  # warm-up
    await cycle_sessions(wrapped, clients, 0.5)
    for index in range(rounds):
        pair = [(bare, run.bare), (wrapped, run.wrapped)]
        for server, results in pair if index % 2 == 0 else reversed(pair):
            results.append(await cycle_sessions(server, clients, window))
        print(
            f"  {run.store:10s} round {index + 1}: bare {run.bare[-1].rate:.0f}/s"
            f"  wrapped {run.wrapped[-1].rate:.0f}/s",
            flush=True,
        )


def bench_store(name: str, bare: AppServer, clients: int, window: float, rounds: int) -> StoreRun:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    url = store_url(name, workdir)
    prefix = store_prefix(name)
    run = StoreRun(name)
    try:
        with AppServer(["--store", url, "--prefix", prefix]) as wrapped:
            asyncio.run(measure(bare, wrapped, clients, window, rounds, run))
    finally:
        if name != "memory":
            run.leftover_sessions = asyncio.run(_drop(url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def table(runs: Sequence[StoreRun], clients: int) -> list[str]:
    lines = [
        f"Sessions opened and closed per second (`initialize`, `notifications/initialized`,"
        f" `DELETE`) by {clients} concurrent clients; medians over alternating rounds.",
        "",
        "| store | wrapped /s | SDK alone /s | wrapped / SDK (per round) "
        "| server CPU per session, wrapped | SDK alone |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in runs:
        paired = ", ".join(f"{p:.2f}" for p in r.paired)
        lines.append(
            f"| {r.store} | {median([c.rate for c in r.wrapped]):.0f} "
            f"| {median([c.rate for c in r.bare]):.0f} | **{r.ratio:.2f}** ({paired}) "
            f"| {median([c.cpu_ms for c in r.wrapped]):.1f} ms "
            f"| {median([c.cpu_ms for c in r.bare]):.1f} ms |"
        )
    return lines


def run(stores: Sequence[str], clients: int, window: float, rounds: int) -> list[StoreRun]:
    runs: list[StoreRun] = []
    with AppServer([]) as bare:
        for name in stores:
            runs.append(bench_store(name, bare, clients, window, rounds))
    for r in runs:
        if r.leftover_sessions:
            print(f"warning: {r.leftover_sessions} {r.store} sessions were still live at the end")
    return runs


def main() -> None:
    command_line(__doc__, run, table, WINDOW)


if __name__ == "__main__":
    main()
