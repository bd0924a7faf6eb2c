"""The read-only dashboard: refused without a guard, guarded, escaped, sealed payloads hidden."""

from __future__ import annotations

import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from mcp_session_mw import ConfigurationError, SessionMiddleware, SessionRecord, StreamState
from mcp_session_mw.dashboard import MSG_NO_GUARD, dashboard_app
from mcp_session_mw.dashboard.pages import ENCRYPTED
from mcp_session_mw.stores import MemoryStore, Store

from .backends import ENCRYPTION_KEYS, Backend

pytestmark = pytest.mark.anyio

HOSTILE = '<script>alert("x")</script>'


def record(name: str = "dash-client", principal: str | None = "alice") -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version="2025-11-25",
        client_info={"name": name, "version": "2.0"},
        principal=principal,
        created_at=now - 90,
        last_accessed=now,
        expires_at=now + 3600,
        ttl=3600,
        state={"calls": 4},
    )


async def seed(store: Store) -> list[str]:
    keys = []
    for n in range(3):
        made = await store.create(f"dash-{n}", record())
        keys.append(made.key)
    await store.write_stream(
        "dash-0",
        "r1",
        [("", None), ('{"jsonrpc":"2.0","id":1,"result":{"ok":true}}', "message")],
        open_as=StreamState("r1", request_id=1, owner="inst-a", lease_expires=time.time() + 30),
        finish=True,
    )
    return keys


async def _never(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
    raise AssertionError("the dashboard never calls the MCP app")


def always(request: Request) -> bool:
    return True


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_no_guard_no_dashboard() -> None:
    with pytest.raises(ConfigurationError) as refused:
        dashboard_app(MemoryStore(), guard=None)
    assert str(refused.value) == MSG_NO_GUARD


async def test_the_guard_decides_sync_or_async() -> None:
    store = MemoryStore()
    await seed(store)

    async def by_header(request: Request) -> bool:
        return request.headers.get("x-operator") == "yes"

    for guard in (by_header, lambda request: request.headers.get("x-operator") == "yes"):
        async with client_for(dashboard_app(store, guard=guard)) as client:
            assert (await client.get("/")).status_code == 403
            assert (await client.get("/", headers={"x-operator": "no"})).status_code == 403
            ok = await client.get("/", headers={"x-operator": "yes"})
            assert ok.status_code == 200
    # A guard returning something merely truthy is not a yes.
    async with client_for(dashboard_app(store, guard=lambda request: "yes")) as client:  # type: ignore[arg-type,return-value]
        assert (await client.get("/")).status_code == 403


async def test_overview_lists_sessions_with_their_streams_and_counts(
    store: Store, backend: Backend
) -> None:
    keys = await seed(store)
    async with client_for(dashboard_app(store, guard=always)) as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["cache-control"] == "no-store"
    for key in keys:
        assert key in page.text
    shown = ENCRYPTED if backend.name == "encrypted" else "dash-client 2.0"
    assert f"<td>{shown}</td>" in page.text
    assert "<b id=live>3</b>" in page.text
    assert "<td>1</td><td>2</td></tr>" in page.text  # dash-0: one stream, two events
    assert "dash-0" not in page.text  # raw ids are never shown


async def test_session_page_shows_streams_and_recent_events(store: Store, backend: Backend) -> None:
    keys = await seed(store)
    async with client_for(dashboard_app(store, guard=always, recent_events=1)) as client:
        page = await client.get(f"/session/{keys[0]}")
        assert (await client.get("/session/" + "0" * 64)).status_code == 404
        assert (await client.get("/session/not-a-key")).status_code == 404
        assert (await client.post(f"/session/{keys[0]}")).status_code == 405
    assert page.status_code == 200
    assert "inst-a" in page.text
    assert "<td>1</td><td>-</td>" not in page.text  # only the most recent one
    if backend.name == "encrypted":
        assert "result" not in page.text
        assert "calls" not in page.text
    else:
        assert "&quot;result&quot;" in page.text  # the newest event, escaped
        assert "&quot;calls&quot;: 4" in page.text


async def test_everything_from_the_store_is_escaped() -> None:
    store = MemoryStore()
    made = await store.create("evil", record(name=HOSTILE, principal=HOSTILE))
    await store.write_stream(
        "evil",
        HOSTILE.replace(" ", ""),
        [(HOSTILE, HOSTILE)],
        open_as=StreamState(HOSTILE.replace(" ", "")),
    )
    async with client_for(dashboard_app(store, guard=always)) as client:
        pages = [(await client.get("/")).text, (await client.get(f"/session/{made.key}")).text]
    for text in pages:
        assert "<script>" not in text
        assert "&lt;script&gt;" in text


async def test_encrypted_payloads_are_never_shown() -> None:
    from mcp_session_mw.encryption import EncryptedStore

    backend = MemoryStore()
    middleware = SessionMiddleware(_never, store=EncryptedStore(backend, ENCRYPTION_KEYS))
    sealed = middleware.store
    made = await sealed.create("secret", record(name="confidential-client"))
    await sealed.write_stream(
        "secret", "r", [("top secret data", "message")], open_as=StreamState("r")
    )
    async with client_for(dashboard_app(middleware, guard=always)) as client:
        overview = (await client.get("/")).text
        detail = (await client.get(f"/session/{made.key}")).text
    assert made.key in overview
    for text in (overview, detail):
        assert "confidential-client" not in text
        assert "top secret data" not in text
        assert "alice" not in text
        assert ENCRYPTED in text


async def test_a_store_that_is_down_answers_503_with_the_reason() -> None:
    from mcp_session_mw import create_store

    unreachable = create_store("redis://127.0.0.1:1/0")
    async with client_for(dashboard_app(unreachable, guard=always)) as client:
        page = await client.get("/")
    await unreachable.close()
    assert page.status_code == 503
    assert "cannot be reached" in page.text


async def test_mounted_under_a_path_links_stay_inside_it() -> None:
    store = MemoryStore()
    keys = await seed(store)
    parent = Starlette(routes=[Mount("/admin/sessions", app=dashboard_app(store, guard=always))])
    async with client_for(parent) as client:
        page = await client.get("/admin/sessions/")
        detail = await client.get(f"/admin/sessions/session/{keys[0]}")
    assert f'href="session/{keys[0]}"' in page.text
    assert detail.status_code == 200
