"""Every SessionMiddleware option from ``MCP_SESSION_*`` environment variables.

Needs the ``settings`` extra (pydantic-settings). Without it the middleware
works as before and reads only ``MCP_SESSION_STORE_URL`` itself.

Each field is one :class:`~mcp_session_mw.options.SessionOptions` field (a
keyword option of :class:`SessionMiddleware`), with the same name except
``store_url`` (the ``store`` option given as a URL); a test fails when an
option has no field. Defaults are read from
SessionOptions, so the two cannot drift apart. Values the middleware refuses are
refused by it, when it is built, with its own messages; values pydantic cannot
parse (``MCP_SESSION_TTL=soon``) raise :class:`ConfigurationError` naming the
variable.

Conventions: ``none`` or ``null`` (any case) is ``None`` in an optional variable,
an empty variable counts as unset, ``MCP_SESSION_STORE_OPTIONS`` is a JSON
object, ``MCP_SESSION_ENCRYPTION_KEYS`` a JSON list or comma-separated keys,
and ``MCP_SESSION_PRINCIPAL`` names a function as ``package.module:function``.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from typing import Annotated, Any, Union, get_args, get_origin

from .errors import ConfigurationError, MissingExtraError
from .options import DEFAULTS, Mode

try:
    from pydantic import BeforeValidator, Field, ImportString, ValidationError, model_validator
    from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise MissingExtraError("settings", "pydantic_settings") from _exc

ENV_PREFIX = "MCP_SESSION_"
NONE_WORDS = frozenset({"none", "null"})

OPTION_FOR_FIELD: dict[str, str] = {"store_url": "store"}
"""Settings fields whose middleware option has another name."""

# Messages tests assert on.
MSG_BAD_SETTING = "{variable}: {problem}"
MSG_UNREADABLE = "cannot read the MCP_SESSION_* settings: {problem}"


def _default(option: str) -> Any:
    return DEFAULTS[option]


def _optional(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return (origin is Union or origin is types.UnionType) and type(None) in get_args(annotation)


def _keys(value: Any) -> Any:
    """``a,b`` or ``["a", "b"]`` from the environment; lists from Python pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class SessionSettings(BaseSettings):
    """SessionMiddleware's options, read from ``MCP_SESSION_<NAME>`` variables.

    ``SessionMiddleware.from_settings(app)`` reads them and builds the
    middleware; keyword arguments given there win over the environment.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="ignore",
        validate_default=False,
    )

    store_url: str | None = Field(
        default=None, description="store URL; the middleware's own default when unset"
    )
    store_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options for the store (a JSON object)"
    )
    ttl: float = _default("ttl")
    touch_interval: float | None = _default("touch_interval")
    mode: Mode = _default("mode")
    path: str | None = _default("path")
    max_body_size: int = _default("max_body_size")
    max_header_size: int | None = _default("max_header_size")
    max_local_sessions: int = _default("max_local_sessions")
    app_session_idle_timeout: float | None = _default("app_session_idle_timeout")
    principal: ImportString[Callable[..., Any]] | None = _default("principal")
    sse_retry_ms: int | None = _default("sse_retry_ms")
    stream_lease: float = _default("stream_lease")
    max_events_per_stream: int | None = _default("max_events_per_stream")
    max_streams_per_session: int | None = _default("max_streams_per_session")
    max_stream_seconds: float | None = _default("max_stream_seconds")
    finished_stream_ttl: float | None = _default("finished_stream_ttl")
    initialize_ttl: float | None = _default("initialize_ttl")
    max_sessions: int | None = _default("max_sessions")
    max_sessions_per_principal: int | None = _default("max_sessions_per_principal")
    session_count_interval: float = _default("session_count_interval")
    cleanup_interval: float | None = _default("cleanup_interval")
    shutdown_grace_seconds: float = _default("shutdown_grace_seconds")
    encryption_keys: Annotated[list[str] | None, NoDecode, BeforeValidator(_keys)] = Field(
        default=None, repr=False
    )

    @model_validator(mode="before")
    @classmethod
    def _none_words(cls, data: Any) -> Any:
        """``none`` or ``null``, in any case, is None for an optional setting."""
        if not isinstance(data, dict):
            return data
        cleaned = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if (
                field is not None
                and isinstance(value, str)
                and value.strip().lower() in NONE_WORDS
                and _optional(field.annotation)
            ):
                cleaned[name] = None
        return cleaned

    def __init__(self, **values: Any) -> None:
        """As BaseSettings, but a value that cannot be parsed is a ConfigurationError."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = "; ".join(
                MSG_BAD_SETTING.format(
                    variable=ENV_PREFIX + ".".join(str(part) for part in error["loc"]).upper(),
                    problem=error["msg"],
                )
                for error in exc.errors()
            )
            raise ConfigurationError(MSG_UNREADABLE.format(problem=problems)) from exc
        except (SettingsError, ValueError) as exc:
            raise ConfigurationError(MSG_UNREADABLE.format(problem=exc)) from exc

    def middleware_options(self) -> dict[str, Any]:
        """These settings as SessionMiddleware keyword arguments."""
        options: dict[str, Any] = {}
        for field in type(self).model_fields:
            options[OPTION_FOR_FIELD.get(field, field)] = getattr(self, field)
        if not options["store_options"]:
            options["store_options"] = None  # a store object may come as an override
        return options


__all__ = ["ENV_PREFIX", "SessionSettings"]
