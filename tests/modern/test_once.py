"""SingleUseGuard on every backend: a token is taken once, on any connection."""

from __future__ import annotations

import secrets

import anyio
import pytest

from mcp_session_mw.errors import ConfigurationError
from mcp_session_mw.modern import SingleUseGuard
from mcp_session_mw.stores import Store

from ..conftest import StoreFactory

pytestmark = pytest.mark.anyio


async def test_a_token_is_taken_once_across_connections(store_factory: StoreFactory) -> None:
    first, second = SingleUseGuard(await store_factory()), SingleUseGuard(await store_factory())
    token = secrets.token_urlsafe(16)
    assert await first(token, 60) is True
    assert await second(token, 60) is False
    assert await first(token, 60) is False
    assert await second(secrets.token_urlsafe(16), 60) is True


async def test_racing_replicas_take_a_token_exactly_once(store_factory: StoreFactory) -> None:
    guards = [SingleUseGuard(await store_factory()) for _ in range(2)]
    token = secrets.token_urlsafe(16)
    results: list[bool] = []

    async def take(guard: SingleUseGuard) -> None:
        results.append(await guard(token, 60))

    async with anyio.create_task_group() as tg:
        for index in range(8):
            tg.start_soon(take, guards[index % 2])
    assert sorted(results) == [False] * 7 + [True]


async def test_a_token_is_free_again_after_its_ttl(store: Store) -> None:
    guard = SingleUseGuard(store)
    assert await guard("short", 0.3) is True
    assert await guard("long", 60) is True
    await anyio.sleep(0.6)  # past the short ttl however loaded the machine is
    assert await guard("short", 60) is True
    assert await guard("long", 60) is False


async def test_the_token_is_not_stored(store: Store) -> None:
    guard = SingleUseGuard(store)
    token = "never-stored-" + secrets.token_hex(8)
    await guard(token, 60)
    page = await store.list_active(limit=1000)
    assert page.records
    assert all(token not in repr(record) for record in page.records)


@pytest.mark.parametrize(("token", "ttl"), [("", 1), ("x" * 4097, 1), ("t", 0), ("t", True)])
async def test_bad_arguments_are_refused(store: Store, token: str, ttl: float) -> None:
    with pytest.raises(ConfigurationError):
        await SingleUseGuard(store)(token, ttl)
