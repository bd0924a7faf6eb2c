"""SessionSettings: every SessionMiddleware option from MCP_SESSION_* variables."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.types import Receive, Scope, Send

from mcp_session_mw import ConfigurationError, MemoryStore, SessionMiddleware
from mcp_session_mw.settings import ENV_PREFIX, OPTION_FOR_FIELD, SessionSettings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Never called: these tests only build the middleware."""


def fixed_principal(scope: Scope) -> str | None:
    return "fixed"


def options() -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(SessionMiddleware.__init__).parameters
    return {name: p for name, p in parameters.items() if name not in ("self", "app")}


def option_of(field: str) -> str:
    return OPTION_FOR_FIELD.get(field, field)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# -- coverage ---------------------------------------------------------------------------


def test_every_middleware_option_has_a_setting() -> None:
    covered = {option_of(field) for field in SessionSettings.model_fields}
    missing = sorted(set(options()) - covered)
    assert missing == [], f"SessionMiddleware options without a setting: {missing}"


def test_every_setting_is_a_middleware_option() -> None:
    unknown = sorted(
        field for field in SessionSettings.model_fields if option_of(field) not in options()
    )
    assert unknown == []


def test_defaults_are_the_middleware_defaults() -> None:
    settings = SessionSettings()
    built = settings.middleware_options()
    for name, parameter in options().items():
        assert built[name] == parameter.default, name


def test_docs_table_lists_every_variable_once() -> None:
    text = DOCS.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `MCP_SESSION_")]
    documented = [row.split("`")[1] for row in rows]
    expected = [f"{ENV_PREFIX}{field.upper()}" for field in SessionSettings.model_fields]
    assert sorted(documented) == sorted(expected)


# -- environment to middleware -------------------------------------------------------------


def test_environment_reaches_the_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MCP_SESSION_STORE_URL": "memory://",
        "MCP_SESSION_TTL": "120",
        "MCP_SESSION_TOUCH_INTERVAL": "7.5",
        "mcp_session_mode": "stateless",  # names are case-insensitive
        "MCP_SESSION_PATH": "None",
        "MCP_SESSION_MAX_BODY_SIZE": "1024",
        "MCP_SESSION_PRINCIPAL": "tests.test_settings:fixed_principal",
        "MCP_SESSION_SSE_RETRY_MS": "null",
        "MCP_SESSION_STREAM_LEASE": "3",
        "MCP_SESSION_MAX_EVENTS_PER_STREAM": "NONE",
        "MCP_SESSION_MAX_STREAM_SECONDS": "30",
        "MCP_SESSION_INITIALIZE_TTL": "none",
        "MCP_SESSION_MAX_SESSIONS": "500",
        "MCP_SESSION_MAX_SESSIONS_PER_PRINCIPAL": "5",
        "MCP_SESSION_MAX_HEADER_SIZE": "",  # empty counts as unset
        "MCP_SESSION_MAX_LOCAL_SESSIONS": "20",
        "MCP_SESSION_APP_SESSION_IDLE_TIMEOUT": "none",
    }.items():
        monkeypatch.setenv(name, value)
    middleware = SessionMiddleware.from_settings(app)
    assert isinstance(middleware.store, MemoryStore)
    assert middleware.ttl == 120
    assert middleware.touch_interval == 7.5
    assert middleware.mode == "stateless"
    assert middleware.path is None
    assert middleware.max_body_size == 1024
    assert middleware.principal is fixed_principal
    assert middleware.streams.retry_ms is None
    assert middleware.streams.lease_seconds == 3
    assert middleware.streams.max_events_per_stream is None
    assert middleware.streams.max_stream_seconds == 30
    assert middleware._locals.capacity == 20
    assert middleware.app_session_idle_timeout is None
    settings = SessionSettings()
    assert settings.initialize_ttl is None
    assert settings.max_sessions == 500
    assert settings.max_sessions_per_principal == 5
    assert settings.max_header_size == options()["max_header_size"].default


