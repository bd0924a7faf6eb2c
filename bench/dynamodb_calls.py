"""What one ``tools/call`` costs on the DynamoDB store: requests by operation, and capacity units.

The bench app (``bench/app_server.py``, tool ``echo``) runs in this process
behind SessionMiddleware on a DynamoDB store (``$MCP_SESSION_MW_BENCH_DYNAMODB_URL``,
else a table on a local moto server), in re-hydration and in stateless mode.
After ``initialize`` and a warm-up call, every request the store sends is
counted over ``--calls`` tool calls (the store's own per-operation counter),
and the session's items are read back to size them. Capacity units follow
AWS's published rules for on-demand tables: a strongly consistent read is 1
read unit per 4 KB per item; a write 1 write unit per 1 KB; each action of a
TransactWriteItems 2 write units per 1 KB (the ConditionCheck counted like
the others, an upper bound).

    .venv/bin/python bench/dynamodb_calls.py --calls 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections import Counter
from typing import Any

import httpx
from app_server import build_server
from dynamodb_local import dynamodb_url

from mcp_session_mw import SessionMiddleware, create_store

ACCEPT = "application/json, text/event-stream"
VERSION = "2025-11-25"
BASE = "http://127.0.0.1:8000"
READS = {"GetItem", "BatchGetItem", "Query", "Scan"}


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value by DynamoDB's item-size rules (close enough for units)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return len(inner.lstrip("-").replace(".", "")) // 2 + 2
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in inner)
    raise ValueError(kind)


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def kind_of(key: dict[str, Any]) -> str:
    """Which item a key names: the session, a stream state, a chunk, the noted list, a lock."""
    kinds = {"s": "session", "t": "stream state", "e": "event chunk", "q": "noted streams"}
    return kinds.get(key["s"]["S"][0], "lock")


class Counting:
    """Wraps the store's table: every request, and each item it reads or writes, by kind."""

    def __init__(self, store: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        """Items read, by kind (strongly consistent)."""
        self.writes: Counter[tuple[str, bool]] = Counter()
        """Items written, by (kind, in a transaction)."""
        self._inner = store.table.call
        store.table.call = self.call

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        self.calls[operation] += 1
        if operation == "TransactWriteItems":
            for action in params["TransactItems"]:
                (body,) = action.values()
                self.writes[kind_of(body.get("Key") or body["Item"]), True] += 1
        elif operation == "BatchGetItem":
            for request in params["RequestItems"].values():
                self.reads.update(kind_of(key) for key in request["Keys"])
        elif operation == "GetItem":
            self.reads[kind_of(params["Key"])] += 1
        elif operation in ("Query", "Scan"):
            self.reads["event chunk"] += 1
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            self.writes[kind_of(params.get("Key") or params["Item"]), False] += 1
        answer: dict[str, Any] = await self._inner(operation, **params)
        return answer

    def reset(self) -> None:
        self.calls.clear()
        self.reads.clear()
        self.writes.clear()


def post(client: httpx.AsyncClient, body: dict[str, Any], session: str | None) -> Any:
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    if session is not None:
        headers["mcp-session-id"] = session
        headers["mcp-protocol-version"] = VERSION
    return client.post("/mcp", content=json.dumps(body), headers=headers)


async def measure(mode: str, calls: int) -> dict[str, Any]:
    url = dynamodb_url()
    store = create_store(url)
    stateless = mode == "stateless"
    sdk_app = build_server().streamable_http_app(stateless_http=stateless)
    app = SessionMiddleware(sdk_app, store=store, mode="stateless" if stateless else "rehydrate")
    counting = Counting(store)
    try:
        async with sdk_app.router.lifespan_context(sdk_app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                init = {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": VERSION,
                        "capabilities": {},
                        "clientInfo": {"name": "dynamodb-calls", "version": "1"},
                    },
                }
                answer = await post(client, init, None)
                session = answer.headers["mcp-session-id"]
                initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await post(client, initialized, session)
                counting.reset()
                for n in range(1, calls + 2):
                    body = {
                        "jsonrpc": "2.0",
                        "id": n,
                        "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": f"call {n}"}},
                    }
                    answer = await post(client, body, session)
                    if answer.status_code != 200:
                        raise RuntimeError(f"tools/call answered {answer.status_code}")
                    if n == 1:
                        counting.reset()  # the first call re-creates nothing, but warms up
                measured = (dict(counting.calls), dict(counting.reads), dict(counting.writes))
                items = await store.table.query(
                    KeyConditionExpression="#k = :k",
                    ExpressionAttributeNames={"#k": "k"},
                    ExpressionAttributeValues={":k": {"S": store.key(session)}},
                )
                await post(client, {"jsonrpc": "2.0", "id": "end", "method": "ping"}, session)
    finally:
        await store.drop_table()
        await store.close()
    sizes = {"session": 0, "stream state": 0, "event chunk": 0, "noted streams": 0}
    for item in items:
        name = kind_of(item)
        sizes[name] = max(sizes[name], item_size(item))
    return {
        "mode": mode,
        "calls": measured[0],
        "reads": measured[1],
        "writes": measured[2],
        "sizes": sizes,
        "n": calls,
    }


def units(result: dict[str, Any]) -> tuple[float, float]:
    """Read and write units per tools/call from the counted items and their sizes."""
    n, sizes = result["n"], result["sizes"]
    reads = sum(
        count * max(1, math.ceil(sizes.get(kind, 0) / 4096))
        for kind, count in result["reads"].items()
    )
    writes = sum(
        count * (2 if transactional else 1) * max(1, math.ceil(sizes.get(kind, 0) / 1024))
        for (kind, transactional), count in result["writes"].items()
    )
    return reads / n, writes / n


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| mode | requests per tools/call | by operation | read units | write units |",
        "|---|---:|---|---:|---:|",
    ]
    for r in results:
        n = r["n"]
        per = ", ".join(f"{op} {count / n:g}" for op, count in sorted(r["calls"].items()))
        reads, writes = units(r)
        total = sum(r["calls"].values()) / n
        lines.append(f"| {r['mode']} | {total:g} | {per} | {reads:g} | {writes:g} |")
    sizes = results[0]["sizes"]
    lines.append("")
    lines.append(
        "Item sizes (bytes, largest seen): "
        + ", ".join(f"{name} {size}" for name, size in sizes.items())
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    results = [asyncio.run(measure(mode, args.calls)) for mode in ("re-hydration", "stateless")]
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
