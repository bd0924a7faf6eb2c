"""Listing a session's streams on the SQL and Redis stores (:meth:`Store._list_streams`).

Kept beside the two backends rather than in them while their modules are
reorganised; each function belongs in its backend class as ``_list_streams``,
and a backend with its own (memory, the wrappers) never comes here. Both find
the stream ids where the backend already keeps them (the SQL streams table,
Redis's per-session set) and read each state with the backend's own
``_load_stream``, so the states are parsed in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ..records import StreamState

if TYPE_CHECKING:
    from .base import Store
    from .redis import RedisStore
    from .sql import SQLStore

MSG_CANNOT_LIST = "{store} cannot list a session's streams: it needs its own _list_streams"


async def list_streams(store: Store, key: str) -> list[StreamState]:
    # Told apart by what they have rather than by class, so that this module
    # imports neither backend (they import the base class, which imports this).
    if hasattr(store, "engine") and hasattr(store, "table_prefix"):
        ids = await _sql_stream_ids(cast("SQLStore", store), key)
    elif hasattr(store, "client") and hasattr(store, "_base"):
        ids = await _redis_stream_ids(cast("RedisStore", store), key)
    else:
        raise NotImplementedError(MSG_CANNOT_LIST.format(store=type(store).__name__))
    states = [await store._load_stream(key, stream_id) for stream_id in sorted(ids)]
    return [state for state in states if state is not None]


async def _sql_stream_ids(store: SQLStore, key: str) -> list[str]:
    import sqlalchemy as sa

    streams = sa.table(
        f"{store.table_prefix}streams", sa.column("session_key"), sa.column("stream_id")
    )
    query = sa.select(streams.c.stream_id).where(streams.c.session_key == key)
    await store.open()
    try:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    except Exception as exc:
        raise store._translate(exc) from exc
    return [str(row[0]) for row in rows]


async def _redis_stream_ids(store: RedisStore, key: str) -> list[str]:
    with store._guard:
        members = await store.client.smembers(f"{store._base(key)}:streams")
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]
