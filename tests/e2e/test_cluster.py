"""End to end: three instances behind nginx on one shared store — crashes, restarts, outages.

The CI-sized run of the harness in ``cluster/`` (``make cluster-demo`` runs the
full one and docs/reliability.md has its numbers). Per store (PostgreSQL, then
Redis, each in a namespace of its own) a module-scoped :class:`Cluster` starts
a TCP relay to the store, three uvicorn instances of
``examples/08_cluster_server.py`` and nginx round-robining over them; every
client is the official SDK client talking to nginx only. Each test runs one
scenario of :mod:`cluster.scenarios`, whose ``problems`` list each failed check.

nginx is installed with apt-get when missing; where it cannot be, the tests are
skipped with the reason (failed when MCP_SESSION_MW_REQUIRE_SERVICES is set).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster.harness import Cluster
from cluster.nginx import NginxUnavailableError
from cluster.report import summary
from cluster.scenarios import CI, Counts, crash, rolling_restart, round_robin, store_outage
from cluster.stores import store_spec

from ..services import POSTGRES_URL, REDIS_URL, need_service, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

URLS = {"postgresql": POSTGRES_URL, "redis": REDIS_URL}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    name: str = request.param
    need_service(name)
    try:
        built = Cluster(store_spec(name, URLS[name]), say=print)
    except NginxUnavailableError as exc:
        unavailable(str(exc))
    with built:
        yield built


@pytest.fixture
async def healthy(cluster: Cluster) -> Cluster:
    """The cluster with every instance up (a failed test may have left one down)."""
    await cluster.ensure_all_running()
    return cluster


def passed(counts: Counts) -> bool:
    print(summary([counts]))
    return counts.problem_count == 0


async def test_round_robin_sessions_count_exactly_on_every_instance(healthy: Cluster) -> None:
    counts = await round_robin(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert counts.sessions == CI.round_robin_sessions
    assert counts.tool_calls == CI.round_robin_sessions * CI.calls_per_session
    assert not counts.failed_calls
    assert not counts.http, "no 404 and no 5xx"


async def test_sigkilled_producer_resume_elsewhere_replays_then_gets_the_orphan_error(
    healthy: Cluster,
) -> None:
    counts = await crash(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert (counts.streams, counts.lost, counts.duplicated) == (1, 0, 0)
    assert CI.crash_kill_at <= counts.events <= CI.crash_hold_at


async def test_rolling_restart_loses_no_event_of_a_surviving_producer(healthy: Cluster) -> None:
    counts = await rolling_restart(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert counts.sessions == CI.rolling_sessions
    assert counts.streams > 0
    assert (counts.lost, counts.duplicated, counts.server_errors()) == (0, 0, 0)


async def test_store_outage_answers_503_and_recovers_on_its_own(healthy: Cluster) -> None:
    counts = await store_outage(healthy, CI, print)
    assert passed(counts), summary([counts])
    assert counts.http, "the outage was not seen"
    assert all(cause.startswith("503 ") for cause in counts.http), counts.http
