"""The Grafana dashboard in docs/grafana queries only metrics the library exports.

Every PromQL expression of the board is parsed for the metric names it reads,
and those are compared with a real scrape of ``metrics_app()`` after a
middleware served a session, a tool call and a refused request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_session_mw import SessionMiddleware
from mcp_session_mw.metrics import metrics_app

from .asgi_lifespan import ACCEPT, BASE_URL
from .test_metrics import build_app, client_for

pytestmark = pytest.mark.anyio

BOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "mcp-session-mw.json"
KEYWORDS = {"and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)")
_NUMBER = re.compile(r"\b\d[\w.]*")
"""Numbers and durations (0.99, 5m)."""
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (function names and labels left out)."""
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING, _NUMBER):
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _NAME.finditer(expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue  # a function, or an operator keyword
        names.add(match.group())
    return names


def board_queries() -> tuple[list[str], list[str]]:
    """The board's panel expressions, and the metrics its template variables query."""
    board: dict[str, Any] = json.loads(BOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    variables = []
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else ""
        variables += _LABEL_VALUES.findall(text)
    return exprs, variables


def test_the_parser_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, operation) (rate(a_bucket{job=~"$job",x="y(z)"}'
        "[$__rate_interval]))) / on (job) b_total offset 5m + c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


async def test_every_metric_the_board_queries_is_exported() -> None:
    app = build_app()
    async with client_for(SessionMiddleware(app, store="memory://"), app) as client:
        await client.initialize()
        await client.call_tool("steps")
        headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-session-id": "x"}
        body = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
        refused = await client.client.post(client.url, headers=headers, content=body)
        assert refused.status_code == 404
        endpoint = httpx.ASGITransport(app=metrics_app())
        async with httpx.AsyncClient(transport=endpoint, base_url=BASE_URL) as scraper:
            page = await scraper.get("/metrics")
    assert page.status_code == 200
    exported = {
        sample.name
        for family in text_string_to_metric_families(page.text)
        for sample in family.samples
    }
    exprs, variables = board_queries()
    queried = set(variables).union(*map(metric_names, exprs))
    assert queried - exported == set()
    # The board covers every family the library exports.
    ours = {name for name in exported if name.startswith("mcp_session_")}
    families = {re.sub(r"_(total|created|bucket|count|sum)$", "", name) for name in ours}
    covered = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in queried}
    assert families - covered == set()
