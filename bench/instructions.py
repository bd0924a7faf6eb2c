"""Benchmark: CPU instructions per ``tools/call``, counted by callgrind, in-process.

Rates on this two-core machine move by a tenth between runs; instruction
counts do not. This calls the ASGI app of ``bench/app_server.py`` directly (no
uvicorn, no sockets but Redis's), one session, one call at a time, and counts
the instructions of ``--calls`` calls beyond a warm-up of ``--base`` calls
under ``valgrind --tool=callgrind``, so start-up and warm-up cancel out.

Variants:

- ``sdk``: the SDK app in its stateful mode, no middleware;
- ``floor`` / ``floor-redis`` / ``floor-postgresql`` / ``floor-sqlite``: the
  yardstick of ``bench/floor_app.py`` (SQL ones in ``bench/floor_sql.py``);
- ``mw`` / ``mw-redis`` / ``mw-postgresql`` / ``mw-sqlite``: SessionMiddleware
  in re-hydration mode, as shipped;
- ``mw-nocap`` / ``mw-redis-nocap``: with ``max_streams_per_session=None``;
- ``mw-nometrics`` / ``mw-redis-nometrics``: with the store left untimed, as
  when neither prometheus-client nor opentelemetry-api is installed;
- ``mw-lean``: both;
- ``mw-redis-held``: the Redis store, but the session and stream scripts go over a few
  ``redis.asyncio.Connection`` objects held in a list (redis-py's packing and
  its hiredis parser, no pool checkout): the yardstick a hand-written
  transport has to beat.

The last three say what two features cost, not configurations to run: the
streams cap bounds what a session keeps, and the store timings are what
``/metrics`` and the spans report.

    .venv/bin/python bench/instructions.py [--calls 1000] [--base 200] [variant ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import app_server
from floor_app import body_then_disconnect, drop_floor_keys
from floor_sql import drop_floor_tables
from starlette.types import ASGIApp, Message
from streaming import POSTGRES_URL, _drop, reachable

import mcp_session_mw.metrics as metrics
from mcp_session_mw import SessionMiddleware

REDIS_URL = "redis://127.0.0.1:6379/0"
VARIANTS = (
    "sdk",
    "floor",
    "mw",
    "mw-nocap",
    "mw-nometrics",
    "mw-lean",
    "floor-redis",
    "mw-redis",
    "mw-redis-nocap",
    "mw-redis-nometrics",
    "mw-redis-held",
    "floor-postgresql",
    "mw-postgresql",
    "mw-postgresql-nocap",
    "floor-sqlite",
    "mw-sqlite",
    "mw-sqlite-nocap",
)
SQL = ("postgresql", "sqlite")
PROTOCOL = "2025-11-25"
_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"accept", b"application/json, text/event-stream"),
]


def store_of(variant: str, folder: Path) -> str:
    """The store URL a variant runs on (a SQLite file in ``folder``)."""
    if "-redis" in variant:
        return REDIS_URL
    if "-postgresql" in variant:
        return POSTGRES_URL
    if "-sqlite" in variant:
        return f"sqlite+aiosqlite:///{folder / 'b.db'}"
    return "memory://"


def build(variant: str, prefix: str, folder: Path) -> ASGIApp:
    store = store_of(variant, folder)
    if variant.startswith("floor"):
        return app_server.build_app(
            stateless=False, events=False, store=None, prefix=prefix, floor=store
        )
    if variant == "sdk":
        return app_server.build_app(stateless=False, events=False, store=None, prefix=None)
    if variant.endswith(("-nometrics", "-lean")):
        metrics.instrument = lambda store: store  # what it is without the metrics extras
    options: dict[str, Any] = {}
    if variant.endswith(("-nocap", "-lean")):
        options["max_streams_per_session"] = None
    store_options: dict[str, Any] = dict(app_server.store_options(store, prefix))
    if variant == "mw-redis-held":
        from mcp_session_mw.stores.redis.connection import RedisBase

        held = HeldConnections(REDIS_URL)
        RedisBase._hot = property(lambda self: held)  # type: ignore[assignment,method-assign]
    return SessionMiddleware(
        app_server.build_server().streamable_http_app(stateless_http=False),
        store=store,
        store_options=store_options,
        mode="rehydrate",
        **options,
    )


class HeldConnections:
    """redis-py connections kept in a list: a command takes one, sends, reads, gives it back."""

    def __init__(self, url: str) -> None:
        from redis.asyncio.connection import parse_url

        self._options = parse_url(url)
        self._idle: list[Any] = []

    async def execute_command(self, *args: Any) -> Any:
        from redis.asyncio.connection import Connection
        from redis.exceptions import ResponseError

        connection = self._idle.pop() if self._idle else Connection(**self._options)
        try:
            await connection.send_command(*args)
            reply = await connection.read_response()
        except ResponseError:
            self._idle.append(connection)
            raise
        except BaseException:
            await connection.disconnect()
            raise
        self._idle.append(connection)
        return reply


def http_scope(method: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def post(
    app: ASGIApp, payload: dict[str, Any], session: str | None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One POST through the app; its receive gives the body, then a disconnect once answered."""
    body = json.dumps(payload).encode()
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    if session is not None:
        headers += [
            (b"mcp-session-id", session.encode()),
            (b"mcp-protocol-version", PROTOCOL.encode()),
        ]
    scope = http_scope("POST", headers)
    answered = asyncio.Event()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await app(scope, body_then_disconnect(body, answered), send)
    return (
        sent[0]["status"],
        dict(sent[0]["headers"]),
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


async def calls(app: ASGIApp, count: int) -> None:
    """Start the app's lifespan, open a session, make ``count`` echo calls, end it all."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, to_app.get, from_app.put)
    )
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    init = {
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "b", "version": "1"},
    }
    _, headers, _ = await post(
        app, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, None
    )
    session = headers[b"mcp-session-id"].decode()
    await post(app, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    echo = {"name": "echo", "arguments": {"text": "hi"}}
    for number in range(1, count + 1):
        status, _, body = await post(
            app, {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": echo}, session
        )
        if status != 200 or b'"hi"' not in body:
            raise SystemExit(f"call {number} failed: {status} {body[:200]!r}")
    await post_delete(app, session)
    await to_app.put({"type": "lifespan.shutdown"})
    await from_app.get()
    await lifespan


async def post_delete(app: ASGIApp, session: str) -> None:
    """End the session, so a run leaves nothing behind in Redis."""
    headers = [*_HEADERS, (b"mcp-session-id", session.encode())]
    scope = http_scope("DELETE", [*headers, (b"mcp-protocol-version", PROTOCOL.encode())])

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    await app(scope, receive, send)


def counted(variant: str, count: int) -> int:
    """Instructions of one whole run of ``count`` calls under callgrind."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--run",
                variant,
                str(count),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", done.stderr) or re.search(
            r"refs:\s+([\d,]+)", done.stderr
        )
        if done.returncode != 0 or found is None:
            raise SystemExit(f"{variant}: callgrind run failed\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--base", type=int, default=200)
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "CALLS"), help=argparse.SUPPRESS)
    parser.add_argument("variants", nargs="*", help=f"any of {', '.join(VARIANTS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)}")
    if args.run:
        variant, count = args.run
        sql = any(f"-{name}" in variant for name in SQL)
        prefix = f"b{secrets.token_hex(4)}_" if sql else f"bench:{secrets.token_hex(4)}:"
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(calls(build(variant, prefix, Path(folder)), int(count)))
            if sql and variant.startswith("floor"):
                drop_floor_tables(store_of(variant, Path(folder)), prefix)
            elif sql:
                asyncio.run(_drop(store_of(variant, Path(folder)), prefix))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    chosen = args.variants or [v for v in VARIANTS if _reachable(v)]
    print("| variant | instructions per call | / SDK's |")
    print("|---|---:|---:|")
    sdk = None
    for variant in chosen:
        per_call = (
            counted(variant, args.base + args.calls) - counted(variant, args.base)
        ) / args.calls
        if variant == "floor-redis":
            drop_floor_keys(REDIS_URL)  # the yardstick's lists, which it never deletes
        sdk = per_call if variant == "sdk" else sdk
        ratio = f"{sdk / per_call:.3f}" if sdk else "-"
        print(f"| {variant} | {per_call / 1e6:.3f} M | {ratio} |", flush=True)


def _reachable(variant: str) -> bool:
    return reachable(store_of(variant, Path(".")))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
