"""Benchmark: what the middleware costs a ``tools/call``, in requests per second.

N clients (default 16), each with a session of its own and one keep-alive
connection, call the ``echo`` tool of bench/app_server.py back to back for a
short window; the figure is completed calls per second. The servers, each its
own uvicorn process on loopback:

- ``sdk``: the SDK app in its stateful mode, no middleware;
- ``sdk+events``: the same with an in-memory event store (resumable streams,
  lost on restart: what SDK users run today);
- ``sdk-stateless``: the SDK's stateless mode, its only way to scale out;
- ``mw``: the stateful app wrapped in SessionMiddleware (re-hydration mode) on
  the store under test;
- ``mw-stateless``: the stateless app wrapped (stateless mode) on that store.

Within one round every server gets one window, and the order flips every
round (A B C … then … C B A), so a noisy neighbour hits all of them alike;
every figure is a ratio of medians over the rounds, each side measured in the
same run. A second phase times single calls (one client) on ``sdk`` and
``mw`` alternately for p50/p99 added latency.

The client is raw HTTP/1.1 over asyncio streams in this process, not an SDK
client and not httpx: it costs a few tens of microseconds a call, so the
server processes get the CPU.

    .venv/bin/python bench/requests.py
    .venv/bin/python bench/requests.py --stores memory redis --clients 8 --window 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from common import (
    PROTOCOL_VERSION,
    BenchError,
    ServerProcess,
    machine,
    median,
)
from streaming import _drop, _versions, reachable, store_url

HERE = Path(__file__).resolve().parent
APP_SERVER = HERE / "app_server.py"
R = TypeVar("R")

STORES = ("memory", "redis", "postgresql", "sqlite", "dynamodb")
CLIENTS = 16
WINDOW = 2.0
ROUNDS = 3
LATENCY_WINDOW = 1.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Issue 7 §2: wrapped / the same app bare, per mode.
# DynamoDB has none: it runs on moto here, an emulator whose speed is not DynamoDB's.
OVERHEAD_TARGETS: dict[str, float | None] = {
    "memory": 0.95,
    "redis": 0.90,
    "postgresql": 0.85,
    "sqlite": 0.85,
    "dynamodb": None,
}
# Issue 7 §3 / issue 9: re-hydration vs the SDK's stateful mode with its event store.
STATEFUL_TARGETS: dict[str, float | None] = {
    "memory": 0.95,
    "redis": 0.90,
    "postgresql": None,
    "sqlite": None,
    "dynamodb": None,
}
STATELESS_SDK_TARGET = 1.3


class AppServer(ServerProcess):
    """bench/app_server.py in a subprocess, ready once it answers a POST.

    (A GET would not do: the SDK's stateless mode answers it with an SSE
    stream that never ends.)
    """

    def __init__(self, args: Sequence[str]) -> None:
        super().__init__(APP_SERVER, args)

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def _probe(self) -> None:
        httpx.post(self.url, content=b"{}", timeout=1.0)


# -- a raw HTTP/1.1 client ----------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection; requests go one at a time."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    def head(self, method: str, headers: Sequence[tuple[str, str]], length: int | None) -> bytes:
        lines = [f"{method} {self.path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if length is not None:
            lines.append(f"content-length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def stream(
        self, method: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> AsyncIterator[Response | bytes]:
        """Send a request; yield the response head, then body chunks as they arrive."""
        reader, writer = await self._connect()
        writer.write(self.head(method, headers, len(body) if method == "POST" else None) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        response_headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
        yield Response(int(status_line.split()[1]), response_headers, b"")
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                chunk = await reader.readexactly(size + 2)
                yield chunk[:-2]
        elif "content-length" in response_headers:
            length = int(response_headers["content-length"])
            if length:
                yield await reader.readexactly(length)
        else:
            while chunk := await reader.read(65536):
                yield chunk
        if response_headers.get("connection", "").lower() == "close":
            self.close()

    async def request(
        self, method: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> Response:
        response: Response | None = None
        chunks: list[bytes] = []
        async for item in self.stream(method, headers, body):
            if isinstance(item, Response):
                response = item
            else:
                chunks.append(item)
        assert response is not None
        response.body = b"".join(chunks)
        return response

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class RawSession:
    """One MCP session on its own connection: initialize, then tools/call."""

    def __init__(self, url: str) -> None:
        self.connection = Connection(url)
        self.session_id: str | None = None
        self._ids = 0

    def headers(self) -> list[tuple[str, str]]:
        headers = [
            ("accept", "application/json, text/event-stream"),
            ("content-type", "application/json"),
            ("mcp-protocol-version", PROTOCOL_VERSION),
        ]
        if self.session_id is not None:
            headers.append(("mcp-session-id", self.session_id))
        return headers

    def body(self, method: str, params: dict[str, object]) -> bytes:
        self._ids += 1
        message = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
        return json.dumps(message, separators=(",", ":")).encode()

    async def open(self) -> RawSession:
        params: dict[str, object] = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-session-mw-bench", "version": "1"},
        }
        answer = await self.connection.request(
            "POST", self.headers(), self.body("initialize", params)
        )
        if answer.status != 200:
            raise BenchError(f"initialize: {answer.status} {answer.body[:300]!r}")
        self.session_id = answer.headers.get("mcp-session-id")  # None: the SDK's stateless mode
        note = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
        answer = await self.connection.request("POST", self.headers(), note)
        if answer.status != 202:
            raise BenchError(f"initialized: {answer.status} {answer.body[:300]!r}")
        return self

    async def echo(self) -> None:
        body = self.body("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        answer = await self.connection.request("POST", self.headers(), body)
        if (
            answer.status != 200
            or b'"result"' not in answer.body
            or b'"isError":true' in answer.body
        ):
            raise BenchError(f"tools/call: {answer.status} {answer.body[:300]!r}")

    async def delete(self) -> None:
        if self.session_id is not None:
            answer = await self.connection.request("DELETE", self.headers())
            if answer.status not in (200, 202, 204):
                raise BenchError(f"DELETE: {answer.status} {answer.body[:300]!r}")
            self.session_id = None

    def close(self) -> None:
        self.connection.close()


async def open_sessions(url: str, n: int) -> list[RawSession]:
    return list(await asyncio.gather(*(RawSession(url).open() for _ in range(n))))


async def close_sessions(sessions: Sequence[RawSession]) -> None:
    await asyncio.gather(*(s.delete() for s in sessions), return_exceptions=True)
    for session in sessions:
        session.close()


def cpu_seconds(server: ServerProcess) -> float:
    """CPU time (user + system) the server process has used so far."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Window:
    calls: int
    seconds: float
    latencies: list[float]
    cpu: float = 0.0
    """Server CPU seconds used during the window."""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / max(self.calls, 1)


