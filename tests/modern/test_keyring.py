"""The request-state key ring on every backend: shared, rotated without downtime, cached."""

from __future__ import annotations

import pytest
from mcp.server.request_state import InvalidRequestState, RequestStateSecurity

from mcp_session_mw.errors import ConfigurationError
from mcp_session_mw.modern import KeyRingEmptyError, KeyRingError, StoreKeyRing
from mcp_session_mw.modern.keyring import (
    PRIMARY,
    RETIRING,
    STAGED,
    generate_key,
    list_keys,
    retire_key,
    rotate_keys,
)
from mcp_session_mw.stores import Store

from ..conftest import StoreFactory

pytestmark = pytest.mark.anyio


async def test_generate_list_rotate_retire(store: Store) -> None:
    assert await list_keys(store) == []
    first = await generate_key(store)
    assert first.role == PRIMARY
    second = await generate_key(store)
    assert second.role == STAGED
    promoted = await rotate_keys(store)
    assert promoted.key_id == second.key_id
    roles = {info.key_id: info.role for info in await list_keys(store)}
    assert roles == {first.key_id: RETIRING, second.key_id: PRIMARY}
    with pytest.raises(KeyRingError):
        await retire_key(store, second.key_id)  # the primary
    with pytest.raises(KeyRingError):
        await retire_key(store, "nope")
    with pytest.raises(KeyRingError):
        await rotate_keys(store)  # nothing staged
    await retire_key(store, first.key_id)
    assert [info.key_id for info in await list_keys(store)] == [second.key_id]


async def test_an_empty_ring_seals_nothing(store: Store) -> None:
    ring = StoreKeyRing(store)
    await ring.refresh()
    with pytest.raises(KeyRingEmptyError):
        ring.codec.seal(b"x")
    with pytest.raises(InvalidRequestState):
        ring.codec.unseal("v1.AAAA")


async def test_rotation_without_downtime_across_replicas(store_factory: StoreFactory) -> None:
    admin = await store_factory()
    one, two = StoreKeyRing(await store_factory()), StoreKeyRing(await store_factory())
    old = await generate_key(admin)
    await one.refresh()
    await two.refresh()
    sealed_old = one.codec.seal(b"before")
    assert two.codec.unseal(sealed_old) == b"before"

    # Phase 1: a staged key reaches every replica; the old key still seals.
    await generate_key(admin)
    await one.refresh()
    await two.refresh()
    # Phase 2: rotate; replica one has read it, replica two not yet.
    await rotate_keys(admin)
    await one.refresh()
    sealed_new = one.codec.seal(b"after")
    assert two.codec.unseal(sealed_new) == b"after"  # staged keys unseal
    assert one.codec.unseal(sealed_old) == b"before"  # retiring keys unseal
    sealed_by_lagging = two.codec.seal(b"lagging")
    assert one.codec.unseal(sealed_by_lagging) == b"lagging"
    # Phase 3: retire the old key: what it sealed no longer opens anywhere.
    await retire_key(admin, old.key_id)
    await one.refresh()
    await two.refresh()
    for ring in (one, two):
        with pytest.raises(InvalidRequestState):
            ring.codec.unseal(sealed_old)
        assert ring.codec.unseal(sealed_new) == b"after"


async def test_the_ring_feeds_the_sdks_security_policy(store: Store) -> None:
    await generate_key(store)
    async with StoreKeyRing(store, refresh_interval=0.05) as ring:
        security = ring.security(ttl=30)
        assert isinstance(security, RequestStateSecurity)
        assert security.codec is ring.codec
        assert security.codec.unseal(security.codec.seal(b"p")) == b"p"


async def test_a_failed_refresh_keeps_the_cached_keys(store_factory: StoreFactory) -> None:
    admin = await store_factory()
    await generate_key(admin)
    replica_store = await store_factory()
    ring = StoreKeyRing(replica_store)
    await ring.refresh()
    token = ring.codec.seal(b"kept")

    async def down(_session_id: str) -> None:
        raise RuntimeError("store down")

    replica_store.load = down  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await ring.refresh()
    assert ring.codec.unseal(token) == b"kept"


@pytest.mark.parametrize("interval", [0, -1, float("inf"), True])
def test_a_bad_refresh_interval_is_refused(interval: float) -> None:
    from mcp_session_mw.stores import MemoryStore

    with pytest.raises(ConfigurationError):
        StoreKeyRing(MemoryStore(), refresh_interval=interval)
