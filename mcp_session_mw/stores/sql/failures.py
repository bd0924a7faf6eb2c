"""What a database error means (outage, refusal, lock conflict) and the store errors it becomes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sqlite3
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ...errors import SessionNotFoundError, StoreError, StoreUnavailableError

with contextlib.suppress(ImportError):  # engine.require_sqlalchemy names the extra
    from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__.rpartition(".")[0])
"""The package's one logger (``mcp_session_mw.stores.sql``, listed in ``logs.PACKAGE_LOGGERS``)."""

LOCK_CONFLICT_RETRIES = 3

# Messages tests assert on.
STORE_UNAVAILABLE = "the {backend} database cannot be reached: {error}"
STORE_FAILED = "the {backend} database failed the operation: {error}"
RACE_LOST = "another writer kept inserting the same row first ({times} times)"
CONNECTION_CLEANUP_FAILED = "ignored while discarding a broken database connection: %r"

# Server states that mean "cannot reach it right now" rather than "it said no".
_PG_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300"}  # + every class 08 state
_MYSQL_UNAVAILABLE = {1040, 1053, 1927, 2002, 2003, 2005, 2006, 2013, 2055}
_PG_LOCK_CONFLICT = {"40001", "40P01"}
_MYSQL_LOCK_CONFLICT = {1020, 1213}


class RaceLost(Exception):
    """A concurrent writer inserted the row this transaction meant to insert; run it again."""


class LockTaken(Exception):
    """Another process inserted the lock row first."""


class UserCodeError(Exception):
    """Carries an exception raised by the caller's update function out unchanged."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def session_not_found() -> SessionNotFoundError:
    return SessionNotFoundError("session not found")


def driver_errors(engine: AsyncEngine) -> tuple[type[BaseException], ...]:
    """What the driver's own connection may raise: SQLAlchemy's errors plus the driver's."""
    errors: list[type[BaseException]] = [
        OSError,
        asyncio.TimeoutError,
        sa_exc.SQLAlchemyError,
        sqlite3.Error,
    ]
    if engine.dialect.driver == "asyncpg":
        asyncpg: Any = importlib.import_module("asyncpg")
        errors += [asyncpg.PostgresError, asyncpg.InterfaceError]
    return tuple(errors)


def causes(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wrapped, and what those were raised from."""
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in chain):
            continue
        chain.append(current)
        todo.append(current.__cause__)
        if isinstance(current, sa_exc.DBAPIError):
            orig = current.orig
            todo.append(orig if isinstance(orig, BaseException) else None)
    return chain


def _mysql_errno(exc: BaseException) -> int | None:
    module = type(exc).__module__
    if module.startswith(("asyncmy", "aiomysql", "pymysql")) and exc.args:
        code = exc.args[0]
        return code if isinstance(code, int) else None
    return None


def is_unavailable(exc: BaseException) -> bool:
    """True when the server could not be reached or went away (an outage, not a refusal)."""
    for cause in causes(exc):
        if isinstance(cause, (OSError, asyncio.TimeoutError, sa_exc.TimeoutError)):
            return True  # sa_exc.TimeoutError: every pooled connection stayed busy
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _PG_UNAVAILABLE):
            return True
        if _mysql_errno(cause) in _MYSQL_UNAVAILABLE:
            return True
        if isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause):
            return True  # the busy timeout ran out: the writer ahead of us is stuck
    return False


def found_dead(exc: BaseException) -> bool:
    """True when a pooled connection turned out to be closed by the server (not a refusal)."""
    return any(
        isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
        for cause in causes(exc)
    )


def is_lock_conflict(exc: BaseException) -> bool:
    """True for a deadlock or serialization failure, which is worth running again."""
    for cause in causes(exc):
        if getattr(cause, "sqlstate", None) in _PG_LOCK_CONFLICT:
            return True
        if _mysql_errno(cause) in _MYSQL_LOCK_CONFLICT:
            return True
    return False


def describe(exc: BaseException) -> str:
    """The driver's own message, never SQLAlchemy's (which quotes the SQL parameters)."""
    detail = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    text = str(detail).strip().splitlines()
    message = text[0] if text else type(detail).__name__
    return message[:300]


def unavailable(backend: str, exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(STORE_UNAVAILABLE.format(backend=backend, error=describe(exc)))


def translate(backend: str, exc: BaseException) -> StoreError:
    """The store error for ``exc``: StoreUnavailableError (503) for an outage, else StoreError."""
    if is_unavailable(exc):
        return unavailable(backend, exc)
    return StoreError(STORE_FAILED.format(backend=backend, error=describe(exc)))


async def quietly(step: Awaitable[Any], message: str = CONNECTION_CLEANUP_FAILED) -> None:
    """Run a best-effort cleanup step whose failure changes nothing for the caller."""
    try:
        await step
    except Exception as exc:  # driver errors of a connection that is already broken
        logger.debug(message, exc)
