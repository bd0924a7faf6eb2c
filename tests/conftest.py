from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from mcp_session_mw.stores import Store

from .backends import BACKENDS, Backend

StoreFactory = Callable[[], Awaitable[Store]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    params=[pytest.param(b, id=b.name, marks=getattr(pytest.mark, b.name)) for b in BACKENDS]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    spec: Backend = request.param
    spec.check_available()
    return spec


@pytest.fixture
async def store_factory(backend: Backend, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Builds stores on one fresh namespace; each call is a separate connection."""
    namespace = uuid.uuid4().hex[:10]
    made: list[Store] = []

    async def make() -> Store:
        store = await backend.build(namespace, tmp_path)
        if not any(s is store for s in made):
            made.append(store)
        return store

    yield make
    if made:
        await backend.destroy(made[0])
        for extra in made[1:]:
            await extra.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()
