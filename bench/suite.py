"""The whole benchmark suite: every bench/ script in one run, one table of targets.

Runs, in order: request overhead (bench/requests.py), session creation
(bench/sessions.py), memory per idle session (bench/memory.py), 1,000 open
SSE streams (bench/scale.py) and durable streams (bench/streaming.py), each
against real uvicorn processes on loopback, with the sizes below chosen so
the whole suite takes about ten minutes on two cores. It prints every
benchmark's table and then one summary of the targets, and writes the tables
into docs/benchmarks.md between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` markers (``--no-write`` leaves the file alone).

    make bench                                # = .venv/bin/python bench/suite.py
    .venv/bin/python bench/suite.py --only requests sessions --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import memory
import requests
import scale
import sessions
import streaming
from common import ServerProcess, machine

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
PARTS = ("requests", "sessions", "memory", "scale", "streaming")

# Sizes for a ~10 minute suite on two shared cores (each script's defaults are larger).
REQUEST_WINDOW = 2.0
REQUEST_ROUNDS = 5
SESSION_WINDOW = 1.0
MEMORY_SESSIONS = 2_000
STREAM_EVENTS = 10_000
STREAM_ROUNDS = 3
STREAM_BUDGET = 25.0

T = TypeVar("T")
Row = tuple[str, str, str, str]
"""figure, value, target, met"""


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def summarize_requests(runs: Sequence[requests.StoreRun]) -> list[Row]:
    rows: list[Row] = []
    for r in runs:
        target = requests.OVERHEAD_TARGETS[r.store]
        for mode, top, bottom in (
            ("re-hydration", "mw", "sdk"),
            ("stateless", "mw-stateless", "sdk-stateless"),
        ):
            ratio = r.ratio(top, bottom)
            rows.append(
                (
                    f"requests/s, {mode} / same app bare, {r.store}",
                    f"{ratio:.2f}",
                    requests.at_least(target),
                    requests.verdict(ratio, target),
                )
            )
        events = r.ratio("mw", "sdk+events")
        stateful_target = requests.STATEFUL_TARGETS[r.store]
        if stateful_target is not None:
            rows.append(
                (
                    f"requests/s, re-hydration / SDK stateful + event store, {r.store}",
                    f"{events:.2f}",
                    f"≥ {stateful_target:g}",
                    met(events >= stateful_target),
                )
            )
        stateless = r.ratio("mw", "sdk-stateless")
        rows.append(
            (
                f"requests/s, re-hydration / SDK stateless, {r.store}",
                f"{stateless:.2f}",
                f"≥ {requests.STATELESS_SDK_TARGET:g}",
                met(stateless >= requests.STATELESS_SDK_TARGET),
            )
        )
    for r in runs:
        rows.append(
            (
                f"added latency p50 / p99 per request, {r.store}",
                f"{r.added(0):+.2f} / {r.added(1):+.2f} ms",
                "reported",
                "—",
            )
        )
    return rows


def summarize_sessions(runs: Sequence[sessions.StoreRun]) -> list[Row]:
    return [
        (
            f"sessions opened+closed /s, wrapped / SDK, {r.store}",
            f"{statistics.median(c.rate for c in r.wrapped):.0f}/s ({r.ratio:.2f})",
            "reported",
            "—",
        )
        for r in runs
    ]


def summarize_memory(results: Sequence[memory.Growth]) -> list[Row]:
    rows: list[Row] = []
    for g in results:
        target = memory.target_for(g.store)
        if target is None:
            continue
        rows.append(
            (
                f"RSS growth per idle session, {g.store}",
                f"{g.per_session:,.0f} B",
                f"≤ {target:,.0f} B",
                met(g.per_session <= target),
            )
        )
    return rows


def summarize_scale(runs: Sequence[scale.Run]) -> list[Row]:
    rows: list[Row] = []
    for r in runs:
        rows.append(
            (
                f"SSE streams open at once, {r.server}",
                f"{r.peak_open:,} ({r.complete:,} complete)",
                f"{r.streams:,}",
                met(r.peak_open >= r.streams and r.complete == r.streams),
            )
        )
        rows.append((f"emit → receive p99, {r.server}", f"{r.p(0.99):.0f} ms", "reported", "—"))
    return rows


def summarize_streaming(results: Sequence[streaming.StoreResult]) -> list[Row]:
    rows: list[Row] = []
    for r in results:
        target = streaming.TARGETS[r.store]
        rows.append(
            (
                f"10,000-event stream, wrapped / bare time, {r.store}",
                f"{r.ratio:.2f}",
                "—" if target is None else f"≤ {target:g}",
                "—" if target is None else met(r.ratio <= target),
            )
        )
        rows.append(
            (
                f"replay / live time, {r.store}",
                f"{r.replay_ratio:.2f}",
                "< 1",
                met(r.replay_ratio < 1),
            )
        )
    return rows


def run_streaming(stores: Sequence[str]) -> tuple[list[streaming.StoreResult], list[str]]:
    results = []
    with ServerProcess(streaming.SERVER, ["--bare"]) as bare:
        for name in stores:
            results.append(
                streaming.bench_store(name, bare, STREAM_EVENTS, STREAM_ROUNDS, STREAM_BUDGET)
            )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        streaming.report(results, STREAM_EVENTS, STREAM_ROUNDS)
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    return results, lines


def write_sections(path: Path, sections: dict[str, list[str]]) -> list[str]:
    """Replace each ``<!-- bench:NAME -->`` … ``<!-- /bench:NAME -->`` block; names not found."""
    text = path.read_text(encoding="utf-8")
    missing = []
    for name, lines in sections.items():
        pattern = re.compile(
            rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", flags=re.DOTALL
        )
        body = "\n".join(lines).rstrip() + "\n"

        def fill(match: re.Match[str], body: str = body) -> str:
            return match.group(1) + "\n" + body + "\n" + match.group(2)

        text, count = pattern.subn(fill, text)
        if count == 0:
            missing.append(name)
    path.write_text(text, encoding="utf-8")
    return missing


_SUMMARY_ROW = re.compile(r"^\| (.+?) \| (.*?) \| (.*?) \| (.*?) \|$")


def previous_rows(path: Path) -> list[Row]:
    """The target rows of the summary block now in ``path`` (for a partial run)."""
    text = path.read_text(encoding="utf-8")
    block = re.search(r"<!-- bench:summary -->\n(.*?)<!-- /bench:summary -->", text, re.DOTALL)
    rows: list[Row] = []
    for line in (block.group(1) if block else "").splitlines():
        match = _SUMMARY_ROW.match(line)
        if match and match.group(1) not in ("figure", "---") and not line.startswith("|---"):
            figure, value, target, ok = match.groups()
            rows.append((figure, value, target, ok))
    return rows


def merge_rows(old: list[Row], new: list[Row]) -> list[Row]:
    """``old`` with the rows ``new`` measured again replaced in place; new figures appended."""
    fresh = {row[0]: row for row in new}
    merged = [fresh.pop(row[0], row) for row in old]
    return merged + [row for row in new if row[0] in fresh]


def timed(label: str, step: Callable[[], T]) -> T:
    print(f"\n== {label}", flush=True)
    started = time.perf_counter()
    result = step()
    print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--stores", nargs="+", choices=requests.STORES, default=list(requests.STORES)
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    stores = requests.available(args.stores)
    info = machine()
    info.update(asyncio.run(streaming._versions(stores)))
    load_start = os.getloadavg()
    started = time.perf_counter()
    for key, value in info.items():
        print(f"{key}: {value}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*load_start))

    sections: dict[str, list[str]] = {}
    rows: list[Row] = []
    clients = requests.CLIENTS
    if "requests" in args.only:
        runs = timed(
            "request overhead",
            lambda: requests.run(stores, clients, REQUEST_WINDOW, REQUEST_ROUNDS),
        )
        sections["requests"] = requests.table(runs, clients)
        rows += summarize_requests(runs)
    if "sessions" in args.only:
        session_runs = timed(
            "session creation",
            lambda: sessions.run(stores, clients, SESSION_WINDOW, REQUEST_ROUNDS),
        )
        sections["sessions"] = sessions.table(session_runs, clients)
        rows += summarize_sessions(session_runs)
    if "memory" in args.only:
        growth = timed("memory", lambda: memory.run(stores, MEMORY_SESSIONS, clients))
        sections["memory"] = memory.table(growth)
        rows += summarize_memory(growth)
    if "scale" in args.only:
        scale_stores = [s for s in scale.SCALE_STORES if s in stores]
        scale_runs = timed("scale", lambda: scale.run(scale_stores, scale.STREAMS))
        sections["scale"] = scale.table(scale_runs)
        rows += summarize_scale(scale_runs)
    if "streaming" in args.only:
        outcome = timed("durable streams", lambda: run_streaming(stores))
        stream_results, stream_lines = outcome
        sections["streaming"] = stream_lines
        rows += summarize_streaming(stream_results)

    load_end = os.getloadavg()
    minutes = (time.perf_counter() - started) / 60
    partial = set(args.only) != set(PARTS) or set(stores) != set(requests.STORES)
    if partial and not args.no_write:
        rows = merge_rows(previous_rows(DOCS), rows)
    summary = [
        f"Run of {datetime.date.today().isoformat()}, {minutes:.1f} minutes."
        f" Machine: {info['cpus']} x {info['cpu']}, {info['os']}, {info['python']}"
        + "".join(
            f", {name} {info[name]}" for name in ("sqlite", "postgresql", "redis") if name in info
        )
        + f". Load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end (1 min)."
        + (
            f" Partial run ({', '.join(args.only)}; stores: {', '.join(stores)}):"
            " the other rows are from an earlier run."
            if partial
            else ""
        ),
        "",
        "| figure | value | target | met |",
        "|---|---:|---:|---|",
        *(f"| {figure} | {value} | {target} | {ok} |" for figure, value, target, ok in rows),
    ]
    sections["summary"] = summary
    for name, lines in sections.items():
        print(f"\n## {name}\n")
        print("\n".join(lines))
    if not args.no_write:
        missing = write_sections(DOCS, sections)
        for name in missing:
            print(f"warning: no <!-- bench:{name} --> markers in {DOCS}; section not written")
        print(f"\nwrote {DOCS}")


if __name__ == "__main__":
    main()
