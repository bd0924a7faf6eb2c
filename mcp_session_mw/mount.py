"""Mount a session-wrapped MCP app inside a FastAPI or Starlette application.

Starlette runs the lifespan of the application the server calls, never the
lifespan of an app mounted inside it. The MCP SDK's Starlette app starts its
session manager in its lifespan, and the middleware opens and closes its store
there, so a plain ``app.mount("/mcp", SessionMiddleware(sdk_app))`` answers
every MCP request with an error. :func:`mount_mcp` mounts the app and runs its
lifespan inside the parent's, by speaking the ASGI lifespan protocol to it:
that works for any ASGI app (SDK, FastMCP, hand-written) and goes through the
middleware's own lifespan handling, which opens the store at startup and
closes it at shutdown.

Divergence #1 from Starlette's ``Mount``: the mount point itself is served.
``Mount("/mcp", app)`` only matches ``/mcp/...`` and the parent router answers
``/mcp`` with a 307 redirect, which some MCP clients do not follow for POST.
:class:`MCPMount` hands ``/mcp`` to the app as ``/mcp/``, so an app serving
``/`` answers both.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
from anyio.abc import ObjectReceiveStream
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Lifespan, Message, Scope

from .errors import ConfigurationError, SessionMiddlewareError, StoreError
from .health import DEFAULT_LIVE_PATH, DEFAULT_READY_PATH, health_routes
from .logs import log_failure
from .middleware import SessionMiddleware

logger = logging.getLogger("mcp_session_mw")

STATE_KEY = "mcp_session_middleware"
"""Attribute of the parent's ``app.state`` that holds the mounted middleware."""

MSG_ROOT_MOUNT = (
    "mount_mcp needs a sub-path such as '/mcp'; to serve MCP at the root, "
    "run the SessionMiddleware itself as the application"
)
MSG_OPTIONS_IGNORED = (
    "middleware options only apply when mount_mcp wraps the app itself, "
    "not to an app that already is a SessionMiddleware"
)
MSG_PATH_MISMATCH = (
    "the middleware handles {handled!r} below the mount point but the app serves "
    "{served}; build the app to serve '/' (SDK: streamable_http_app("
    "streamable_http_path='/'); FastMCP: http_app(path='/')) or pass path=... to mount_mcp"
)
MSG_STORE_DOWN_AT_STARTUP = (
    "session store unavailable at startup; MCP requests answer 503 until it is back"
)
MSG_STARTUP_FAILED = "the mounted MCP app at {path!r} failed to start: {detail}"
MSG_SHUTDOWN_FAILED = "the mounted MCP app at {path!r} failed to shut down: {detail}"


