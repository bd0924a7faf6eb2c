"""Where the real services of this machine are, and how a test finds out it can't reach one.

Without ``MCP_SESSION_MW_REQUIRE_SERVICES`` a test that needs a service that is
down is skipped with a one-line reason naming the service; with it (CI) the test
fails instead.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get(
    "MCP_SESSION_MW_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "MCP_SESSION_MW_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"
)
REDIS_URL = os.environ.get("MCP_SESSION_MW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

SERVICES: dict[str, tuple[str, int]] = {
    "postgresql": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
    "redis": ("127.0.0.1", 6379),
}


def services_required() -> bool:
    return os.environ.get("MCP_SESSION_MW_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need_service(name: str) -> None:
    """Skip (or, when services are required, fail) unless ``name`` answers on its port."""
    host, port = SERVICES[name]
    if reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(f"{reason} and MCP_SESSION_MW_REQUIRE_SERVICES is set")
    pytest.skip(reason)


def unavailable(reason: str) -> None:
    """Skip with ``reason`` — or fail when services are required."""
    if services_required():
        pytest.fail(f"{reason} and MCP_SESSION_MW_REQUIRE_SERVICES is set")
    pytest.skip(reason)
