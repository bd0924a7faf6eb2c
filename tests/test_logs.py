"""Log records carry the session fingerprint (never the raw id), "-" outside a session."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

import mcp_session_mw
from mcp_session_mw import MemoryStore, SessionMiddleware, StoreUnavailableError
from mcp_session_mw.logs import (
    LOG_FORMAT,
    MAX_DETAIL,
    NO_SESSION,
    PACKAGE_LOGGERS,
    SESSION_FINGERPRINT_ATTR,
    FailureLog,
    SessionFingerprintFilter,
    describe,
    fingerprint_of,
    log_failure,
)

from .asgi_lifespan import BASE_URL, RawMCP

pytestmark = pytest.mark.anyio

APP_LOGGER = "tests.test_logs.tool"


def build_app() -> Starlette:
    server = MCPServer("logs")

    @server.tool()
    async def shout() -> str:
        """Logs through the application's own logger, inside the session's request."""
        logging.getLogger(APP_LOGGER).warning("tool ran")
        return "ok"

    return server.streamable_http_app()


@asynccontextmanager
async def client_for(middleware: SessionMiddleware, app: Starlette) -> AsyncIterator[RawMCP]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield RawMCP(client, f"{BASE_URL}/mcp")


def fingerprints(records: list[logging.LogRecord]) -> set[str]:
    return {getattr(r, SESSION_FINGERPRINT_ATTR) for r in records}


async def test_middleware_records_carry_the_fingerprint_not_the_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(SessionFingerprintFilter())  # for the app's own records
    store = MemoryStore()
    first_app, second_app = build_app(), build_app()
    first = SessionMiddleware(first_app, store=store)
    second = SessionMiddleware(second_app, store=store)  # another "process"
    async with client_for(first, first_app) as one:
        await one.initialize()
        assert one.session_id is not None
        session_id = one.session_id
        expected = fingerprint_of(store.key(session_id))
        async with client_for(second, second_app) as two:
            two.session_id = session_id
            caplog.clear()
            await two.call_tool("shout")  # re-created in the second app: it logs that
    ours = [r for r in caplog.records if r.name.startswith("mcp_session_mw")]
    assert any("re-created session" in r.getMessage() for r in ours)
    assert fingerprints(ours) == {expected}
    tool = [r for r in caplog.records if r.name == APP_LOGGER]
    assert fingerprints(tool) == {expected}  # the context follows into tool handlers
    for r in caplog.records:
        assert session_id not in r.getMessage()
        assert session_id not in str(vars(r))


async def test_outside_a_session_the_fingerprint_is_a_dash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = build_app()
    async with client_for(SessionMiddleware(app, store="memory://"), app) as client:
        await client.initialize()
        await client.call_tool("shout")
    logging.getLogger("mcp_session_mw").warning("after the requests")
    (after,) = [r for r in caplog.records if r.getMessage() == "after the requests"]
    assert getattr(after, SESSION_FINGERPRINT_ATTR) == NO_SESSION


def test_filter_and_format_on_a_handler_for_any_logger() -> None:
    """The documented set-up: a handler with the filter formats every library's records."""
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "hello", None, None)
    assert SessionFingerprintFilter().filter(record) is True
    line = logging.Formatter(LOG_FORMAT).format(record)
    assert line.endswith("uvicorn.error [session -] hello")
    marked = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    setattr(marked, SESSION_FINGERPRINT_ATTR, "abc")
    SessionFingerprintFilter().filter(marked)
    assert getattr(marked, SESSION_FINGERPRINT_ATTR) == "abc"  # set where it was logged: kept


def test_every_package_logger_has_the_filter() -> None:
    """A module that logs through a logger not in PACKAGE_LOGGERS would miss the attribute."""
    for info in pkgutil.walk_packages(mcp_session_mw.__path__, "mcp_session_mw."):
        if ".migrations." in info.name or info.name.endswith(".__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue  # an optional driver this environment lacks
        for value in vars(module).values():
            if isinstance(value, logging.Logger) and value.name.startswith("mcp_session_mw"):
                assert value.name in PACKAGE_LOGGERS, info.name
                assert any(isinstance(f, SessionFingerprintFilter) for f in value.filters)


# -- failures: one line each, repeats counted -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def store_down() -> StoreUnavailableError:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as cause:
            raise StoreUnavailableError("the session store cannot be reached") from cause
    except StoreUnavailableError as exc:
        return exc


def test_a_failure_is_one_line_with_its_type_and_message_and_repeats_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_session_mw")
    logger = logging.getLogger("mcp_session_mw")
    clock = Clock()
    log = FailureLog(interval=10.0, clock=clock)
    for _ in range(5):
        log(logger, "could not store %s", "events", exc=store_down())
        clock.now += 1.0
    log(logger, "could not renew a lease", exc=store_down())  # another kind: its own line
    clock.now += 6.0  # 11 s after the first line
    log(logger, "could not store %s", "events", exc=store_down())
    lines = [r.getMessage() for r in caplog.records]
    cause = (
        "StoreUnavailableError: the session store cannot be reached "
        "(from ConnectionRefusedError: [Errno 111] Connection refused)"
    )
    assert lines == [
        f"could not store events: {cause}",
        f"could not renew a lease: {cause}",
        f"could not store events: {cause} (4 more like it not logged)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)


def test_tracebacks_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mcp_session_mw")
    logger = logging.getLogger("mcp_session_mw")
    log = FailureLog(interval=10.0, clock=Clock())
    for _ in range(3):
        try:
            raise store_down()
        except StoreUnavailableError:
            log(logger, "could not open a stream")  # the exception being handled
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(debug) == 3, "every failure's traceback at DEBUG, repeats too"
    assert all(r.exc_info is not None and r.exc_info[0] is StoreUnavailableError for r in debug)
    assert [r.exc_info for r in warning] == [None]


def test_describe_keeps_a_long_message_to_one_short_line() -> None:
    text = describe(ValueError("a\nb " + "x" * 1000))
    assert "\n" not in text
    assert text.startswith("ValueError: a b xxx")
    assert len(text) == MAX_DETAIL
    assert describe(RuntimeError()) == "RuntimeError"


async def test_an_unreachable_store_logs_one_line_for_many_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_session_mw")
    log_failure.reset()
    app = build_app()
    unreachable = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    middleware = SessionMiddleware(app, store=unreachable)
    async with client_for(middleware, app) as client:
        client.session_id = "A" * 43
        statuses = [
            (await client.post({"jsonrpc": "2.0", "id": i, "method": "tools/list"})).status_code
            for i in range(5)
        ]
    assert statuses == [503] * 5
    failures = [r for r in caplog.records if r.getMessage().startswith("session store unavailable")]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert failures[0].exc_info is None
    assert "Error" in failures[0].getMessage()
