"""StateHandles on every backend: random, hashed, principal-bound, compare-and-swap."""

from __future__ import annotations

import anyio
import pytest

from mcp_session_mw.errors import ConfigurationError, ConflictError
from mcp_session_mw.modern import HandleNotFoundError, StateHandles
from mcp_session_mw.modern.handles import MSG_HANDLE_NOT_FOUND
from mcp_session_mw.stores import Store

from ..conftest import StoreFactory

pytestmark = pytest.mark.anyio


async def test_a_handle_is_seen_on_another_connection(store_factory: StoreFactory) -> None:
    mine, theirs = StateHandles(await store_factory()), StateHandles(await store_factory())
    handle = await mine.mint({"cart": [1, 2]}, principal="alice", ttl=60)
    assert len(handle) == 43  # 256 bits, base64url
    held = await theirs.load(handle, principal="alice")
    assert (held.state, held.version) == ({"cart": [1, 2]}, 1)


async def test_another_principal_gets_the_missing_handle_error(store: Store) -> None:
    handles = StateHandles(store)
    handle = await handles.mint({"n": 1}, principal="alice", ttl=60)
    errors = []
    for attempt in (
        handles.load(handle, principal="mallory"),
        handles.load("A" * 43, principal="alice"),
        handles.load("not a handle", principal="alice"),
        handles.update(handle, {"n": 9}, principal="mallory", version=1),
    ):
        with pytest.raises(HandleNotFoundError) as caught:
            await attempt
        errors.append(str(caught.value))
    assert errors == [MSG_HANDLE_NOT_FOUND] * 4
    assert await handles.delete(handle, principal="mallory") is False
    assert (await handles.load(handle, principal="alice")).state == {"n": 1}


async def test_update_is_compare_and_swap(store_factory: StoreFactory) -> None:
    one, two = StateHandles(await store_factory()), StateHandles(await store_factory())
    handle = await one.mint({"n": 0}, principal="p", ttl=60)
    seen = await one.load(handle, principal="p")
    won = await two.update(handle, {"n": 1}, principal="p", version=seen.version)
    assert won.version == 2
    with pytest.raises(ConflictError):
        await one.update(handle, {"n": 2}, principal="p", version=seen.version)
    assert (await one.load(handle, principal="p")).state == {"n": 1}


async def test_delete_and_expiry(store: Store) -> None:
    handles = StateHandles(store)
    gone = await handles.mint({}, principal="p", ttl=60)
    assert await handles.delete(gone, principal="p") is True
    with pytest.raises(HandleNotFoundError):
        await handles.load(gone, principal="p")
    old = await handles.mint({}, principal="p", ttl=0.3)
    await anyio.sleep(0.6)  # past the ttl however loaded the machine is
    with pytest.raises(HandleNotFoundError):
        await handles.load(old, principal="p")


async def test_neither_handle_nor_principal_is_stored(store: Store) -> None:
    handles = StateHandles(store)
    handle = await handles.mint({"k": "v"}, principal="principal-xyz", ttl=60)
    records = (await store.list_active(limit=1000)).records
    assert records
    for record in records:
        assert handle not in repr(record)
        assert "principal-xyz" not in repr(record)


@pytest.mark.parametrize("principal", ["", None])
async def test_a_missing_principal_is_refused(store: Store, principal: str) -> None:
    with pytest.raises(ConfigurationError):
        await StateHandles(store).mint({}, principal=principal, ttl=1)
