"""SessionOptions: every SessionMiddleware option, with its default, checked once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, cast

from .errors import ConfigurationError
from .principal import PrincipalFn, default_principal

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .stores import Store

P = ParamSpec("P")
OptionsT = TypeVar("OptionsT")
S = TypeVar("S")

Mode = Literal["auto", "rehydrate", "stateless"]
MODES: tuple[str, ...] = ("auto", "rehydrate", "stateless")

DEFAULT_TTL = 3600.0
DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_LOCAL_SESSIONS = 1_000
DEFAULT_APP_SESSION_IDLE_TIMEOUT = 300.0
DEFAULT_INITIALIZE_TTL = 60.0
DEFAULT_FINISHED_STREAM_TTL = 60.0
"""Seconds a finished stream stays resumable: the SDK clients retry within a few seconds."""
DEFAULT_MAX_HEADER_SIZE = 8 * 1024
DEFAULT_SESSION_COUNT_INTERVAL = 5.0
DEFAULT_CLEANUP_INTERVAL = 300.0
DEFAULT_SHUTDOWN_GRACE = 10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """The keyword options of :class:`~mcp_session_mw.SessionMiddleware`.

    Each field is one keyword of the middleware, of ``SessionSettings`` (an
    ``MCP_SESSION_*`` variable) and of the proxy's flags, all read from here:
    a new option is one field below, with its check in ``__post_init__``.
    A value out of range raises :class:`ConfigurationError` when built.
    """

    store: Store | str | None = None
    ttl: float = DEFAULT_TTL
    touch_interval: float | None = None
    mode: Mode = "auto"
    path: str | None = "/mcp"
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    max_local_sessions: int = DEFAULT_MAX_LOCAL_SESSIONS
    app_session_idle_timeout: float | None = DEFAULT_APP_SESSION_IDLE_TIMEOUT
    principal: PrincipalFn | None = default_principal
    store_options: Mapping[str, Any] | None = None
    sse_retry_ms: int | None = 1000
    stream_lease: float = 10.0
    max_events_per_stream: int | None = 50_000
    max_streams_per_session: int | None = 100
    max_stream_seconds: float | None = None
    finished_stream_ttl: float | None = DEFAULT_FINISHED_STREAM_TTL
    initialize_ttl: float | None = DEFAULT_INITIALIZE_TTL
    max_sessions: int | None = None
    max_sessions_per_principal: int | None = None
    session_count_interval: float = DEFAULT_SESSION_COUNT_INTERVAL
    max_header_size: int | None = DEFAULT_MAX_HEADER_SIZE
    encryption_keys: Sequence[str | bytes] | None = dataclasses.field(default=None, repr=False)
    cleanup_interval: float | None = DEFAULT_CLEANUP_INTERVAL
    shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE

    def __post_init__(self) -> None:
        if not self.ttl > 0:
            raise ConfigurationError("ttl must be a positive number of seconds")
        if self.touch_interval is not None and self.touch_interval < 0:
            raise ConfigurationError("touch_interval must not be negative")
        if self.mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.max_body_size <= 0:
            raise ConfigurationError("max_body_size must be a positive number of bytes")
        if self.max_local_sessions <= 0:
            raise ConfigurationError("max_local_sessions must be positive")
        idle = self.app_session_idle_timeout
        if idle is not None and not (math.isfinite(idle) and idle > 0):
            raise ConfigurationError("app_session_idle_timeout must be positive seconds (or None)")
        if self.sse_retry_ms is not None and self.sse_retry_ms < 0:
            raise ConfigurationError("sse_retry_ms must not be negative")
        if not self.stream_lease > 0:
            raise ConfigurationError("stream_lease must be a positive number of seconds")
        if self.max_events_per_stream is not None and self.max_events_per_stream <= 0:
            raise ConfigurationError("max_events_per_stream must be positive (or None)")
        if self.max_streams_per_session is not None and self.max_streams_per_session <= 0:
            raise ConfigurationError("max_streams_per_session must be positive (or None)")
        if self.max_stream_seconds is not None and not self.max_stream_seconds > 0:
            raise ConfigurationError("max_stream_seconds must be positive (or None)")
        if self.finished_stream_ttl is not None and (
            isinstance(self.finished_stream_ttl, bool)
            or not isinstance(self.finished_stream_ttl, (int, float))
            or not self.finished_stream_ttl > 0
        ):
            raise ConfigurationError("finished_stream_ttl must be positive seconds (or None)")
        if self.path is not None and not self.path.startswith("/"):
            raise ConfigurationError("path must start with '/' (or be None for every path)")
        if self.initialize_ttl is not None and not self.initialize_ttl > 0:
            raise ConfigurationError("initialize_ttl must be positive (or None)")
        if self.max_sessions is not None and self.max_sessions <= 0:
            raise ConfigurationError("max_sessions must be positive (or None)")
        if self.max_sessions_per_principal is not None and self.max_sessions_per_principal <= 0:
            raise ConfigurationError("max_sessions_per_principal must be positive (or None)")
        if not self.session_count_interval > 0:
            raise ConfigurationError("session_count_interval must be a positive number of seconds")
        if self.max_header_size is not None and self.max_header_size <= 0:
            raise ConfigurationError("max_header_size must be a positive number of bytes (or None)")
        if self.cleanup_interval is not None and not self.cleanup_interval > 0:
            raise ConfigurationError("cleanup_interval must be positive seconds (or None)")
        grace = self.shutdown_grace_seconds
        if not (math.isfinite(grace) and grace >= 0):
            raise ConfigurationError("shutdown_grace_seconds must be seconds, 0 or more")


OPTIONS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(SessionOptions)
"""SessionOptions' fields, in order: what settings and the proxy's flags are made from."""

DEFAULTS: dict[str, Any] = {field.name: field.default for field in OPTIONS}
"""Each option's default."""


def keywords_of(
    options: Callable[P, OptionsT],
) -> Callable[[Callable[[S, ASGIApp, OptionsT], None]], Callable[Concatenate[S, ASGIApp, P], None]]:
    """An ``__init__(self, app, options)`` that callers call as ``(app, **options' keywords)``.

    Type checkers see every SessionOptions keyword, and ``inspect.signature``
    shows them, so the middleware's keywords are SessionOptions' fields alone.
    """

    def wrap(
        init: Callable[[S, ASGIApp, OptionsT], None],
    ) -> Callable[Concatenate[S, ASGIApp, P], None]:
        def from_keywords(self: S, app: ASGIApp, *args: P.args, **kwargs: P.kwargs) -> None:
            init(self, app, options(*args, **kwargs))

        functools.update_wrapper(from_keywords, init)

        own = list(inspect.signature(init).parameters.values())[:2]
        keywords = list(inspect.signature(options).parameters.values())
        from_keywords.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*own, *keywords], return_annotation=None
        )
        # Concatenate's parameters are positional-only to type checkers; at
        # run time ``app=`` works as before.
        return cast("Callable[Concatenate[S, ASGIApp, P], None]", from_keywords)

    return wrap
