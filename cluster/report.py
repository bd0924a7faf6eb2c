"""What a run counted, as a readable summary and as the generated part of docs/reliability.md.

The document keeps its prose; only the text between :data:`BEGIN` and
:data:`END` is replaced by the numbers of the run (the tables, the command, the
machine), so a rerun changes numbers, never the explanation around them.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from .procs import ClusterError
from .scenarios import Counts

BEGIN = "<!-- cluster-results:begin (written by python -m cluster --write; do not edit) -->"
END = "<!-- cluster-results:end -->"
NO_MARKERS = "{path} has no {begin!r} … {end!r} section to replace"


def _causes(counter: Iterable[tuple[str, int]]) -> str:
    items = [f"{n} x {cause}" for cause, n in counter]
    return "; ".join(items) if items else "none"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else f"{line[:limit]}…"


def summary(results: list[Counts]) -> str:
    """Plain text for the terminal: one block per scenario."""
    lines: list[str] = []
    for c in results:
        verdict = "ok" if not c.problem_count else f"{c.problem_count} PROBLEM(S)"
        lines.append(f"[{c.store}] {c.scenario}: {verdict} ({c.seconds:.0f} s)")
        lines.append(
            f"    sessions {c.sessions}, HTTP requests {c.requests}, tool calls {c.tool_calls}, "
            f"streams {c.streams}, events {c.events}, lost {c.lost}, duplicated {c.duplicated}"
        )
        lines.append(f"    404/5xx: {_causes(c.http.items())}")
        if c.failed_calls:
            lines.append(f"    failed calls: {_causes(c.failed_calls.items())}")
        lines.extend(f"    - {note}" for note in c.notes)
        lines.extend(f"    ! {problem}" for problem in c.problems)
    return "\n".join(lines)


def markdown(results: list[Counts], command: str, seconds: float) -> str:
    """The generated section of docs/reliability.md."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores, {platform.system()} {platform.release()}"
    out = [
        BEGIN,
        "",
        f"Run `{command}` on {when}: {machine}, Python {sys.version.split()[0]}, "
        f"{seconds / 60:.1f} minutes in all.",
        "",
        "| store | scenario | result | sessions | HTTP requests | tool calls | streams "
        "| events | lost | duplicated | 404 / 5xx by cause | failed calls |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in results:
        verdict = "pass" if not c.problem_count else f"**{c.problem_count} problems**"
        out.append(
            f"| {c.store} | {c.scenario} | {verdict} | {c.sessions} | {c.requests} "
            f"| {c.tool_calls} | {c.streams} | {c.events} | {c.lost} | {c.duplicated} "
            f"| {_causes(c.http.items())} | {_causes(c.failed_calls.items())} |"
        )
    out.append("")
    for c in results:
        details = [
            *c.notes,
            *(f"problem: {_first_line(p)}" for p in c.problems),
        ]
        if details:
            out.append(f"- {c.store}, {c.scenario}: " + "; ".join(details) + ".")
    out.extend(["", END])
    return "\n".join(out)


def write_section(path: Path, section: str) -> None:
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ClusterError(NO_MARKERS.format(path=path, begin=BEGIN, end=END))
    path.write_text(text[:start] + section + text[end + len(END) :])