async def hammer(
    sessions: Sequence[RawSession], seconds: float, server: ServerProcess | None = None
) -> Window:
    """Every session calls echo back to back for ``seconds``; calls completed in time count."""
    cpu_before = 0.0 if server is None else cpu_seconds(server)
    started = time.perf_counter()
    deadline = started + seconds
    latencies: list[float] = []

    async def client(session: RawSession) -> None:
        while True:
            begun = time.perf_counter()
            if begun >= deadline:
                return
            await session.echo()
            ended = time.perf_counter()
            if ended <= deadline:
                latencies.append(ended - begun)

    await asyncio.gather(*(client(s) for s in sessions))
    cpu = 0.0 if server is None else cpu_seconds(server) - cpu_before
    return Window(len(latencies), seconds, latencies, cpu)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the benchmark ----------------------------------------------------------------------


BASELINES = {
    "sdk": [],
    "sdk+events": ["--events"],
    "sdk-stateless": ["--stateless"],
}


@dataclass
class StoreRun:
    store: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    latency: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    leftover_sessions: int = 0

    def rate(self, server: str) -> float:
        return median(self.rates[server])

    def ratio(self, top: str, bottom: str) -> float:
        return self.rate(top) / self.rate(bottom)

    def cpu(self, server: str) -> float:
        """Median server CPU milliseconds per call."""
        return median(self.cpu_ms[server])

    def paired(self, top: str, bottom: str) -> list[float]:
        return [t / b for t, b in zip(self.rates[top], self.rates[bottom], strict=True)]

    def added(self, index: int) -> float:
        """Median over rounds of (wrapped - bare) for p50 (0) or p99 (1), in ms."""
        pairs = zip(self.latency["mw"], self.latency["sdk"], strict=True)
        return 1000 * statistics.median(w[index] - b[index] for w, b in pairs)


def store_prefix(name: str) -> str:
    tag = secrets.token_hex(4)
    return f"bench:{tag}:" if name == "redis" else f"bench_{tag}_"


async def measure(
    servers: dict[str, ServerProcess], clients: int, window: float, rounds: int, run: StoreRun
) -> None:
    sessions = {name: await open_sessions(server.url, clients) for name, server in servers.items()}
    try:
        for name in servers:  # warm-up: imports, caches, first sessions' app state
            await hammer(sessions[name], 0.5)
        order = list(servers)
        for index in range(rounds):
            for name in order if index % 2 == 0 else reversed(order):
                result = await hammer(sessions[name], window, servers[name])
                run.rates.setdefault(name, []).append(result.rate)
                run.cpu_ms.setdefault(name, []).append(result.cpu_ms)
            line = "  ".join(f"{n} {run.rates[n][-1]:.0f}/s" for n in order)
            print(f"  {run.store:10s} round {index + 1}: {line}", flush=True)
        single = {name: sessions[name][:1] for name in ("sdk", "mw")}
        for _ in range(rounds):
            for name in ("sdk", "mw"):
                result = await hammer(single[name], LATENCY_WINDOW)
                p50 = percentile(result.latencies, 0.50)
                p99 = percentile(result.latencies, 0.99)
                run.latency.setdefault(name, []).append((p50, p99))
    finally:
        for opened in sessions.values():
            await close_sessions(opened)


