"""``mcp-session-mw proxy``: flags, settings, refusals, and a real uvicorn run."""

from __future__ import annotations

import os

import httpx
import pytest

from mcp_session_mw.cli import EXIT_USAGE, build_parser
from mcp_session_mw.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST
from mcp_session_mw.proxy.errors import MSG_UNREACHABLE
from mcp_session_mw.proxy_cli import (
    HEADERS_ENV,
    MSG_NO_UPSTREAM,
    MSG_NOT_FOUND,
    STORE_OPTIONS_ENV,
    TIMEOUT_ENV,
    UPSTREAM_ENV,
    environment,
    middleware_options,
)
from mcp_session_mw.settings import ENV_PREFIX, SessionSettings

from .e2e.server import free_port, run_server
from .test_cli import run_cli

PROXY = ["-m", "mcp_session_mw.cli", "proxy"]


def test_every_middleware_setting_has_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    argv = ["proxy", "--upstream", "http://127.0.0.1:1/mcp", "--store", "memory://"]
    argv += ["--store-option", "secret=abc", "--path", "/rpc"]
    for name, _ in middleware_options():
        if name not in ("store", "store_options", "path"):
            argv += ["--" + name.replace("_", "-"), "7"]
    env = environment(build_parser().parse_args(argv))
    wanted = {ENV_PREFIX + field.upper() for field in SessionSettings.model_fields}
    assert wanted <= env.keys(), wanted - env.keys()
    assert env[UPSTREAM_ENV] == "http://127.0.0.1:1/mcp"
    assert env[STORE_OPTIONS_ENV] == '{"secret": "abc"}'
    assert env[ENV_PREFIX + "TTL"] == "7"


def test_flags_merge_over_json_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEADERS_ENV, '{"x-a": "1", "x-b": "2"}')
    monkeypatch.setenv(STORE_OPTIONS_ENV, '{"table_prefix": "p_"}')
    argv = ["proxy", "--upstream-header", "x-b=3", "--store-option", "cache_size=5"]
    argv += ["--upstream-timeout", "2.5"]
    env = environment(build_parser().parse_args(argv))
    assert env[HEADERS_ENV] == '{"x-a": "1", "x-b": "3"}'
    assert env[STORE_OPTIONS_ENV] == '{"table_prefix": "p_", "cache_size": 5}'
    assert env[TIMEOUT_ENV] == "2.5"


def test_no_upstream_is_a_usage_error() -> None:
    result = run_cli("proxy", "--store", "memory://")
    assert result.code == EXIT_USAGE
    assert MSG_NO_UPSTREAM in result.err


def test_a_bad_setting_is_refused_before_serving() -> None:
    result = run_cli("proxy", "--upstream", "http://127.0.0.1:1/mcp", "--ttl", "soon")
    assert result.code == EXIT_USAGE
    assert "MCP_SESSION_TTL" in result.err


def test_a_bad_upstream_url_is_refused() -> None:
    result = run_cli("proxy", "--upstream", "ftp://127.0.0.1/mcp")
    assert result.code == EXIT_USAGE
    assert "http:// or https://" in result.err


@pytest.mark.e2e
@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_proxy_serves_its_path_on_uvicorn(workers: str) -> None:
    """Two workers as one: built from the same settings; a down upstream is 502, elsewhere 404."""
    down = f"http://127.0.0.1:{free_port()}/mcp"
    args = [*PROXY, "--upstream", down, "--store", "memory://", "--path", "/rpc"]
    with run_server([*args, "--workers", workers, "--log-level", "warning"]) as base:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        accept = {"accept": "application/json, text/event-stream"}
        answer = httpx.post(f"{base}/rpc", json=init, headers=accept, timeout=30)
        assert answer.status_code == 502, answer.text
        assert answer.json()["error"] == {"code": INTERNAL_ERROR, "message": MSG_UNREACHABLE}
        elsewhere = httpx.post(f"{base}/mcp", json=init, headers=accept, timeout=30)
        assert elsewhere.status_code == 404
        message = MSG_NOT_FOUND.format(path="/rpc")
        assert elsewhere.json()["error"] == {"code": INVALID_REQUEST, "message": message}
