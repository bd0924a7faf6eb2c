"""The official conformance suite: the TypeScript SDK's server alone, then through the proxy.

``tests/e2e/ts_upstream/server.mjs`` is run bare and the suite's scenarios
(the runner's own list, as in :mod:`tests.e2e.test_conformance`) are run
against it; then again through ``mcp-session-mw proxy`` on Redis, and through
two proxies, each in front of its own upstream, on PostgreSQL, behind the
round-robin balancer of :mod:`tests.e2e.proxy` (each HTTP request to the
other proxy). Every scenario the server passes alone must pass through the
proxy; one it fails alone is skipped with the suite's report, since the proxy
cannot be asked to fix the upstream.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from tests.services import POSTGRES_URL, REDIS_URL, need_service, unavailable

from .server import run_server
from .test_conformance import (
    NO_NPM,
    NO_RESULT,
    PROXY_SCRIPT,
    RUN_SH,
    RUN_TIMEOUT,
    SCENARIOS,
    SUITE_DIR,
    Outcome,
    _parse,
)
from .ts_server import SCRIPT as UPSTREAM_SCRIPT
from .ts_server import node

pytestmark = pytest.mark.e2e

VARIANTS: dict[str, tuple[str, str, int]] = {
    # name: (service, store URL, proxies, each in front of its own upstream)
    "proxy-redis": ("redis", REDIS_URL, 1),
    "two-proxies-postgresql": ("postgresql", POSTGRES_URL, 2),
}
FAILS_ALONE = "the TypeScript SDK's server fails this scenario on its own:\n{report}"


def _run_suite(url: str) -> dict[str, Outcome]:
    completed = subprocess.run(
        ["bash", str(RUN_SH), url, *SCENARIOS],
        env={**os.environ, "CONFORMANCE_STRICT": "1"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    return _parse(completed.stdout + completed.stderr)


def _need_tools() -> None:
    if shutil.which("npm") is None and not SUITE_DIR.is_dir():
        unavailable(NO_NPM)
    node()


@pytest.fixture(scope="module")
def alone() -> dict[str, Outcome]:
    _need_tools()
    with run_server([UPSTREAM_SCRIPT]) as base_url:
        return _run_suite(f"{base_url}/mcp")


@contextmanager
def proxied(store_url: str, count: int) -> Iterator[str]:
    """The base URL of one proxy, or of a round-robin balancer in front of ``count``."""
    with ExitStack() as stack:
        proxies = []
        for _ in range(count):
            upstream = stack.enter_context(run_server([UPSTREAM_SCRIPT]))
            args = ["-m", "mcp_session_mw.cli", "proxy", "--upstream", f"{upstream}/mcp"]
            args += ["--store", store_url, "--log-level", "warning"]
            proxies.append(stack.enter_context(run_server(args)))
        if count == 1:
            yield proxies[0]
        else:
            upstreams = [f"--upstream={url}" for url in proxies]
            yield stack.enter_context(run_server([PROXY_SCRIPT, *upstreams]))


@pytest.fixture(scope="module", params=list(VARIANTS))
def through_proxy(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    service, store_url, count = VARIANTS[request.param]
    need_service(service)
    _need_tools()
    with proxied(store_url, count) as base_url:
        return _run_suite(f"{base_url}/mcp")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_through_the_proxy_if_it_passes_alone(
    alone: dict[str, Outcome], through_proxy: dict[str, Outcome], scenario: str
) -> None:
    bare = alone.get(scenario)
    assert bare is not None, NO_RESULT
    if not bare.passed:
        pytest.skip(FAILS_ALONE.format(report="\n".join(bare.report)))
    outcome = through_proxy.get(scenario)
    assert outcome is not None, NO_RESULT
    assert outcome.passed, "\n".join(outcome.report)
