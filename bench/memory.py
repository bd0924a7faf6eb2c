"""Benchmark: server memory per idle session, per store.

The server is bench/app_server.py ``--minimal``: a stateless JSON-RPC stub that
keeps nothing, wrapped in SessionMiddleware (stateless mode) on the store under
test, so whatever the process gains while sessions pile up is the
middleware's (and, for ``memory://``, the store's). The stub alone is measured
the same way as the reference.

Procedure per server: open 500 sessions to warm up (pools, caches, allocator
arenas), read the process's resident set size (``VmRSS``), open N more
sessions (default 10,000; ``initialize`` + ``notifications/initialized``, 16
clients at a time) and leave them idle, wait a second, read it again. Reported:
growth per session and per 10,000 sessions. Everything the bench stored is
dropped at the end.

    .venv/bin/python bench/memory.py
    .venv/bin/python bench/memory.py --stores memory redis --sessions 5000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import machine
from requests import CLIENTS, STORES, AppServer, RawSession, available, store_prefix
from streaming import _drop, _versions, store_url

SESSIONS = 10_000
WARMUP = 500
# Issue 7 §5: bytes per idle session.
TARGETS: dict[str, float] = {"memory": 2048.0}
EXTERNAL_TARGET = 256.0
"""What "near zero" is taken to mean for a store outside the process, in bytes a session."""


def rss_bytes(server: AppServer) -> int:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


async def open_idle(url: str, count: int, clients: int) -> None:
    """Open ``count`` sessions and leave them open (their connections are closed)."""
    remaining = count

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            session = RawSession(url)
            try:
                await session.open()
            finally:
                session.close()

    await asyncio.gather(*(client() for _ in range(clients)))


@dataclass
class Growth:
    store: str
    sessions: int
    before: int
    after: int

    @property
    def per_session(self) -> float:
        return (self.after - self.before) / self.sessions


def measure(server: AppServer, name: str, sessions: int, clients: int) -> Growth:
    async def run() -> Growth:
        await open_idle(server.url, WARMUP, clients)
        await asyncio.sleep(0.5)
        before = rss_bytes(server)
        await open_idle(server.url, sessions, clients)
        await asyncio.sleep(1.0)
        return Growth(name, sessions, before, rss_bytes(server))

    growth = asyncio.run(run())
    print(
        f"  {name:10s} {growth.before / 2**20:6.1f} MiB -> {growth.after / 2**20:6.1f} MiB"
        f"  ({growth.per_session:.0f} B a session)",
        flush=True,
    )
    return growth


def bench_store(name: str, sessions: int, clients: int) -> Growth:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    url = store_url(name, workdir)
    prefix = store_prefix(name)
    try:
        with AppServer(["--minimal", "--store", url, "--prefix", prefix]) as server:
            return measure(server, name, sessions, clients)
    finally:
        if name != "memory":
            asyncio.run(_drop(url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)


def run(stores: Sequence[str], sessions: int, clients: int) -> list[Growth]:
    with AppServer(["--minimal"]) as bare:
        results = [measure(bare, "none", sessions, clients)]
    for name in stores:
        results.append(bench_store(name, sessions, clients))
    return results


def target_for(store: str) -> float | None:
    if store == "none":
        return None
    return TARGETS.get(store, EXTERNAL_TARGET)


def table(results: Sequence[Growth]) -> list[str]:
    sessions = results[0].sessions
    lines = [
        f"Server RSS growth while {sessions:,} sessions are opened and left idle"
        " (stateless JSON-RPC stub behind the middleware; `none` = the stub alone).",
        "",
        "| store | RSS before | RSS after | per session | per 10,000 sessions | target | met |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for g in results:
        target = target_for(g.store)
        met = "—" if target is None else ("yes" if g.per_session <= target else "**no**")
        shown = "—" if target is None else f"≤ {target:,.0f} B"
        lines.append(
            f"| {g.store} | {g.before / 2**20:.1f} MiB | {g.after / 2**20:.1f} MiB "
            f"| {g.per_session:,.0f} B | {g.per_session * 10_000 / 2**20:.1f} MiB "
            f"| {shown} | {met} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    args = parser.parse_args()
    stores = available(args.stores)
    info = machine()
    info.update(asyncio.run(_versions(stores)))
    for key, value in info.items():
        print(f"{key}: {value}")
    results = run(stores, args.sessions, args.clients)
    print()
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
