"""A read-only dashboard of a session store: a Starlette app, built only behind a guard.

::

    from mcp_session_mw.dashboard import dashboard_app

    def operators_only(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {ADMIN_TOKEN}"

    api.mount("/admin/sessions", dashboard_app(middleware, guard=operators_only))

See :func:`dashboard_app` and ``docs/operations.md``.
"""

from __future__ import annotations

from .app import MSG_NO_GUARD, Guard, dashboard_app

__all__ = ["MSG_NO_GUARD", "Guard", "dashboard_app"]
