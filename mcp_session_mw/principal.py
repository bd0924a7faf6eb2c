"""Who a request acts for, so a session can be bound to the principal that opened it.

A principal function takes the ASGI scope and returns a stable string (or None
for an anonymous caller); it may be a coroutine function. Two are provided:

* :func:`default_principal` reads ``scope["user"]``, which an authentication
  middleware *outside* :class:`SessionMiddleware` sets.
* :func:`bearer_principal` verifies the ``Authorization: Bearer`` token itself
  with a token verifier. This is the one for an MCP SDK app built with
  ``token_verifier=`` and ``auth=``: the SDK's authentication middleware runs
  *inside* the app, after :class:`SessionMiddleware` has already asked who the
  caller is, so ``scope["user"]`` is not set yet at that point.

Both name a token's principal the same way (:func:`token_principal`), so a
session opened under one is usable under the other.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.types import Scope

PrincipalFn = Callable[[Scope], "str | Awaitable[str | None] | None"]
"""Scope → principal string (None: anonymous); sync or async."""


class TokenVerifier(Protocol):
    """What :func:`bearer_principal` needs from a verifier (the MCP SDK's ``TokenVerifier``).

    ``verify_token`` returns None for a token it rejects, else an object with
    ``client_id`` and, if known, ``subject``, ``expires_at`` (Unix seconds) and
    ``claims`` (whose ``iss`` names the issuer) or ``issuer`` attributes.
    """

    async def verify_token(self, token: str) -> Any: ...


async def resolve_principal(principal: PrincipalFn | None, scope: Scope) -> str | None:
    """Call a principal function, awaiting it if it is async; None when there is none."""
    if principal is None:
        return None
    result = principal(scope)
    if result is not None and type(result) is not str and inspect.isawaitable(result):
        result = await result
    return result


def token_principal(token: object) -> str | None:
    """A verified access token's principal: its client id, issuer and subject.

    A new token for the same subject (a refresh) therefore keeps its sessions.
    The issuer is the token's ``issuer`` attribute or its ``iss`` claim, as
    the MCP SDK reads it (``principal_components``). Parts the verifier does
    not supply are left out; None when it supplies none.
    """
    claims = getattr(token, "claims", None)
    issuer = getattr(token, "issuer", None)
    if issuer is None and isinstance(claims, dict):
        issuer = claims.get("iss")
    parts = {
        "client_id": getattr(token, "client_id", None),
        "issuer": None if issuer is None else str(issuer),
        "subject": getattr(token, "subject", None),
    }
    parts = {name: value for name, value in parts.items() if value is not None}
    if not parts:
        return None
    return "token:" + json.dumps(parts, sort_keys=True, separators=(",", ":"))


def default_principal(scope: Scope) -> str | None:
    """The authenticated user of ``scope["user"]``, if any, as a stable string.

    A user carrying an OAuth access token (the MCP SDK's bearer-auth user) is
    identified by :func:`token_principal`; any other authenticated Starlette
    user by its ``display_name``. Unauthenticated requests have no principal.
    """
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    token = getattr(user, "access_token", None)
    if token is not None:
        principal = token_principal(token)
        if principal is not None:
            return principal
    name = getattr(user, "display_name", None)
    return f"user:{name}" if isinstance(name, str) and name else None


def bearer_principal(
    verifier: TokenVerifier, *, clock: Callable[[], float] = time.time
) -> Callable[[Scope], Awaitable[str | None]]:
    """A principal function that verifies the request's bearer token with ``verifier``.

    Pass it as ``SessionMiddleware(app, principal=bearer_principal(verifier))``
    with the same verifier the app authenticates with. A missing, rejected or
    expired token gives no principal; the middleware then lets the app's own
    authentication answer (401) for a session that belongs to someone. The
    token is verified here and again by the app: give a verifier that calls
    out (introspection) a short cache. Errors the verifier raises propagate.
    """

    async def principal(scope: Scope) -> str | None:
        header = Headers(scope=scope).get("authorization")
        if header is None or header[:7].lower() != "bearer ":
            return None
        token = header[7:]
        if not token:
            return None
        verified = await verifier.verify_token(token)
        if verified is None:
            return None
        expires_at = getattr(verified, "expires_at", None)
        if isinstance(expires_at, int | float) and expires_at < clock():
            return None
        return token_principal(verified)

    return principal
