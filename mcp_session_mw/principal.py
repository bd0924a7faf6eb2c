"""Who a request acts for, so a session can be bound to the principal that opened it."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import Scope

PrincipalFn = Callable[[Scope], "str | None"]


def default_principal(scope: Scope) -> str | None:
    """The authenticated user of ``scope["user"]``, if any, as a stable string.

    A user carrying an OAuth access token (the MCP SDK's bearer-auth user) is
    identified by the token's client id, issuer and subject, so a new token for
    the same subject keeps its sessions; any other authenticated Starlette user
    by its ``display_name``. Unauthenticated requests have no principal.
    """
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    token = getattr(user, "access_token", None)
    if token is not None:
        parts = {
            name: getattr(token, name, None)
            for name in ("client_id", "issuer", "subject")
            if getattr(token, name, None) is not None
        }
        if parts:
            return "token:" + json.dumps(parts, sort_keys=True, separators=(",", ":"))
    name = getattr(user, "display_name", None)
    return f"user:{name}" if isinstance(name, str) and name else None
