"""Micro-benchmark: how fast SSEParser eats a typical MCP response stream.

Every SSE byte an app writes passes through the parser, so its cost is added to
every tool call. This parses 10,000 events shaped like the MCP SDK's
(``event: message`` + one ~200-byte JSON-RPC ``data:`` line) fed in the chunk
shapes the middleware sees: one event per ASGI message (how the SDK sends),
network-sized 4 KiB and 64 KiB chunks, and random sizes that split frames and
CRLF pairs anywhere. Best of several runs, to damp noise on a shared machine.

Run: ``.venv/bin/python bench/sse_parser.py`` (results go in docs/sse.md).
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from collections.abc import Callable

from mcp_session_mw.sse import SSEParser, encode_event

EVENTS = 10_000
RUNS = 7


def make_events(n: int) -> list[bytes]:
    frames = []
    for i in range(n):
        message = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {
                "progressToken": f"tok-{i}",
                "progress": i,
                "total": n,
                "message": "step done; working on the next one " + "x" * 40,
            },
        }
        data = json.dumps(message, separators=(",", ":"))
        frames.append(encode_event(data, event="message"))
    return frames


def fixed_chunks(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def random_chunks(stream: bytes, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(stream):
        size = rng.randint(1, 600)
        chunks.append(stream[i : i + size])
        i += size
    return chunks


def run(chunks: list[bytes]) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(RUNS):
        parser = SSEParser()
        feed = parser.feed
        started = time.perf_counter()
        count = 0
        for chunk in chunks:
            count += len(feed(chunk))
        count += len(parser.close())
        best = min(best, time.perf_counter() - started)
    return best, count


def machine() -> str:
    """CPU model and core count, for the record in docs/sse.md."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main() -> None:
    frames = make_events(EVENTS)
    lf = b"".join(frames)
    crlf = lf.replace(b"\n", b"\r\n")
    sizes = [len(f) for f in frames]
    print(f"{platform.python_implementation()} {platform.python_version()} on {machine()}")
    print(f"{EVENTS} events, {sum(sizes) / len(sizes):.0f} bytes per frame, best of {RUNS}")
    cases: list[tuple[str, Callable[[], list[bytes]]]] = [
        ("one event per chunk (LF)", lambda: frames),
        ("one event per chunk (CRLF)", lambda: [f.replace(b"\n", b"\r\n") for f in frames]),
        ("4 KiB chunks (LF)", lambda: fixed_chunks(lf, 4096)),
        ("64 KiB chunks (LF)", lambda: fixed_chunks(lf, 65536)),
        ("random 1-600 byte chunks (CRLF)", lambda: random_chunks(crlf)),
    ]
    for name, make in cases:
        chunks = make()
        seconds, count = run(chunks)
        assert count == EVENTS, (name, count)
        nbytes = sum(len(c) for c in chunks)
        print(
            f"{name:32s} {EVENTS / seconds:>9,.0f} events/s {seconds / EVENTS * 1e6:5.2f} us/event "
            f"{nbytes / seconds / 1e6:>7.1f} MB/s  ({len(chunks)} chunks)"
        )


if __name__ == "__main__":
    main()