class MCPMount(Mount):
    """A :class:`~starlette.routing.Mount` that also serves its own path, unredirected."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and self.path and _route_path(scope) == self.path:
            # Divergence #1: the child sees "/" rather than the parent redirecting.
            rewritten = {**scope, "path": scope["path"] + "/"}
            match, child_scope = super().matches(rewritten)
            if match is Match.FULL:
                child_scope["path"] = rewritten["path"]
                raw_path = scope.get("raw_path")
                if isinstance(raw_path, bytes):
                    child_scope["raw_path"] = raw_path + b"/"
            return match, child_scope
        return super().matches(scope)


def mount_mcp(
    parent: Starlette,
    path: str,
    app: ASGIApp,
    /,
    *,
    name: str | None = None,
    live_path: str | None = DEFAULT_LIVE_PATH,
    ready_path: str | None = DEFAULT_READY_PATH,
    **middleware_options: Any,
) -> SessionMiddleware:
    """Serve ``app`` with durable sessions at ``path`` of ``parent``, lifespan included.

    ``app`` is wrapped in a :class:`SessionMiddleware` built from
    ``middleware_options`` unless it already is one (the first three
    parameters are positional-only, so ``path=...`` among the options is the
    middleware's, not the mount point). The recommended shape
    serves MCP at exactly ``path``::

        mount_mcp(api, "/mcp", server.streamable_http_app(streamable_http_path="/"))
        mount_mcp(api, "/mcp", fastmcp_server.http_app(path="/"))

    The middleware's ``path`` option is relative to the mount point and
    defaults to ``"/"`` here. An app left at the SDK default (``/mcp``) needs
    ``path="/mcp"`` and is then reached at ``/mcp/mcp``; when ``app`` is a
    Starlette app whose routes do not serve the middleware's path,
    :class:`ConfigurationError` says so now rather than every request
    answering 404 later.

    The app's lifespan (the SDK's session manager) and the store run inside
    the parent's lifespan: they start after the parent's startup code and stop
    before its shutdown code, and whatever state the app's lifespan yields is
    added to the parent's. The middleware is recorded on
    ``parent.state.mcp_session_middleware`` (the first one, if MCP is mounted
    more than once), which is where the FastAPI dependencies find it.

    ``live_path`` and ``ready_path`` serve the liveness and readiness probes
    (:mod:`mcp_session_mw.health`) on ``parent``, after its own routes (a
    route of the parent's on the same path wins); None leaves one out.
    """
    mount_path = path.rstrip("/")
    if not path.startswith("/"):
        raise ConfigurationError("path must start with '/'")
    if not mount_path:
        raise ConfigurationError(MSG_ROOT_MOUNT)
    if isinstance(app, SessionMiddleware):
        if middleware_options:
            raise ConfigurationError(MSG_OPTIONS_IGNORED)
        middleware = app
    else:
        middleware = SessionMiddleware(app, **{"path": "/", **middleware_options})
    _check_served_path(middleware)
    parent.router.routes.append(MCPMount(mount_path, app=middleware, name=name))
    parent.router.routes.extend(
        health_routes(middleware, live_path=live_path, ready_path=ready_path)
    )
    parent.router.lifespan_context = _chain_lifespan(
        parent.router.lifespan_context, middleware, mount_path
    )
    if getattr(parent.state, STATE_KEY, None) is None:
        setattr(parent.state, STATE_KEY, middleware)
    return middleware


def _chain_lifespan(outer: Lifespan[Any], child: SessionMiddleware, path: str) -> Lifespan[Any]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        async with outer(app) as outer_state:
            try:
                # Also for an app without a lifespan, which the middleware never sees start.
                try:
                    await child.open_store()
                except StoreError:
                    log_failure(logger, MSG_STORE_DOWN_AT_STARTUP)
                async with run_lifespan(child, path=path) as child_state:
                    if outer_state is None and not child_state:
                        yield None
                    else:
                        yield {**child_state, **(outer_state or {})}
            finally:
                await child.close_store()

    # Starlette's Lifespan type is "yields None" or "yields a mapping", never both.
    return cast("Lifespan[Any]", lifespan)


@asynccontextmanager
async def run_lifespan(app: ASGIApp, *, path: str = "") -> AsyncIterator[dict[str, Any]]:
    """Run ``app``'s ASGI lifespan around the body; yields the state it set.

    An app that does not speak the lifespan protocol (it returns or raises
    before answering startup without saying ``startup.failed``) is run
    without one, as ASGI servers do. ``startup.failed`` and
    ``shutdown.failed`` raise :class:`SessionMiddlewareError`.
    """
    state: dict[str, Any] = {}
    scope: Scope = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.0"},
        "state": state,
    }
    to_app, app_inbox = anyio.create_memory_object_stream[Message](2)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](2)
    crash: list[BaseException] = []

    async def receive() -> Message:
        return await app_inbox.receive()

    async def send(message: Message) -> None:
        await app_outbox.send(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            crash.append(exc)
        finally:
            app_outbox.close()

    # Failures are raised after the task group: raised inside it, they would
    # reach the parent wrapped in an ExceptionGroup.
    failure: str | None = None
    async with anyio.create_task_group() as tasks, to_app, app_inbox, from_app:
        tasks.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        answer = await _next(from_app)
        if answer is not None and answer["type"] == "lifespan.startup.failed":
            while await _next(from_app) is not None:
                pass  # let the app return, so its exception can be chained
            failure = MSG_STARTUP_FAILED.format(path=path, detail=_detail(answer))
        elif answer is None or answer["type"] != "lifespan.startup.complete":
            logger.debug("the app at %r has no lifespan; running without one", path)
            yield state
        else:
            try:
                yield state
            finally:
                with anyio.CancelScope(shield=True):
                    await to_app.send({"type": "lifespan.shutdown"})
                    answer = await _next(from_app)
                    tasks.cancel_scope.cancel()
                if answer is not None and answer["type"] == "lifespan.shutdown.failed":
                    failure = MSG_SHUTDOWN_FAILED.format(path=path, detail=_detail(answer))
                    logger.error(failure)
    if failure is not None:
        raise SessionMiddlewareError(failure) from (crash[0] if crash else None)


def _detail(message: Message) -> str:
    detail = message.get("message")
    return detail if isinstance(detail, str) and detail else "no reason given"


async def _next(stream: ObjectReceiveStream[Message]) -> Message | None:
    """The next lifespan message from the app, or None once it has returned."""
    try:
        return await stream.receive()
    except anyio.EndOfStream:
        return None


def _route_path(scope: Scope) -> str:
    """The path below the current mount point, as Starlette's routers compute it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def _check_served_path(middleware: SessionMiddleware) -> None:
    """Refuse a middleware path that the wrapped Starlette app visibly does not serve."""
    handled = middleware.path
    routes = getattr(middleware.app, "routes", None)
    if handled is None or not isinstance(routes, list):
        return
    served: list[str] = []
    for route in routes:
        if not isinstance(route, BaseRoute):
            return  # Something we cannot read; trust the caller.
        if isinstance(route, Mount):
            prefix = route.path or "/"
            if handled == prefix or handled.startswith(prefix.rstrip("/") + "/"):
                return
            served.append(prefix + "/...")
        elif isinstance(route, Route) and "{" not in route.path:
            if (route.path.rstrip("/") or "/") == handled:
                return
            served.append(route.path)
        else:
            return
    if served:
        raise ConfigurationError(
            MSG_PATH_MISMATCH.format(handled=handled, served=", ".join(map(repr, served)))
        )
