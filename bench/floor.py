"""Benchmark: how close any middleware with our guarantees can come to the SDK alone.

``bench/floor_app.py`` is the least a durable-session middleware must do per
``tools/call`` (check the session before the app runs, store each event
before it is sent). This runs, in alternating rounds like bench/requests.py,
16 clients against:

- ``sdk``: the SDK app in its stateful mode, no middleware;
- ``floor`` / ``floor-redis``: that app in the floor stand-in, on a dict, or
  with the two Redis round trips (one ``GET``, one ``RPUSH``);
- ``floor-postgresql`` / ``floor-sqlite`` / ``floor-mariadb``: the same on SQL
  (one ``SELECT``, one committed ``INSERT`` per event; ``bench/floor_sql.py``);
- ``mw`` / ``mw-redis`` / ``mw-postgresql`` / ``mw-sqlite`` / ``mw-mariadb``:
  that app in SessionMiddleware (re-hydration mode) on each store.

A store that is not reachable is left out; ``--stores`` picks some.

The ratios to ``sdk`` say how much of the gap to a target is the
middleware's own work and how much is the work its guarantees require.

    .venv/bin/python bench/floor.py [--rounds 7] [--window 2] [--stores redis,sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
from pathlib import Path

from common import machine
from floor_app import drop_floor_keys
from floor_sql import drop_floor_tables
from requests import AppServer, close_sessions, hammer, open_sessions
from streaming import POSTGRES_URL, _drop, reachable

REDIS_URL = "redis://127.0.0.1:6379/0"
MARIADB_URL = os.environ.get(
    "MCP_SESSION_MW_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"
)
STORES = ("redis", "postgresql", "sqlite", "mariadb")
CLIENTS = 16


def store_urls(folder: Path) -> dict[str, str]:
    return {
        "redis": REDIS_URL,
        "postgresql": POSTGRES_URL,
        "sqlite": f"sqlite+aiosqlite:///{folder / 'b.db'}",
        "mariadb": MARIADB_URL,
    }


async def run(
    servers: dict[str, AppServer], rounds: int, window: float
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    sessions = {name: await open_sessions(server.url, CLIENTS) for name, server in servers.items()}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for name in servers:
            await hammer(sessions[name], 0.5)
        order = list(servers)
        for index in range(rounds):
            for name in order if index % 2 == 0 else reversed(order):
                result = await hammer(sessions[name], window, servers[name])
                rates[name].append(result.rate)
                cpu[name].append(result.cpu_ms)
            print("  round", index + 1, "  ".join(f"{n} {rates[n][-1]:.0f}/s" for n in order))
    finally:
        for opened in sessions.values():
            await close_sessions(opened)
    return rates, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rates, cpu = measure(args, store_urls(Path(folder)))
    report(rates, cpu)


def measure(
    args: argparse.Namespace, urls: dict[str, str]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    variants = {"sdk": [], "floor": ["--floor", "memory"], "mw": ["--store", "memory://"]}
    prefixes: dict[str, str] = {}
    for name in args.stores.split(","):
        url = urls[name]
        if not reachable(url):
            continue
        token = secrets.token_hex(4)
        prefix = f"bench:{token}:" if name == "redis" else f"b{token}_"
        prefixes[name] = prefix
        variants[f"floor-{name}"] = ["--floor", url, "--prefix", f"f{token}_"]
        variants[f"mw-{name}"] = ["--store", url, "--prefix", prefix]
    servers = {name: AppServer(extra) for name, extra in variants.items()}
    try:
        for server in servers.values():
            server.start()
        return asyncio.run(run(servers, args.rounds, args.window))
    finally:
        for server in servers.values():
            server.stop()
        for name, prefix in prefixes.items():
            if name == "redis":
                drop_floor_keys(REDIS_URL)
            else:
                drop_floor_tables(urls[name], f"f{prefix[1:]}")
            asyncio.run(_drop(urls[name], prefix))


def report(rates: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    base = statistics.median(rates["sdk"])
    base_cpu = statistics.median(cpu["sdk"])
    info = machine()
    print(f"\n{info['cpus']} x {info['cpu']}, {info['python']}\n")
    print(
        "| server | tools/call /s | / SDK stateful | / own floor"
        " | server CPU per call | SDK's / this |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in rates.items():
        rate = statistics.median(values)
        ms = statistics.median(cpu[name])
        floor = "floor" + name[2:] if name.startswith("mw") else None
        own = f"{rate / statistics.median(rates[floor]):.2f}" if floor in rates else "-"
        print(
            f"| {name} | {rate:.0f} | {rate / base:.2f} | {own}"
            f" | {ms:.2f} ms | {base_cpu / ms:.2f} |"
        )


if __name__ == "__main__":
    main()
