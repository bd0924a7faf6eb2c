"""Benchmark: how close any middleware with our guarantees can come to the SDK alone.

``bench/floor_app.py`` is the least a durable-session middleware must do per
``tools/call`` (check the session before the app runs, store each event
before it is sent). This runs, in alternating rounds like bench/requests.py,
16 clients against:

- ``sdk``: the SDK app in its stateful mode, no middleware;
- ``floor`` / ``floor-redis``: that app in the floor stand-in, on a dict, or
  with the two Redis round trips (one ``GET``, one ``RPUSH``);
- ``mw`` / ``mw-redis``: that app in SessionMiddleware (re-hydration mode) on
  the memory store and on Redis.

The ratios to ``sdk`` say how much of the gap to a target is the
middleware's own work and how much is the work its guarantees require.

    .venv/bin/python bench/floor.py [--rounds 7] [--window 2]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics

from common import machine
from floor_app import drop_floor_keys
from requests import AppServer, close_sessions, hammer, open_sessions
from streaming import reachable

REDIS_URL = "redis://127.0.0.1:6379/0"
CLIENTS = 16


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
    args = parser.parse_args()
    variants = {"sdk": [], "floor": ["--floor", "memory"], "mw": ["--store", "memory://"]}
    if reachable(REDIS_URL):
        prefix = f"bench:{secrets.token_hex(4)}:"
        variants["floor-redis"] = ["--floor", REDIS_URL]
        variants["mw-redis"] = ["--store", REDIS_URL, "--prefix", prefix]
    servers = {name: AppServer(extra) for name, extra in variants.items()}
    try:
        for server in servers.values():
            server.start()
        rates, cpu = asyncio.run(run(servers, args.rounds, args.window))
    finally:
        for server in servers.values():
            server.stop()
        if "floor-redis" in servers:
            drop_floor_keys(REDIS_URL)
    base = statistics.median(rates["sdk"])
    base_cpu = statistics.median(cpu["sdk"])
    info = machine()
    print(f"\n{info['cpus']} x {info['cpu']}, {info['python']}\n")
    print("| server | tools/call /s | / SDK stateful | server CPU per call | SDK's / this |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        rate = statistics.median(values)
        ms = statistics.median(cpu[name])
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} | {ms:.2f} ms | {base_cpu / ms:.2f} |")


if __name__ == "__main__":
    main()
