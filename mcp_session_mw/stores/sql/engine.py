"""Database URLs and the engines built from them: drivers, extras, pool and connect hooks."""

from __future__ import annotations

import asyncio
import importlib
import random
import re
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, MissingExtraError

IMPORT_ERROR: ImportError | None = None
"""Why SQLAlchemy could not be imported; :func:`parse_url` names the extra to install."""
try:
    import sqlalchemy as sa
    from sqlalchemy import event as sa_event
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.util import await_only
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    IMPORT_ERROR = _exc

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine

DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 5
DEFAULT_TIMEOUT = 10.0
"""Seconds one wait on the database may last before the call raises StoreUnavailableError:
a pool checkout, a connect, one statement (PostgreSQL, MySQL/MariaDB)."""
DEFAULT_BUSY_TIMEOUT = DEFAULT_TIMEOUT
"""Seconds a SQLite writer waits for the write lock before giving up."""
DEFAULT_CONNECT_TIMEOUT = DEFAULT_TIMEOUT
MAX_PREFIX_LENGTH = 40

# Messages tests assert on.
UNSUPPORTED_SCHEME = "SQLStore does not serve {scheme!r} URLs; use one of: {known}"
BAD_URL = "not a usable database URL: {url!r}"
BAD_TABLE_PREFIX = (
    "table_prefix must be 1 to {max} letters, digits or underscores, "
    "not starting with a digit; got {prefix!r}"
)
SQLITE_IN_MEMORY = (
    "an in-memory SQLite database lives and dies with one connection; "
    "give a file path, or use memory:// for an in-process store"
)
BAD_POLL_INTERVAL = "poll_interval must be a positive number of seconds"
BAD_TIMEOUT = "{name} must be a positive number of seconds, not {value!r}"

# Bare schemes pick the default async driver.
DEFAULT_DRIVER = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}
# SQLAlchemy scheme -> (driver module, extra that installs it).
DRIVERS = {
    "sqlite+aiosqlite": ("aiosqlite", "sqlite"),
    "postgresql+asyncpg": ("asyncpg", "postgres"),
    "mysql+asyncmy": ("asyncmy", "mysql"),
    "mariadb+asyncmy": ("asyncmy", "mysql"),
    "mysql+aiomysql": ("aiomysql", "mysql"),
    "mariadb+aiomysql": ("aiomysql", "mysql"),
}
SCHEMES = tuple(sorted({*DEFAULT_DRIVER, *DRIVERS}))
"""Every URL scheme :class:`SQLStore` serves."""
_PREFIX_RE = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_PREFIX_LENGTH - 1}}}")


def require(extra: str, module: str) -> None:
    """Import ``module`` or raise MissingExtraError naming the extra that installs it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, module) from exc


def require_sqlalchemy(extra: str) -> None:
    """Raise MissingExtraError naming ``extra`` when SQLAlchemy is not installed."""
    if IMPORT_ERROR is not None:
        raise MissingExtraError(extra, "sqlalchemy") from IMPORT_ERROR


def parse_url(url: str) -> URL:
    """Map a bare scheme to its default async driver and check that driver is installed."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(BAD_URL.format(url=url))
    scheme, rest = url.split("://", 1)
    scheme = DEFAULT_DRIVER.get(scheme.lower(), scheme.lower())
    driver = DRIVERS.get(scheme)
    if driver is None:
        known = ", ".join(SCHEMES)
        raise ConfigurationError(UNSUPPORTED_SCHEME.format(scheme=scheme, known=known))
    module, extra = driver
    require_sqlalchemy(extra)
    require(extra, "greenlet")  # SQLAlchemy's asyncio layer runs on it
    require(extra, module)
    try:
        return sa.make_url(f"{scheme}://{rest}")
    except sa_exc.ArgumentError as exc:
        raise ConfigurationError(BAD_URL.format(url=url)) from exc


def check_options(table_prefix: str, poll_interval: float) -> None:
    if not isinstance(table_prefix, str) or not _PREFIX_RE.fullmatch(table_prefix):
        raise ConfigurationError(
            BAD_TABLE_PREFIX.format(max=MAX_PREFIX_LENGTH, prefix=table_prefix)
        )
    if not poll_interval > 0:
        raise ConfigurationError(BAD_POLL_INTERVAL)


