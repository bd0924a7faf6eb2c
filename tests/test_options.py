"""SessionOptions: the middleware's keywords, checked once, read by settings and the proxy."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from mcp_session_mw import ConfigurationError, SessionMiddleware, SessionOptions
from mcp_session_mw.options import DEFAULTS, OPTIONS
from mcp_session_mw.proxy_cli import middleware_options


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Never called: these tests only build the middleware."""


def test_the_middleware_keywords_are_the_options_fields() -> None:
    parameters = inspect.signature(SessionMiddleware).parameters
    keywords = {name: p.default for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert next(iter(parameters)) == "app"
    assert keywords == DEFAULTS
    assert [field.name for field in OPTIONS] == list(keywords)


def test_the_proxy_flags_come_from_the_options() -> None:
    assert middleware_options() == list(DEFAULTS.items())


def test_the_middleware_keeps_the_options_it_was_given() -> None:
    middleware = SessionMiddleware(app, store="memory://", ttl=30, path="/rpc/")
    assert middleware.options == SessionOptions(store="memory://", ttl=30, path="/rpc/")
    assert middleware.path == "/rpc"


def test_options_are_frozen() -> None:
    options = SessionOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.ttl = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("ttl", 0, "ttl must be a positive"),
        ("mode", "sometimes", "mode must be one of auto, rehydrate, stateless"),
        ("path", "mcp", "path must start with '/'"),
        ("shutdown_grace_seconds", float("inf"), "shutdown_grace_seconds must be seconds"),
    ],
)
def test_a_bad_value_is_refused_by_the_options_and_the_middleware(
    option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SessionOptions(**{option: value})
    with pytest.raises(ConfigurationError, match=message):
        SessionMiddleware(app, store="memory://", **{option: value})
