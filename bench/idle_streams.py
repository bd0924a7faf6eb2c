"""Benchmark: what idle standalone GET streams cost one process, on each store.

One uvicorn process serves SessionMiddleware (stateless mode, in front of
bench/app_server.py's minimal JSON-RPC app, so what the process does is the
middleware's own) on the store under test. This process, the client, opens
``--streams`` sessions and one standalone GET stream for each, every stream
on its own raw HTTP/1.1 connection, and then measures, with the streams open
and nothing happening on them:

- the server's CPU over ``IDLE_SECONDS``, as a fraction of one core;
- its TCP connections to the store (SQLite: open handles on the database
  file) before the streams open (the pool the ordinary requests use), while
  they are open, and ``AFTER_SECONDS`` after they close;
- notification delay: one notification each to ``--notify`` sessions picked at
  random, ``NOTIFY_GAP`` apart, published from *this* process through its own
  store handle (another instance, as a deployment would have it; the memory
  store, which no other process can see, publishes through a route of the
  server), delay = client receive time - publish time (one machine, one
  clock);
- an ordinary request's latency (``tools/call`` on its own session and
  connection, back to back, ``CALLS`` of them) before the streams open
  and while they are open.

The open-files limit is raised (``resource.setrlimit``) for both processes:
each stream is one socket on either side. Every phase has a time bound.

    .venv/bin/python bench/idle_streams.py
    .venv/bin/python bench/idle_streams.py --streams 1000 --stores sqlite postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common import PROTOCOL_VERSION, BenchError, ServerProcess, machine
from requests import Connection, RawSession, available, cpu_seconds, percentile, store_prefix
from stream_server import store_options
from streaming import _drop, _versions, store_url

from mcp_session_mw import SessionMiddleware, create_store
from mcp_session_mw.sse import SSEEvent, SSEParser
from mcp_session_mw.streams import publish

HERE = Path(__file__).resolve()
STORES = ("memory", "sqlite", "postgresql", "mariadb", "redis")
MARIADB_URL = os.environ.get(
    "MCP_SESSION_MW_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"
)
STREAMS = 10_000
IDLE_SECONDS = 10.0
SETTLE_SECONDS = 3.0
AFTER_SECONDS = 5.0
NOTIFY = 200
NOTIFY_GAP = 0.02
CALLS = 200
OPEN_CONCURRENCY = 20
PHASE_TIMEOUT = 600.0
"""Seconds any one phase (opening sessions, opening streams, ...) may take."""
NOTIFY_TIMEOUT = 30.0
"""Seconds a published notification may take to arrive before it counts as lost."""
CPU_TARGET = 0.05
PUSH_TARGET_MS = 100.0
POLL_TARGET_MS = 1000.0
PUSH_STORES = ("memory", "postgresql", "redis")


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft open-files limit towards ``wanted``; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the server --------------------------------------------------------------------------


def serve(port: int, store: str, prefix: str | None) -> None:
    """The server process: the middleware, plus ``POST /publish`` for the memory store."""
    import uvicorn
    from app_server import minimal_app
    from starlette.types import Receive, Scope, Send

    middleware = SessionMiddleware(
        minimal_app, store=store, store_options=store_options(store, prefix), mode="stateless"
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/publish":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            asked = json.loads(body)
            await publish(middleware.store, asked["session"], asked["message"])
            headers = [(b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await middleware(scope, receive, send)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=3600,  # the caller's connection waits through the idle window
        backlog=4096,
    )


# -- measuring the server from outside ------------------------------------------------------


def store_connections(pid: int, url: str) -> int:
    """Store connections the process holds: TCP sockets to the store's port, or SQLite handles."""
    parts = urlsplit(url)
    fd_dir = Path(f"/proc/{pid}/fd")
    targets: list[str] = []
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            targets.append(os.readlink(fd))
    if parts.scheme.startswith("sqlite"):
        database = parts.path[1:]
        return sum(1 for target in targets if target == database)
    if parts.scheme.startswith("memory"):
        return 0
    port = parts.port or {"redis": 6379, "postgresql": 5432, "mysql": 3306}.get(
        parts.scheme.split("+")[0], 0
    )
    inodes = {t[8:-1] for t in targets if t.startswith("socket:[")}
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                columns = line.split()
                remote_port = int(columns[2].rpartition(":")[2], 16)
                if remote_port == port and columns[3] == "01" and columns[9] in inodes:
                    count += 1
    return count


# -- the client ----------------------------------------------------------------------------


@dataclass
class StoreRun:
    store: str
    streams: int = 0
    opened: int = 0
    cpu: float = float("nan")
    connections_before: int = 0
    connections_open: int = 0
    connections_after: int = 0
    delays: list[float] = field(default_factory=list)
    lost: int = 0
    before: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def ms(self, values: list[float], q: float) -> float:
        return 1000 * percentile(values, q) if values else float("nan")