def bench_store(
    name: str, baselines: Mapping[str, ServerProcess], clients: int, window: float, rounds: int
) -> StoreRun:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    url = store_url(name, workdir)
    prefix = store_prefix(name)
    run = StoreRun(name)
    wrapped = ["--store", url, "--prefix", prefix]
    try:
        with (
            AppServer(wrapped) as mw,
            AppServer([*wrapped, "--stateless"]) as mw_stateless,
        ):
            servers = {**baselines, "mw": mw, "mw-stateless": mw_stateless}
            asyncio.run(measure(servers, clients, window, rounds, run))
    finally:
        if name != "memory":
            run.leftover_sessions = asyncio.run(_drop(url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def at_least(target: float | None) -> str:
    return "—" if target is None else f"≥ {target:g}"


def verdict(value: float, target: float | None) -> str:
    if target is None:
        return "—"
    return "yes" if value >= target else "**no**"


def table(runs: Sequence[StoreRun], clients: int) -> list[str]:
    """The results as Markdown lines (printed, and written to docs/benchmarks.md)."""
    lines = [
        f"`tools/call` per second with {clients} concurrent clients (a session each);"
        " ratios of medians over alternating rounds, per-round ratios in brackets.",
        "",
        "| store | mode | wrapped / same app bare | target | met | wrapped /s | bare /s "
        "| server CPU per call, wrapped | bare |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        for mode, top, bottom in (
            ("re-hydration", "mw", "sdk"),
            ("stateless", "mw-stateless", "sdk-stateless"),
        ):
            ratio = r.ratio(top, bottom)
            target = OVERHEAD_TARGETS[r.store]
            paired = ", ".join(f"{p:.2f}" for p in r.paired(top, bottom))
            lines.append(
                f"| {r.store} | {mode} | **{ratio:.2f}** ({paired}) | {at_least(target)} "
                f"| {verdict(ratio, target)} | {r.rate(top):.0f} | {r.rate(bottom):.0f} "
                f"| {r.cpu(top):.2f} ms | {r.cpu(bottom):.2f} ms |"
            )
    lines += [
        "",
        "Re-hydration mode against what SDK users run today, same runs:",
        "",
        "| store | vs SDK stateful + in-memory event store | target | met "
        "| vs SDK stateful, no event store | target | met | vs SDK stateless | target | met |",
        "|---|---|---:|---|---|---:|---|---|---:|---|",
    ]
    for r in runs:
        events = r.ratio("mw", "sdk+events")
        plain = r.ratio("mw", "sdk")
        stateless = r.ratio("mw", "sdk-stateless")
        wanted = STATEFUL_TARGETS[r.store]
        shown = "—" if wanted is None else f"≥ {wanted:g}"
        lines.append(
            f"| {r.store} | **{events:.2f}** | {shown} | {verdict(events, wanted)} "
            f"| **{plain:.2f}** | {shown} | {verdict(plain, wanted)} "
            f"| **{stateless:.2f}** | ≥ {STATELESS_SDK_TARGET:g} "
            f"| {verdict(stateless, STATELESS_SDK_TARGET)} |"
        )
    lines += [
        "",
        "Added latency per `tools/call` (one client, re-hydration mode minus SDK stateful;"
        " medians over rounds):",
        "",
        "| store | SDK p50 | added p50 | SDK p99 | added p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        bare50 = 1000 * statistics.median(b[0] for b in r.latency["sdk"])
        bare99 = 1000 * statistics.median(b[1] for b in r.latency["sdk"])
        lines.append(
            f"| {r.store} | {bare50:.2f} ms | {r.added(0):+.2f} ms "
            f"| {bare99:.2f} ms | {r.added(1):+.2f} ms |"
        )
    return lines


def available(stores: Sequence[str]) -> list[str]:
    here = Path(tempfile.gettempdir())
    found = [s for s in stores if s in ("memory", "sqlite") or reachable(store_url(s, here))]
    for skipped in sorted(set(stores) - set(found)):
        print(f"skipped {skipped}: not reachable at {store_url(skipped, here)}")
    return found


def run(stores: Sequence[str], clients: int, window: float, rounds: int) -> list[StoreRun]:
    servers = {name: AppServer(args) for name, args in BASELINES.items()}
    runs: list[StoreRun] = []
    try:
        for server in servers.values():
            server.start()
        for name in stores:
            runs.append(bench_store(name, servers, clients, window, rounds))
    finally:
        for server in servers.values():
            server.stop()
    for r in runs:
        if r.leftover_sessions:
            print(f"warning: {r.leftover_sessions} {r.store} sessions were still live at the end")
    return runs


def command_line(
    doc: str,
    run: Callable[[Sequence[str], int, float, int], Sequence[R]],
    table: Callable[[Sequence[R], int], list[str]],
    window: float,
) -> None:
    """The command line of a per-store benchmark: options, machine, the run, its table."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--window", type=float, default=window, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    stores = available(args.stores)
    info = machine()
    info.update(asyncio.run(_versions(stores)))
    for key, value in info.items():
        print(f"{key}: {value}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    runs = run(stores, args.clients, args.window, args.rounds)
    print()
    print("\n".join(table(runs, args.clients)))
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def main() -> None:
    command_line(__doc__, run, table, WINDOW)


if __name__ == "__main__":
    main()
