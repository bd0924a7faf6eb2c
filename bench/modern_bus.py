"""Publish → delivery latency of StoreSubscriptionBus with 1,000 listen streams open.

Two ``examples/10_modern_server.py`` processes share a store. The benchmark
opens ``--streams`` ``subscriptions/listen`` streams (raw HTTP, 2026-07-28
lane) on the second, then, ``--rounds`` times, calls the ``announce`` tool on
the first and takes, for every stream, the time from sending that call to the
``notifications/tools/list_changed`` frame arriving on the stream. So each
figure includes the tool call's own HTTP round trip, the store's channel
(Redis pub/sub, PostgreSQL NOTIFY, SQLite's polled log at ``--poll``), the
SDK writing 1,000 SSE frames, and this client reading them all. Printed:
p50/p99/max per store over every delivery, and the p50/max of each round's
first delivery (the bus itself, before the fan-out to 1,000 streams), as JSON.

    PYTHONPATH=$PWD python bench/modern_bus.py [--streams 1000] [--rounds 20] [--store redis]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ServerProcess, machine
from mcp_session_mw.stores import create_store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "10_modern_server.py"
MODERN = "2026-07-28"
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": MODERN,
}
ROUND_TIMEOUT = 60.0
POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def request(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {**params, "_meta": meta},
    }


def headers(method: str, name: str | None = None) -> dict[str, str]:
    """The 2026-07-28 lane wants the method (and the tool's name) in headers too."""
    extra = {"mcp-method": method, **({"mcp-name": name} if name else {})}
    return {**HEADERS, **extra}


class Streams:
    """``count`` listen streams; ``arrivals[r]`` collects each stream's arrival time of round r."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.acked = 0
        self.all_acked = asyncio.Event()
        self.arrivals: list[list[float]] = []
        self.round_done = asyncio.Event()

    async def listen(self, http: httpx.AsyncClient, url: str, index: int) -> None:
        body = request(
            index + 1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}}
        )
        listen = headers("subscriptions/listen")
        async with http.stream("POST", url, json=body, headers=listen) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                method = json.loads(line[5:]).get("method")
                if method == "notifications/subscriptions/acknowledged":
                    self.acked += 1
                    if self.acked == self.count:
                        self.all_acked.set()
                elif method == "notifications/tools/list_changed" and self.arrivals:
                    current = self.arrivals[-1]
                    current.append(time.perf_counter())
                    if len(current) == self.count:
                        self.round_done.set()


async def run_store(kind: str, streams: int, rounds: int, poll: float) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sqlite":
            url, options = f"sqlite+aiosqlite:///{tmp}/bench.db", {}
        elif kind == "postgresql":
            url, options = POSTGRES_URL, {"table_prefix": f"bench{tag}_"}
        else:
            url, options = REDIS_URL, {"prefix": f"bench:{tag}:"}
        args = [f"--store={url}", f"--bus-channel=bench{tag}"]
        args += [f"--store-option={k}={v}" for k, v in options.items()]
        publisher = ServerProcess(EXAMPLE, args).start()
        listener = ServerProcess(EXAMPLE, args).start()
        try:
            return await measure(publisher.url, listener.url, streams, rounds, kind, poll)
        finally:
            listener.stop()
            publisher.stop()
            store = create_store(url, **options)
            await store.open()
            if kind == "postgresql":
                await store.drop_schema()  # type: ignore[attr-defined]
            elif kind == "redis":
                await store.purge()  # type: ignore[attr-defined]
            await store.close()


async def measure(
    publish_url: str, listen_url: str, count: int, rounds: int, kind: str, poll: float
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    timeout = httpx.Timeout(ROUND_TIMEOUT)
    streams = Streams(count)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        tasks = [asyncio.create_task(streams.listen(http, listen_url, i)) for i in range(count)]
        try:
            await asyncio.wait_for(streams.all_acked.wait(), ROUND_TIMEOUT)
            latencies: list[float] = []
            firsts: list[float] = []
            for round_number in range(rounds):
                streams.round_done.clear()
                streams.arrivals.append([])
                call = request(
                    10_000_000 + round_number,
                    "tools/call",
                    {"name": "announce", "arguments": {"what": "tools"}},
                )
                sent = time.perf_counter()
                call_headers = headers("tools/call", "announce")
                response = await http.post(publish_url, json=call, headers=call_headers)
                response.raise_for_status()
                await asyncio.wait_for(streams.round_done.wait(), ROUND_TIMEOUT)
                latencies += [(arrived - sent) * 1000 for arrived in streams.arrivals[-1]]
                firsts.append((min(streams.arrivals[-1]) - sent) * 1000)
                await asyncio.sleep(0.2)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    ordered = sorted(latencies)
    return {
        "store": kind,
        "streams": count,
        "rounds": rounds,
        "deliveries": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 1),
        "max_ms": round(ordered[-1], 1),
        "first_stream_p50_ms": round(statistics.median(firsts), 1),
        "first_stream_max_ms": round(max(firsts), 1),
        "sqlite_poll_interval_s": poll if kind == "sqlite" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--store", action="append", choices=["redis", "postgresql", "sqlite"])
    args = parser.parse_args()
    results = []
    for kind in args.store or ["redis", "postgresql", "sqlite"]:
        results.append(asyncio.run(run_store(kind, args.streams, args.rounds, 0.1)))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