class Stream:
    """One standalone GET stream on its own connection; records notification arrivals."""

    def __init__(self, url: str, session: RawSession) -> None:
        self.session = session
        self.connection = Connection(url)
        self.opened = asyncio.Event()
        self.arrived: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Event] = {}

    async def run(self, gate: asyncio.Semaphore) -> None:
        """Read the stream until it is closed; ``gate`` is held until the stream is open."""
        await gate.acquire()
        try:
            await self._read(gate)
        finally:
            if not self.opened.is_set():
                gate.release()

    async def _read(self, gate: asyncio.Semaphore) -> None:
        assert self.session.session_id is not None
        headers = [
            ("accept", "text/event-stream"),
            ("mcp-session-id", self.session.session_id),
            ("mcp-protocol-version", PROTOCOL_VERSION),
        ]
        parser = SSEParser()
        async for item in self.connection.stream("GET", headers):
            if not isinstance(item, bytes):
                if item.status != 200:
                    raise BenchError(f"GET: {item.status}")
                continue
            received = time.time()
            for event in parser.feed(item):
                if not isinstance(event, SSEEvent):
                    continue
                if not self.opened.is_set():  # the priming event
                    self.opened.set()
                    gate.release()
                if not event.data:
                    continue
                tag = json.loads(event.data)["params"]["data"]
                self.arrived[tag] = received
                waiter = self.waiting.pop(tag, None)
                if waiter is not None:
                    waiter.set()

    def close(self) -> None:
        self.connection.close()


async def _open_all(url: str, count: int) -> list[RawSession]:
    sessions: list[RawSession] = []
    left = [count]

    async def opener() -> None:
        while left[0] > 0:
            left[0] -= 1
            session = await _first_session(url)
            sessions.append(session)
            session.close()  # its keep-alive connection is not needed any more

    await asyncio.wait_for(
        asyncio.gather(*(opener() for _ in range(OPEN_CONCURRENCY))), PHASE_TIMEOUT
    )
    return sessions


async def _first_session(url: str) -> RawSession:
    """A new session, asked again while the store answers 503 (on MariaDB, while it creates
    its tables, and now and then when sessions are created 20 at a time)."""
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        try:
            return await RawSession(url).open()
        except BenchError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def _calls(session: RawSession, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        await session.echo()
        latencies.append(time.perf_counter() - began)
    return latencies


async def _notify(
    name: str, url: str, prefix: str, server_url: str, streams: Sequence[Stream], run: StoreRun
) -> None:
    picked = random.sample(list(streams), min(NOTIFY, len(streams)))
    store = None if name == "memory" else create_store(url, **store_options(url, prefix))
    publisher = Connection(server_url.rsplit("/", 1)[0] + "/publish")
    if store is not None:
        await store.open()
    try:
        pending: list[tuple[Stream, str, float, asyncio.Event]] = []
        for index, stream in enumerate(picked):
            tag = f"n{index}"
            arrived = stream.waiting[tag] = asyncio.Event()
            assert stream.session.session_id is not None
            message = {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": tag},
            }
            sent = time.time()
            if store is None:
                body = json.dumps({"session": stream.session.session_id, "message": message})
                answer = await publisher.request(
                    "POST", [("content-type", "application/json")], body.encode()
                )
                if answer.status != 200:
                    raise BenchError(f"publish: {answer.status}")
            else:
                await publish(store, stream.session.session_id, message)
            pending.append((stream, tag, sent, arrived))
            await asyncio.sleep(NOTIFY_GAP)
        deadline = time.monotonic() + NOTIFY_TIMEOUT
        for stream, tag, sent, arrived in pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), max(0.0, deadline - time.monotonic()))
            if tag in stream.arrived:
                run.delays.append(stream.arrived[tag] - sent)
            else:
                run.lost += 1
    finally:
        publisher.close()
        if store is not None:
            await store.close()


