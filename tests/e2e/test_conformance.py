"""The official MCP conformance suite, run against examples/05_conformance_server.py.

One uvicorn process serves the whole module; `conformance/run.sh` runs every
scenario once (strict: a warning or a scenario that checked nothing counts as a
failure), and each scenario is its own test so a failure names the scenario and
shows the suite's output for it. The scenario list is the runner's own
(`run.sh --list`), so the two cannot drift apart.

The server is the ordinary stateful SDK app wrapped in SessionMiddleware, run
once per durable store (SQLite, PostgreSQL, Redis), so every scenario proves
the middleware on that store. The "two instances" runs put two processes on
one shared store (PostgreSQL, Redis) behind :mod:`tests.e2e.proxy`, which sends
each HTTP request to the other process than the one before: every scenario
then has its session re-created, its GET stream served, its resumes and its
replies to elicitation and sampling taken by a process that did not start them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import pytest

from tests.services import POSTGRES_URL, REDIS_URL, need_service, unavailable

from .server import REPO_ROOT, run_server

pytestmark = pytest.mark.e2e

RUN_SH = REPO_ROOT / "conformance" / "run.sh"
SUITE_DIR = (
    REPO_ROOT / "conformance" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist"
)
SERVER_ARGS = ["examples/05_conformance_server.py"]
PROXY_SCRIPT = "tests/e2e/proxy.py"
STORES: dict[str, tuple[str | None, str, int]] = {
    # name: (service to need, store URL, server processes behind a round-robin proxy);
    # {tmp} in a URL is the test's temporary directory.
    "sqlite": (None, "sqlite+aiosqlite:///{tmp}/conformance.db", 1),
    "postgresql": ("postgresql", POSTGRES_URL, 1),
    "redis": ("redis", REDIS_URL, 1),
    "postgresql-two-instances": ("postgresql", POSTGRES_URL, 2),
    "redis-two-instances": ("redis", REDIS_URL, 2),
}
RUN_TIMEOUT = 900.0
"""Bounds a hung suite (first use includes `npm ci`); it is not a speed check."""

NO_NPM = "npm is not on PATH and the conformance suite is not installed in conformance/node_modules"
NO_RESULT = "conformance/run.sh printed no result line for this scenario"

RESULT_LINE = re.compile(r"^(PASS|FAIL) (\S+)")


def _scenarios() -> list[str]:
    listed = subprocess.run(
        ["bash", str(RUN_SH), "--list"], check=True, capture_output=True, text=True
    )
    return listed.stdout.split()


SCENARIOS = _scenarios()


@dataclass
class Outcome:
    passed: bool
    report: list[str] = field(default_factory=list)


def _parse(output: str) -> dict[str, Outcome]:
    """Map each scenario to its PASS/FAIL line and the indented suite output under it."""
    outcomes: dict[str, Outcome] = {}
    current: Outcome | None = None
    for line in output.splitlines():
        match = RESULT_LINE.match(line)
        if match:
            current = outcomes[match.group(2)] = Outcome(match.group(1) == "PASS", [line])
        elif current is not None and line.startswith("    "):
            current.report.append(line)
        else:
            current = None
    return outcomes


@contextmanager
def serve(store_url: str, instances: int) -> Iterator[str]:
    """The base URL of one server, or of a round-robin proxy in front of ``instances``."""
    env = {**os.environ, "MCP_SESSION_STORE_URL": store_url}
    if instances == 1:
        with run_server(SERVER_ARGS, env) as base_url:
            yield base_url
        return
    with ExitStack() as stack:
        managers = [run_server(SERVER_ARGS, env) for _ in range(instances)]
        with ThreadPoolExecutor(instances) as pool:  # start-up is mostly imports
            futures = [pool.submit(manager.__enter__) for manager in managers]
        for manager, future in zip(managers, futures, strict=True):
            if future.exception() is None:
                stack.push(manager.__exit__)
        upstreams = [f"--upstream={future.result()}" for future in futures]
        yield stack.enter_context(run_server([PROXY_SCRIPT, *upstreams]))


@pytest.fixture(scope="module", params=list(STORES))
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    service, url, instances = STORES[request.param]
    if service is not None:
        need_service(service)
    if shutil.which("npm") is None and not SUITE_DIR.is_dir():
        unavailable(NO_NPM)
    store_url = url.format(tmp=tmp_path_factory.mktemp("conformance"))
    with serve(store_url, instances) as base_url:
        completed = subprocess.run(
            ["bash", str(RUN_SH), f"{base_url}/mcp", *SCENARIOS],
            env={**os.environ, "CONFORMANCE_STRICT": "1"},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    return _parse(completed.stdout + completed.stderr)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes(outcomes: dict[str, Outcome], scenario: str) -> None:
    outcome = outcomes.get(scenario)
    assert outcome is not None, NO_RESULT
    assert outcome.passed, "\n".join(outcome.report)
