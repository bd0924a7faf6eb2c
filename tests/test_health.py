"""Liveness and readiness probes: on mount_mcp, as routes of any app, over every store."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from mcp_session_mw import ConfigurationError, MemoryStore, SessionMiddleware, mount_mcp
from mcp_session_mw.errors import StoreError
from mcp_session_mw.health import (
    REASON_FAILED,
    REASON_TIMEOUT,
    REASON_UNAVAILABLE,
    ReadinessProbe,
    health_routes,
)
from mcp_session_mw.records import SessionRecord
from mcp_session_mw.stores import Store, create_store

from .asgi_lifespan import lifespan

pytestmark = pytest.mark.anyio


async def _echo(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    raise AssertionError("the probes never reach the MCP app")


class StalledStore(MemoryStore):
    """A store whose reads never come back: a server that accepts and then says nothing."""

    async def _get(self, key: str, now: float) -> SessionRecord | None:
        import anyio

        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class FailingStore(MemoryStore):
    async def _get(self, key: str, now: float) -> SessionRecord | None:
        raise StoreError("the table is gone")


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_mount_mcp_serves_both_probes_on_the_parent() -> None:
    parent = Starlette()
    mount_mcp(parent, "/mcp", _echo, store=MemoryStore())
    async with lifespan(parent), _client(parent) as client:
        live = await client.get("/livez")
        ready = await client.get("/readyz")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert isinstance(ready.json()["store_latency_ms"], float)
    assert ready.headers["cache-control"] == "no-store"


async def test_mount_mcp_paths_are_configurable_and_can_be_left_out() -> None:
    parent = Starlette()
    mount_mcp(parent, "/mcp", _echo, store=MemoryStore(), live_path=None, ready_path="/ok")
    async with lifespan(parent), _client(parent) as client:
        assert (await client.get("/livez")).status_code == 404
        assert (await client.get("/readyz")).status_code == 404
        assert (await client.get("/ok")).status_code == 200
        assert (await client.post("/ok")).status_code == 405


async def test_a_stalled_store_is_not_ready_within_the_timeout_but_still_alive() -> None:
    app = Starlette(routes=health_routes(StalledStore(), timeout=0.2))
    async with _client(app) as client:
        ready = await client.get("/readyz")
        live = await client.get("/livez")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "reason": REASON_TIMEOUT.format(timeout=0.2)}
    assert live.status_code == 200


async def test_a_store_error_is_not_ready() -> None:
    app = Starlette(routes=health_routes(FailingStore()))
    async with _client(app) as client:
        ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["reason"]) == (503, REASON_FAILED)


async def test_an_unreachable_store_is_not_ready_and_says_so_without_its_address() -> None:
    # Nothing listens on port 1 of loopback: the connection is refused at once.
    middleware = SessionMiddleware(_echo, store=create_store("redis://127.0.0.1:1/0"))
    app = Starlette(routes=health_routes(middleware, timeout=5))
    async with _client(app) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"] == REASON_UNAVAILABLE
    assert "127.0.0.1" not in ready.text
    await middleware.close_store()


async def test_the_probe_opens_the_middlewares_store_when_it_was_not_yet() -> None:
    store = MemoryStore()
    middleware = SessionMiddleware(_echo, store=store)
    probe = ReadinessProbe(middleware)
    assert (await probe.check()).ready
    assert middleware.lifespan.store_open


@pytest.mark.parametrize("path", ["livez", ""])
def test_a_probe_path_must_be_absolute(path: str) -> None:
    with pytest.raises(ConfigurationError):
        health_routes(MemoryStore(), live_path=path)


@pytest.mark.parametrize("timeout", [0, -1, True, "2"])
def test_the_timeout_must_be_positive(timeout: object) -> None:
    with pytest.raises(ConfigurationError):
        ReadinessProbe(MemoryStore(), timeout=timeout)  # type: ignore[arg-type]


async def test_ready_on_every_backend(store: Store) -> None:
    app = Starlette(routes=health_routes(store))
    async with _client(app) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


async def test_a_cache_in_front_does_not_hide_a_backend_that_is_down() -> None:
    from mcp_session_mw.stores.caching import CachingStore

    cached = CachingStore(MemoryStore(), create_store("redis://127.0.0.1:1/0"))
    probe = ReadinessProbe(cached, timeout=5)
    result = await probe.check()
    await cached.close()
    assert (result.ready, result.reason) == (False, REASON_UNAVAILABLE)