async def load(name: str, url: str, prefix: str, server: ServerProcess, count: int) -> StoreRun:
    assert server.process is not None
    pid = server.process.pid
    run = StoreRun(name, streams=count)
    began = time.perf_counter()

    def step(what: str) -> None:
        print(f"  {name}: {what} ({time.perf_counter() - began:.0f} s)", flush=True)

    caller = await _first_session(server.url)
    run.before = await _calls(caller, CALLS)
    run.connections_before = store_connections(pid, url)
    sessions = await _open_all(server.url, count)
    step(f"{len(sessions):,} sessions")
    streams = [Stream(server.url, session) for session in sessions]
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    tasks = [asyncio.ensure_future(stream.run(gate)) for stream in streams]
    try:
        await asyncio.wait(
            [asyncio.ensure_future(s.opened.wait()) for s in streams], timeout=PHASE_TIMEOUT
        )
        run.opened = sum(1 for s in streams if s.opened.is_set())
        step(f"{run.opened:,} streams open")
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            print(f"  {name}: {len(failed)} streams failed, first: {failed[0].exception()!r}")
        await asyncio.sleep(SETTLE_SECONDS)
        cpu_before, at = cpu_seconds(server), time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        run.cpu = (cpu_seconds(server) - cpu_before) / (time.perf_counter() - at)
        run.connections_open = store_connections(pid, url)
        step(f"idle: {run.cpu:.3f} of a core")
        run.during = await _calls(caller, CALLS)
        step("calls while open")
        await _notify(name, url, prefix, server.url, streams, run)
        step("notifications")
    finally:
        for stream in streams:
            stream.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(AFTER_SECONDS)
    run.connections_after = store_connections(pid, url)
    caller.close()
    run.seconds = time.perf_counter() - began
    print(
        f"  {name:10s} {run.opened:,}/{count:,} open, cpu {run.cpu:.3f} core,"
        f" store connections {run.connections_before} -> {run.connections_open}"
        f" -> {run.connections_after} after close,"
        f" notify p50 {run.ms(run.delays, 0.5):.1f} ms p99 {run.ms(run.delays, 0.99):.1f} ms"
        f" lost {run.lost}, call p50 {run.ms(run.before, 0.5):.2f} -> "
        f"{run.ms(run.during, 0.5):.2f} ms, p99 {run.ms(run.before, 0.99):.2f} -> "
        f"{run.ms(run.during, 0.99):.2f} ms ({run.seconds:.0f} s)",
        flush=True,
    )
    return run


def bench_store(name: str, count: int) -> StoreRun:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    url = MARIADB_URL if name == "mariadb" else store_url(name, workdir)
    prefix = store_prefix(name)
    server = ServerProcess(HERE, ["--serve", "--store", url, "--prefix", prefix])
    try:
        with server:
            return asyncio.run(load(name, url, prefix, server, count))
    except (BenchError, OSError, TimeoutError) as exc:  # one store failing ends its run only
        print(f"  {name}: failed: {exc!r}", flush=True)
        return StoreRun(name, streams=count, error=repr(exc)[:120])
    finally:
        if name != "memory":
            asyncio.run(_drop(url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(runs: Sequence[StoreRun]) -> list[str]:
    lines = [
        f"{runs[0].streams:,} idle standalone GET streams on one process;"
        f" CPU over {IDLE_SECONDS:g} s of idle; notification delay over {NOTIFY} notifications"
        " published from another process; an ordinary tools/call before / while they are open.",
        "",
        "| store | streams open | CPU (cores) | store connections before / open / after close "
        "| notify p50 | p99 | lost | call p50 before / during | p99 before / during "
        "| targets met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        if r.error:
            lines.append(f"| {r.store} | failed: {r.error} |" + " |" * 9)
            continue
        target = PUSH_TARGET_MS if r.store in PUSH_STORES else POLL_TARGET_MS
        ok = (
            r.opened == r.streams
            and r.cpu < CPU_TARGET
            and r.connections_after <= r.connections_before
            and r.lost == 0
            and r.ms(r.delays, 0.99) <= target
        )
        lines.append(
            f"| {r.store} | {r.opened:,} | {r.cpu:.3f} "
            f"| {r.connections_before} / {r.connections_open} / {r.connections_after} "
            f"| {r.ms(r.delays, 0.5):.1f} ms "
            f"| **{r.ms(r.delays, 0.99):.1f} ms** | {r.lost} "
            f"| {r.ms(r.before, 0.5):.2f} / {r.ms(r.during, 0.5):.2f} ms "
            f"| {r.ms(r.before, 0.99):.2f} / {r.ms(r.during, 0.99):.2f} ms | {verdict(ok)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=STREAMS)
    parser.add_argument("--stores", nargs="+", default=list(STORES))
    args = parser.parse_args()
    limit = raise_open_files(args.streams * 2 + 1024)
    if args.serve:
        serve(args.port, args.store, args.prefix)
        return
    if limit < args.streams + 256:
        sys.exit(f"the open-files limit is {limit}: too low for {args.streams} streams")
    stores = [s for s in args.stores if s == "mariadb"] + available(
        [s for s in args.stores if s != "mariadb"]
    )
    stores.sort(key=args.stores.index)
    info = machine()
    info.update(asyncio.run(_versions(stores)))
    for key, value in info.items():
        print(f"{key}: {value}")
    runs = [bench_store(name, args.streams) for name in stores]
    print()
    print("\n".join(table(runs)))


if __name__ == "__main__":
    main()
