"""Run the scenarios on a three-instance cluster behind nginx, once per store.

Runs every scenario of :mod:`cluster.scenarios` on PostgreSQL and then on Redis
(a store whose server is not reachable is skipped, with the reason), prints
what it does and what it counted, and with ``--write`` puts the numbers into
docs/reliability.md. Exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import anyio

from tests.services import POSTGRES_URL, REDIS_URL, SERVICES, reachable

from .harness import REPO_ROOT, Cluster
from .nginx import NginxUnavailableError
from .report import markdown, summary, write_section
from .scenarios import CI, FULL, Counts, Plan, crash, rolling_restart, round_robin, store_outage
from .stores import STORES, store_spec

SCENARIOS = {
    "round-robin": round_robin,
    "crash": crash,
    "rolling-restart": rolling_restart,
    "store-outage": store_outage,
}
URLS = {"postgresql": POSTGRES_URL, "redis": REDIS_URL}
DOC = REPO_ROOT / "docs" / "reliability.md"


def say(text: str) -> None:
    print(text, flush=True)


async def run_store(cluster: Cluster, plan: Plan, names: list[str]) -> list[Counts]:
    results = []
    for name in names:
        say(f"[{cluster.spec.name}] {name} ...")
        counts = await SCENARIOS[name](cluster, plan, say)
        say(summary([counts]))
        results.append(counts)
        await cluster.ensure_all_running()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", action="append", choices=STORES, help="only this store (repeatable)"
    )
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="only this one (repeatable)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the shortened run CI does (10 sessions, 15 s of restarts)",
    )
    parser.add_argument(
        "--write",
        nargs="?",
        const=DOC,
        type=Path,
        metavar="PATH",
        help=f"put the numbers into PATH (default {DOC.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    plan = CI if args.quick else FULL
    names = args.scenario or list(SCENARIOS)
    began = time.monotonic()
    results: list[Counts] = []
    for store in args.store or STORES:
        host, port = SERVICES[store]
        if not reachable(host, port):
            say(f"[{store}] skipped: {store} is not reachable on {host}:{port}")
            continue
        try:
            with Cluster(store_spec(store, URLS[store]), say=say) as cluster:
                results.extend(anyio.run(run_store, cluster, plan, names))
        except NginxUnavailableError as exc:
            say(str(exc))
            return 2
    say("")
    say(summary(results))
    if args.write is not None and results:
        command = shlex.join(["python", "-m", "cluster", *(argv or sys.argv[1:])])
        write_section(args.write, markdown(results, command, time.monotonic() - began))
        say(f"wrote the numbers to {args.write}")
    failed = any(c.problem_count for c in results)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