def test_store_url_and_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("aiosqlite")
    monkeypatch.setenv("MCP_SESSION_STORE_URL", f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    monkeypatch.setenv("MCP_SESSION_STORE_OPTIONS", '{"table_prefix": "cfg_", "poll_interval": 1}')
    middleware = SessionMiddleware.from_settings(app)
    assert middleware.store.table_prefix == "cfg_"  # type: ignore[attr-defined]
    assert middleware.store.poll_interval == 1


def test_overrides_and_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SESSION_TTL", "120")
    monkeypatch.setenv("MCP_SESSION_MODE", "stateless")
    store = MemoryStore()
    middleware = SessionMiddleware.from_settings(app, store=store, ttl=5)
    assert middleware.store is store
    assert middleware.ttl == 5
    assert middleware.mode == "stateless"
    explicit = SessionSettings(ttl=9, store_url="memory://")
    middleware = SessionMiddleware.from_settings(app, explicit)
    assert middleware.ttl == 9
    assert middleware.mode == "stateless"  # the environment still fills the rest


def test_principal_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SESSION_PRINCIPAL", "none")
    middleware = SessionMiddleware.from_settings(app, store="memory://")
    assert middleware.principal is None


def test_encryption_keys_list_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SESSION_ENCRYPTION_KEYS", "k1, k2,k3")
    assert SessionSettings().encryption_keys == ["k1", "k2", "k3"]
    monkeypatch.setenv("MCP_SESSION_ENCRYPTION_KEYS", '["k1", "k2"]')
    assert SessionSettings().encryption_keys == ["k1", "k2"]
    assert "k1" not in repr(SessionSettings())
    if importlib.util.find_spec("cryptography") is None:
        pytest.skip("the encryption extra (cryptography) is not installed")
    from cryptography.fernet import Fernet

    from mcp_session_mw.encryption import EncryptedStore

    monkeypatch.setenv("MCP_SESSION_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    middleware = SessionMiddleware.from_settings(app, store="memory://")
    assert isinstance(middleware.store, EncryptedStore)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MCP_SESSION_TTL", "soon", "MCP_SESSION_TTL: Input should be a valid number"),
        ("MCP_SESSION_MODE", "sometimes", "MCP_SESSION_MODE: Input should be 'auto'"),
        ("MCP_SESSION_MAX_SESSIONS", "many", "MCP_SESSION_MAX_SESSIONS:"),
        ("MCP_SESSION_PRINCIPAL", "no.such.module:f", "MCP_SESSION_PRINCIPAL:"),
        ("MCP_SESSION_STORE_OPTIONS", "{not json", "store_options"),
        ("MCP_SESSION_STORE_OPTIONS", "[1, 2]", "MCP_SESSION_STORE_OPTIONS:"),
    ],
)
def test_unparseable_values_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="cannot read the MCP_SESSION_") as caught:
        SessionSettings()
    assert message in str(caught.value)


def test_values_the_middleware_refuses_are_refused_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SESSION_TTL", "-1")
    with pytest.raises(ConfigurationError, match="ttl must be a positive number"):
        SessionMiddleware.from_settings(app, store="memory://")


# -- without the extra ------------------------------------------------------------------------


def test_middleware_works_without_pydantic_settings(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['pydantic_settings'] = None\n"
        "from mcp_session_mw import MemoryStore, MissingExtraError, SessionMiddleware\n"
        "async def app(scope, receive, send): pass\n"
        "middleware = SessionMiddleware(app)\n"
        "assert isinstance(middleware.store, MemoryStore), middleware.store\n"
        "try:\n"
        "    SessionMiddleware.from_settings(app)\n"
        "except MissingExtraError as exc:\n"
        "    assert exc.extra == 'settings', exc.extra\n"
        "    print('ok:', exc)\n"
        "else:\n"
        "    raise SystemExit('from_settings worked without pydantic-settings')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env["MCP_SESSION_STORE_URL"] = "memory://"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'mcp-session-mw[settings]'" in done.stdout


@pytest.mark.parametrize("value", [0, -1.0, "soon", True])
def test_finished_stream_ttl_must_be_positive(value: object) -> None:
    with pytest.raises(ConfigurationError, match="finished_stream_ttl must be positive"):
        SessionMiddleware(app, store="memory://", finished_stream_ttl=value)  # type: ignore[arg-type]


def test_finished_stream_ttl_reaches_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SESSION_FINISHED_STREAM_TTL", "7.5")
    middleware = SessionMiddleware.from_settings(app, store="memory://")
    assert middleware.store.finished_stream_ttl == 7.5
    assert SessionMiddleware(app, store="memory://").store.finished_stream_ttl == 60.0
