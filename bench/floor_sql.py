"""The floor's SQL backends: one session check and one committed insert per event, bare drivers.

Each does the two guarantees of ``bench/floor_app.py`` the cheapest way its
driver allows, with nothing around them (no retries, no pool but a list of
idle connections, no error handling):

- PostgreSQL (asyncpg): one prepared ``SELECT`` to check the session, one
  prepared ``INSERT`` per event, each a single autocommitted statement;
- SQLite (aiosqlite): one connection in autocommit mode, WAL and
  ``synchronous=NORMAL`` as the store sets them; one thread hop per statement;
- MariaDB (asyncmy): autocommitted text statements (the driver has no
  prepared ones).

The tables are ``<prefix>sessions`` and ``<prefix>events``; :func:`drop_floor_tables`
removes them after a run.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any
from urllib.parse import urlsplit

_SESSIONS = "CREATE TABLE IF NOT EXISTS {p}sessions (id VARCHAR(64) PRIMARY KEY, app_id TEXT)"
_EVENTS = (
    "CREATE TABLE IF NOT EXISTS {p}events (stream VARCHAR(64) NOT NULL, seq BIGINT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (stream, seq))"
)


class _Pooled:
    """Idle connections reused by whoever asks next; tables created on first use."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.idle: list[Any] = []
        self.ready = False
        self.lock = asyncio.Lock()

    async def connect(self) -> Any:
        raise NotImplementedError

    async def run(self, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    async def take(self) -> Any:
        if not self.ready:
            async with self.lock:
                if not self.ready:
                    conn = await self.connect()
                    await self.setup(conn)
                    self.idle.append(conn)
                    self.ready = True
        return self.idle.pop() if self.idle else await self.connect()

    async def setup(self, conn: Any) -> None:
        for ddl in (_SESSIONS, _EVENTS):
            await self.execute(conn, ddl.format(p=self.prefix), ())

    async def execute(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        for conn in dict.fromkeys(self.idle):  # SQLite lists its one connection many times
            closed = conn.close()
            if inspect.isawaitable(closed):
                await closed
        self.idle.clear()

    async def call(self, sql: str, *args: Any) -> Any:
        conn = await self.take()
        try:
            return await self.execute(conn, sql, args)
        finally:
            self.idle.append(conn)


class PostgresFloor(_Pooled):
    async def connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(self.url.replace("+asyncpg", ""))

    async def execute(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Any:
        return await conn.fetchval(sql, *args)

    async def check(self, session_id: str) -> None:
        await self.call(f"SELECT app_id FROM {self.prefix}sessions WHERE id = $1", session_id)

    async def add(self, session_id: str, app_id: bytes) -> None:
        await self.call(
            f"INSERT INTO {self.prefix}sessions (id, app_id) VALUES ($1, $2)",
            session_id,
            app_id.decode(),
        )

    async def store(self, stream: bytes, seq: int, data: bytes) -> None:
        await self.call(
            f"INSERT INTO {self.prefix}events (stream, seq, data) VALUES ($1, $2, $3)",
            stream.decode(),
            seq,
            data.decode(),
        )


class SQLiteFloor(_Pooled):
    """One connection: SQLite has one writer at a time, and aiosqlite one thread per connection."""

    async def connect(self) -> Any:
        import aiosqlite

        path = urlsplit(self.url).path[1:]  # sqlite+aiosqlite:///abs -> /abs
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def take(self) -> Any:
        conn = await super().take()
        self.idle.append(conn)  # kept: aiosqlite queues the calls on its thread
        return conn

    async def call(self, sql: str, *args: Any) -> Any:
        return await self.execute(await self.take(), sql, args)

    async def execute(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Any:
        return await conn.execute_fetchall(sql, args)

    async def check(self, session_id: str) -> None:
        await self.call(f"SELECT app_id FROM {self.prefix}sessions WHERE id = ?", session_id)

    async def add(self, session_id: str, app_id: bytes) -> None:
        await self.call(
            f"INSERT INTO {self.prefix}sessions (id, app_id) VALUES (?, ?)",
            session_id,
            app_id.decode(),
        )

    async def store(self, stream: bytes, seq: int, data: bytes) -> None:
        await self.call(
            f"INSERT INTO {self.prefix}events (stream, seq, data) VALUES (?, ?, ?)",
            stream.decode(),
            seq,
            data.decode(),
        )


class MariaDBFloor(_Pooled):
    async def connect(self) -> Any:
        import asyncmy

        parts = urlsplit(self.url)
        return await asyncmy.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.path.lstrip("/") or "test",
            autocommit=True,
        )

    async def execute(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Any:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return await cursor.fetchone()

    async def check(self, session_id: str) -> None:
        await self.call(f"SELECT app_id FROM {self.prefix}sessions WHERE id = %s", session_id)

    async def add(self, session_id: str, app_id: bytes) -> None:
        await self.call(
            f"INSERT INTO {self.prefix}sessions (id, app_id) VALUES (%s, %s)",
            session_id,
            app_id.decode(),
        )

    async def store(self, stream: bytes, seq: int, data: bytes) -> None:
        await self.call(
            f"INSERT INTO {self.prefix}events (stream, seq, data) VALUES (%s, %s, %s)",
            stream.decode(),
            seq,
            data.decode(),
        )


FLOORS = {"postgresql": PostgresFloor, "sqlite": SQLiteFloor, "mariadb": MariaDBFloor}


def sql_floor(url: str, prefix: str) -> PostgresFloor | SQLiteFloor | MariaDBFloor:
    """The floor backend for a SQL ``url`` (schemes as the store takes them)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    scheme = {"postgres": "postgresql", "mysql": "mariadb"}.get(scheme, scheme)
    return FLOORS[scheme](url, prefix)


def drop_floor_tables(url: str, prefix: str) -> None:
    """Drop the tables a floor run made under ``prefix``."""

    async def drop() -> None:
        floor = sql_floor(url, prefix)
        conn = await floor.connect()
        try:
            for table in ("sessions", "events"):
                await floor.execute(conn, f"DROP TABLE IF EXISTS {prefix}{table}", ())
        finally:
            closed = conn.close()
            if inspect.isawaitable(closed):
                await closed

    asyncio.run(drop())
