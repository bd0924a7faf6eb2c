"""FastAPI dependencies that hand a route the MCP session it is about.

Inside a request the middleware handles (an MCP call, or a route of an app
the middleware wraps), the dependencies return the current session. In an
ordinary REST route next to a mounted MCP app, they load the session the
request names in its ``Mcp-Session-Id`` header through the middleware that
:func:`mcp_session_mw.mount.mount_mcp` recorded on ``app.state``, and answer
like the MCP endpoint would: 400 without the header, one 404 for malformed,
unknown, expired and foreign ids alike, 503 while the store is unreachable.

A REST read does not slide the session's expiry: only MCP traffic keeps a
session alive.
"""

from __future__ import annotations

from typing import Annotated

from starlette.requests import HTTPConnection

from .errors import ConfigurationError, MissingExtraError, StoreError
from .jsonrpc import MSG_SESSION_NOT_FOUND, MSG_STORE_UNAVAILABLE
from .middleware import SessionMiddleware
from .mount import STATE_KEY
from .principal import resolve_principal
from .protocol import SESSION_HEADER
from .records import JSONValue
from .session import Session, current_session_or_none

try:
    from fastapi import Depends, HTTPException
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("fastapi", "fastapi") from exc

__all__ = [
    "MSG_NO_MIDDLEWARE",
    "MSG_SESSION_HEADER_REQUIRED",
    "MSG_SESSION_NOT_FOUND",
    "MSG_STORE_UNAVAILABLE",
    "OptionalSessionDep",
    "SessionDep",
    "SessionStateDep",
    "get_session",
    "get_session_or_none",
    "get_session_state",
    "session_middleware",
]

MSG_SESSION_HEADER_REQUIRED = "Mcp-Session-Id header is required"
MSG_NO_MIDDLEWARE = (
    f"no SessionMiddleware on app.state.{STATE_KEY}: mount the MCP app with "
    "mcp_session_mw.mount_mcp(), or set that attribute yourself"
)
_RETRY_AFTER = {"Retry-After": "1"}


def session_middleware(conn: HTTPConnection) -> SessionMiddleware:
    """The middleware recorded on the application; ConfigurationError if there is none."""
    middleware = getattr(conn.app.state, STATE_KEY, None)
    if not isinstance(middleware, SessionMiddleware):
        raise ConfigurationError(MSG_NO_MIDDLEWARE)
    return middleware


async def get_session_or_none(conn: HTTPConnection) -> Session | None:
    """The session of this request, or None when it names none that the caller may use.

    Raises 503 when the store cannot be reached: "no session" would be a lie.
    """
    current = current_session_or_none()
    if current is not None:
        return current
    values = conn.headers.getlist(SESSION_HEADER)
    if len(values) != 1:
        return None
    middleware = session_middleware(conn)
    try:
        session = await middleware.get_session(values[0])
    except StoreError as exc:
        raise HTTPException(503, MSG_STORE_UNAVAILABLE, headers=_RETRY_AFTER) from exc
    if session is None:
        return None
    principal = middleware.principal
    caller = await resolve_principal(principal, conn.scope)
    if principal is not None and caller != session.record.principal:
        return None  # Another principal's session: indistinguishable from unknown.
    return session


async def get_session(conn: HTTPConnection) -> Session:
    """The session of this request; 400 without ``Mcp-Session-Id``, 404 if unusable."""
    session = await get_session_or_none(conn)
    if session is not None:
        return session
    if not conn.headers.getlist(SESSION_HEADER):
        raise HTTPException(400, MSG_SESSION_HEADER_REQUIRED)
    raise HTTPException(404, MSG_SESSION_NOT_FOUND)


async def get_session_state(
    session: Annotated[Session, Depends(get_session)],
) -> dict[str, JSONValue]:
    """A copy of the session's state as last loaded; change it with ``Session.update``."""
    return session.state


SessionDep = Annotated[Session, Depends(get_session)]
OptionalSessionDep = Annotated[Session | None, Depends(get_session_or_none)]
SessionStateDep = Annotated[dict[str, JSONValue], Depends(get_session_state)]