def check_timeout(timeout: float, name: str = "timeout") -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigurationError(BAD_TIMEOUT.format(name=name, value=timeout))


def build_engine(
    parsed: URL,
    *,
    pool_size: int,
    busy_timeout: float,
    timeout: float = DEFAULT_TIMEOUT,
    engine_options: dict[str, Any],
) -> AsyncEngine:
    """The engine :meth:`SQLStore.from_url` builds (and later disposes) for ``parsed``.

    ``timeout`` bounds every wait on the server: the pool checkout
    (``pool_timeout``), the connect, and each statement (asyncpg's
    ``command_timeout``, asyncmy's ``read_timeout``); SQLite's waits are
    ``busy_timeout``. A wait that runs out is an outage (StoreUnavailableError).
    """
    check_timeout(timeout)
    check_timeout(busy_timeout, "busy_timeout")
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name()
    options = dict(engine_options)
    options.setdefault("pool_timeout", timeout)
    # No ping per checkout (up to three round trips on asyncpg): a dead pooled
    # connection is noticed at checkout without one (asyncpg, see
    # drop_closed_asyncpg) or by its first statement, and Database.transact runs
    # the transaction again once when nothing of it can have committed.
    options.setdefault("pool_pre_ping", False)
    # Every transaction ends in COMMIT or ROLLBACK before its connection goes
    # back (a failed COMMIT invalidates it), so the pool's own ROLLBACK on
    # return would be one more round trip (a thread hop on SQLite) for nothing.
    options.setdefault("pool_reset_on_return", None)
    if "poolclass" not in options:  # a pool of the caller's choice may not take sizes
        options.setdefault("pool_size", pool_size)
        options.setdefault("max_overflow", DEFAULT_MAX_OVERFLOW)
    connect_args = dict(options.pop("connect_args", {}))
    if backend == "sqlite":
        database = parsed.database or ""
        if (
            database in ("", ":memory:")
            or "mode=memory" in database
            or parsed.query.get("mode") == "memory"
        ):
            raise ConfigurationError(SQLITE_IN_MEMORY)
        connect_args.setdefault("timeout", busy_timeout)  # sqlite3's busy handler
    elif backend == "postgresql":
        connect_args.setdefault("timeout", timeout)
        connect_args.setdefault("command_timeout", timeout)
    else:
        options.setdefault("isolation_level", "READ COMMITTED")
        connect_args.setdefault("connect_timeout", timeout)
        if driver == "asyncmy":  # aiomysql has no read timeout
            connect_args.setdefault("read_timeout", timeout)
    options["connect_args"] = connect_args
    try:
        engine = create_async_engine(parsed, **options)
    except (TypeError, sa_exc.ArgumentError) as exc:
        raise ConfigurationError(f"cannot build a {backend} engine: {exc}") from exc
    if backend == "sqlite":
        sa_event.listen(engine.sync_engine, "connect", sqlite_on_connect(busy_timeout))
    elif engine.dialect.driver == "asyncpg":
        sa_event.listen(engine.sync_engine, "checkout", drop_closed_asyncpg)
    return engine


def sqlite_on_connect(busy_timeout: float) -> Callable[[Any, Any], None]:
    """The connect hook: WAL lets readers and one writer work at once across processes.

    ``synchronous=NORMAL`` is safe with WAL: a crash of the process loses
    nothing, a power cut may lose the last commits but never corrupts the file.
    """

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            enter_wal(cursor, busy_timeout)
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


def enter_wal(cursor: Any, busy_timeout: float) -> None:
    """Switch the file to WAL, waiting out connections that race to do the same.

    The switch upgrades a read lock to an exclusive one. When several
    connections to a fresh file try it at once, SQLite refuses all but one at
    once ("database is locked") without calling the busy handler, since
    waiting could deadlock. The mode is kept in the file, so a retry after the
    winner commits finds it done. This hook runs in SQLAlchemy's greenlet on
    the event loop, so it waits with ``await_only`` rather than blocking it.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        await_only(asyncio.sleep(pause * (0.5 + random.random())))
        pause = min(pause * 2, 0.2)


def drop_closed_asyncpg(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Refuse a pooled asyncpg connection whose server side has gone; the pool reconnects.

    asyncpg sees the socket close even while the connection sits idle in the
    pool, so this costs no round trip, unlike a pre-ping.
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sa_exc.DisconnectionError("the PostgreSQL connection was closed while pooled")
