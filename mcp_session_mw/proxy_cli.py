"""``mcp-session-mw proxy``: durable sessions in front of an MCP server in any language.

::

    mcp-session-mw proxy --upstream URL [--store URL] [--host H] [--port P]
        [--path /mcp] [--workers N] [--keep-alive S] [--upstream-timeout S]
        [--upstream-header NAME=VALUE]
        [--store-option NAME=VALUE] [--ttl S] [--mode M] ... (every SessionMiddleware option)

Runs ``SessionMiddleware(UpstreamApp(URL))`` on uvicorn. Every middleware
option is a flag named after it (``max_stream_seconds`` is
``--max-stream-seconds``) and an ``MCP_SESSION_*`` setting (see
:mod:`mcp_session_mw.settings`); a flag wins over the variable. The upstream's
own settings are ``MCP_SESSION_PROXY_UPSTREAM``, ``MCP_SESSION_PROXY_TIMEOUT``
and ``MCP_SESSION_PROXY_HEADERS`` (a JSON object).

Flags are turned into those variables and each worker builds its app from the
environment (:func:`app_from_environment`, a uvicorn factory), so one worker
and many are configured the same way. The configuration is built once here
first, so a bad value exits with status 2 before a port is bound. Requests to
any path but ``--path`` are answered 404 (the upstream serves one endpoint).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ConfigurationError, MissingExtraError
from .jsonrpc import INVALID_REQUEST, send_error
from .middleware import SessionMiddleware
from .options import DEFAULTS

ENV_PREFIX = "MCP_SESSION_"
UPSTREAM_ENV = "MCP_SESSION_PROXY_UPSTREAM"
TIMEOUT_ENV = "MCP_SESSION_PROXY_TIMEOUT"
HEADERS_ENV = "MCP_SESSION_PROXY_HEADERS"
STORE_ENV = "MCP_SESSION_STORE_URL"
STORE_OPTIONS_ENV = "MCP_SESSION_STORE_OPTIONS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_KEEP_ALIVE = 75.0

# Messages tests assert on.
MSG_NO_UPSTREAM = f"--upstream (or {UPSTREAM_ENV}) is required"
MSG_BAD_PAIR = "{flag} takes NAME=VALUE, not {value!r}"
MSG_BAD_JSON_OBJECT = "{variable} must be a JSON object"
MSG_BAD_TIMEOUT = f"{TIMEOUT_ENV} (--upstream-timeout) must be a number of seconds"
MSG_NOT_FOUND = "Not Found: this proxy serves MCP at {path} only"

_OWN_FLAGS = {"store": "store", "store_options": "store_option", "path": "path"}
"""Middleware options with a flag of their own shape (the rest are ``--name VALUE``)."""


def middleware_options() -> list[tuple[str, Any]]:
    """SessionMiddleware's keyword options and their defaults: SessionOptions' fields."""
    return list(DEFAULTS.items())


def _pair(flag: str) -> Any:
    def parse(text: str) -> tuple[str, str]:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(MSG_BAD_PAIR.format(flag=flag, value=text))
        return name.strip(), value

    return parse


def add_parser(topics: Any) -> argparse.ArgumentParser:
    """Add the ``proxy`` command to ``topics`` (the main parser's subparsers)."""
    parser: argparse.ArgumentParser = topics.add_parser(
        "proxy",
        help="durable sessions in front of an MCP server in any language",
        description="Serve SessionMiddleware(UpstreamApp(URL)) on uvicorn. Each middleware "
        f"option is also read from its {ENV_PREFIX}* variable; a flag wins.",
    )
    upstream = parser.add_argument_group("upstream")
    upstream.add_argument(
        "--upstream", metavar="URL", help=f"the MCP endpoint to forward to (${UPSTREAM_ENV})"
    )
    upstream.add_argument(
        "--upstream-timeout",
        metavar="S",
        help=f"seconds to connect and get an answer's head (${TIMEOUT_ENV}; default 30)",
    )
    upstream.add_argument(
        "--upstream-header",
        type=_pair("--upstream-header"),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a header set on every upstream request (repeatable; merged over ${HEADERS_ENV})",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    server.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    server.add_argument("--log-level", default="info", help="uvicorn's log level")
    server.add_argument(
        "--keep-alive",
        type=float,
        default=DEFAULT_KEEP_ALIVE,
        metavar="S",
        help="seconds an idle client connection is kept open (uvicorn's timeout_keep_alive; "
        f"default {DEFAULT_KEEP_ALIVE:g}): longer than the idle timeout of the load balancer "
        "in front",
    )
    session = parser.add_argument_group("session middleware")
    session.add_argument("--store", metavar="URL", help=f"store URL (${STORE_ENV})")
    session.add_argument(
        "--store-option",
        type=_pair("--store-option"),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a store option, VALUE as JSON or a bare string (merged over ${STORE_OPTIONS_ENV})",
    )
    session.add_argument("--path", help=f"the MCP endpoint served (${ENV_PREFIX}PATH; /mcp)")
    for name, default in middleware_options():
        if name in _OWN_FLAGS:
            continue
        session.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar="VALUE",
            help=f"${ENV_PREFIX}{name.upper()} (default {_shown(default)})",
        )
    return parser


def _shown(default: Any) -> str:
    if callable(default):
        return f"{default.__module__}:{default.__qualname__}"
    return repr(default)


def _json_object(variable: str, extra: list[tuple[str, str]], values: bool) -> str | None:
    """The JSON object in ``$variable`` with ``extra`` pairs set over it (None if empty)."""
    merged: dict[str, Any] = {}
    text = os.environ.get(variable)
    if text:
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if not isinstance(loaded, dict):
            raise ConfigurationError(MSG_BAD_JSON_OBJECT.format(variable=variable))
        merged.update(loaded)
    for name, raw in extra:
        value: Any = raw
        if values:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw  # a bare string: table_prefix=app_
        merged[name] = value
    return json.dumps(merged) if merged else None


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The ``MCP_SESSION_*`` variables the flags in ``args`` set (over the environment)."""
    env: dict[str, str] = {}
    if args.upstream is not None:
        env[UPSTREAM_ENV] = args.upstream
    if args.upstream_timeout is not None:
        env[TIMEOUT_ENV] = args.upstream_timeout
    headers = _json_object(HEADERS_ENV, args.upstream_header, values=False)
    if headers is not None:
        env[HEADERS_ENV] = headers
    if args.store is not None:
        env[STORE_ENV] = args.store
    options = _json_object(STORE_OPTIONS_ENV, args.store_option, values=True)
    if options is not None:
        env[STORE_OPTIONS_ENV] = options
    if args.path is not None:
        env[ENV_PREFIX + "PATH"] = args.path
    for name, _ in middleware_options():
        value = None if name in _OWN_FLAGS else getattr(args, name)
        if value is not None:
            env[ENV_PREFIX + name.upper()] = value
    return env


class PathOnly:
    """The middleware at its path; 404 with a JSON-RPC error body anywhere else."""

    def __init__(self, app: SessionMiddleware) -> None:
        self.app = app
        self.path = app.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.path is not None
            and (scope["path"].rstrip("/") or "/") != self.path
        ):
            await send_error(send, 404, INVALID_REQUEST, MSG_NOT_FOUND.format(path=self.path))
            return
        await self.app(scope, receive, send)


def _upstream_options(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if env.get(TIMEOUT_ENV):
        try:
            options["timeout"] = float(env[TIMEOUT_ENV])
        except ValueError:
            raise ConfigurationError(MSG_BAD_TIMEOUT) from None
    headers = _json_object(HEADERS_ENV, [], values=False)
    if headers is not None:
        loaded = json.loads(headers)
        options["headers"] = {str(name): str(value) for name, value in loaded.items()}
    return options


def app_from_environment() -> ASGIApp:
    """The proxy's ASGI app, built from ``MCP_SESSION_*`` variables (a uvicorn factory)."""
    from .proxy import UpstreamApp

    env = os.environ
    upstream = env.get(UPSTREAM_ENV)
    if not upstream:
        raise ConfigurationError(MSG_NO_UPSTREAM)
    app = UpstreamApp(upstream, **_upstream_options(env))
    return PathOnly(SessionMiddleware.from_settings(app))


def run(args: argparse.Namespace) -> None:
    """Run the proxy until it is stopped; raises ConfigurationError/MissingExtraError first."""
    os.environ.update(environment(args))
    app_from_environment()  # refuse a bad configuration before binding the port
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingExtraError("proxy", "uvicorn") from exc
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_keep_alive=args.keep_alive,
        lifespan="on",
        # The client address UpstreamApp appends to X-Forwarded-For must be the TCP
        # peer's, as nginx's $proxy_add_x_forwarded_for; uvicorn would put the last
        # forwarded address there, and it would be appended twice.
        proxy_headers=False,
    )
