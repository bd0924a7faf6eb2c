"""The ``mcp-session-mw`` command, run as a real process against real stores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from mcp_session_mw import SessionRecord, create_store
from mcp_session_mw.cli import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_STORE_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    MSG_BAD_OPTIONS_ENV,
    MSG_NOT_FOUND,
    MSG_NOT_SQL,
    MSG_PREFIX_NOT_SQL,
)
from mcp_session_mw.stores import Store
from mcp_session_mw.stores.dynamodb.upgrade import MSG_CREATED

from .dynamodb_server import FAKE_AWS_ENV
from .dynamodb_server import store_url as dynamodb_url
from .services import MARIADB_URL, POSTGRES_URL, REDIS_URL, need_service, unavailable

SCRIPT = Path(sys.executable).with_name("mcp-session-mw")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def run_cli(*args: str, env: dict[str, str] | None = None, script: bool = False) -> Result:
    """Run the command in a fresh process, with no MCP_SESSION_* variables but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
    clean.update(env or {})
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "mcp_session_mw.cli"]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, env=clean, timeout=120, check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)


def record(
    ttl: float = 60.0, client: str = "cli-test", version: str = "2025-11-25"
) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key="",
        protocol_version=version,
        client_info={"name": client, "version": "1.0"},
        created_at=now,
        last_accessed=now,
        expires_at=now + ttl,
        ttl=ttl,
        state={"note": "héllo"},
    )


def seed(url: str, options: dict[str, object], sessions: dict[str, SessionRecord]) -> None:
    async def go() -> None:
        store = create_store(url, **options)
        async with store:
            for session_id, rec in sessions.items():
                await store.create(session_id, rec)

    anyio.run(go)


def keys_of(url: str, options: dict[str, object], *session_ids: str) -> list[str]:
    store = create_store(url, **options)
    return [store.key(s) for s in session_ids]


def wipe(url: str, options: dict[str, object]) -> None:
    async def go() -> None:
        store: Store = create_store(url, **options)
        try:
            if hasattr(store, "drop_schema"):
                await store.drop_schema()
            elif hasattr(store, "drop_table"):
                await store.drop_table()
            else:
                await store.purge()  # type: ignore[attr-defined]
        finally:
            await store.close()

    anyio.run(go)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"


# -- sessions on SQLite ------------------------------------------------------------------


def test_list_show_delete_never_print_raw_ids(sqlite_url: str) -> None:
    ids = [f"raw-id-{n}-{uuid.uuid4().hex}" for n in range(3)]
    seed(sqlite_url, {}, {i: record() for i in ids})
    keys = keys_of(sqlite_url, {}, *ids)

    listed = run_cli("sessions", "list", "--store", sqlite_url, "--json")
    assert listed.code == EXIT_OK, listed.err
    body = listed.json()
    assert isinstance(body, dict)
    assert sorted(s["key"] for s in body["sessions"]) == sorted(keys)
    assert body["next_cursor"] is None
    human = run_cli("sessions", "list", "--store", sqlite_url)
    assert human.code == EXIT_OK
    assert human.out.splitlines()[0].split()[:3] == ["KEY", "PROTOCOL", "CLIENT"]
    assert all(k in human.out for k in keys)
    stats = run_cli("sessions", "stats", "--store", sqlite_url)
    shown = run_cli("sessions", "show", keys[0], "--store", sqlite_url)
    for output in (listed.out, human.out, stats.out, shown.out):
        assert not any(i in output for i in ids)

    assert shown.code == EXIT_OK
    assert "héllo" in shown.out
    assert keys[0] in shown.out
    by_id = run_cli("sessions", "show", ids[0], "--store", sqlite_url, "--json").json()
    assert isinstance(by_id, dict)
    assert by_id["key"] == keys[0]
    assert by_id["state"] == {"note": "héllo"}
    assert by_id["client_info"] == {"name": "cli-test", "version": "1.0"}

    assert run_cli("sessions", "delete", ids[0], "--store", sqlite_url).code == EXIT_OK
    gone = run_cli("sessions", "show", keys[0], "--store", sqlite_url)
    assert gone.code == EXIT_NOT_FOUND
    assert MSG_NOT_FOUND in gone.err
    deleted = run_cli("sessions", "delete", keys[1], "--store", sqlite_url, "--json")
    assert deleted.json() == {"deleted": True, "key": keys[1]}
    again = run_cli("sessions", "delete", keys[1], "--store", sqlite_url)
    assert again.code == EXIT_NOT_FOUND
    left = run_cli("sessions", "list", "--store", sqlite_url, "--json").json()
    assert isinstance(left, dict)
    assert [s["key"] for s in left["sessions"]] == [keys[2]]


def test_list_pages(sqlite_url: str) -> None:
    ids = [f"page-{n}" for n in range(5)]
    seed(sqlite_url, {}, {i: record() for i in ids})
    first = run_cli("sessions", "list", "--store", sqlite_url, "--limit", "2", "--json").json()
    assert isinstance(first, dict)
    assert len(first["sessions"]) == 2
    assert first["next_cursor"] is not None
    second = run_cli(
        "sessions", "list", "--store", sqlite_url, "--limit", "2", "--cursor", first["next_cursor"]
    )
    assert second.code == EXIT_OK
    assert "--cursor " in second.out
    everything = run_cli(
        "sessions", "list", "--store", sqlite_url, "--limit", "2", "--all", "--json"
    )
    body = everything.json()
    assert isinstance(body, dict)
    assert sorted(s["key"] for s in body["sessions"]) == sorted(keys_of(sqlite_url, {}, *ids))
    assert body["next_cursor"] is None


def test_purge_expired_and_stats(sqlite_url: str) -> None:
    seed(
        sqlite_url,
        {},
        {
            "live-a": record(client="alpha"),
            "live-b": record(client="alpha", version="2025-06-18"),
            "live-c": record(client="beta"),
            "dying-1": record(ttl=0.2),
            "dying-2": record(ttl=0.2),
        },
    )
    time.sleep(0.4)
    stats = run_cli("sessions", "stats", "--store", sqlite_url, "--json").json()
    assert isinstance(stats, dict)
    assert stats["active"] == 3
    assert stats["clients"] == {"alpha": 2, "beta": 1}
    assert stats["protocol_versions"] == {"2025-11-25": 2, "2025-06-18": 1}
    assert stats["with_principal"] == 0
    human = run_cli("sessions", "stats", "--store", sqlite_url)
    assert "active sessions   3" in human.out
    purged = run_cli("sessions", "purge-expired", "--store", sqlite_url, "--json")
    assert purged.json() == {"removed": 2}
    assert "removed 0 expired" in run_cli("sessions", "purge-expired", "--store", sqlite_url).out


def test_store_from_environment_and_options(sqlite_url: str) -> None:
    options: dict[str, object] = {"table_prefix": "envcli_", "secret": "s3cret"}
    seed(sqlite_url, options, {"env-id": record()})
    env = {"MCP_SESSION_STORE_URL": sqlite_url}
    # Without the secret the raw id hashes to another key.
    plain = run_cli("sessions", "show", "env-id", "--table-prefix", "envcli_", env=env)
    assert plain.code == EXIT_NOT_FOUND
    with_option = run_cli(
        "sessions", "show", "env-id", "--table-prefix", "envcli_",
        "--store-option", "secret=s3cret", env=env,
    )  # fmt: skip
    assert with_option.code == EXIT_OK, with_option.err
    env["MCP_SESSION_STORE_OPTIONS"] = json.dumps(options)
    assert run_cli("sessions", "show", "env-id", env=env).code == EXIT_OK
    bad = run_cli("sessions", "list", env={**env, "MCP_SESSION_STORE_OPTIONS": "[1]"})
    assert bad.code == EXIT_USAGE
    assert MSG_BAD_OPTIONS_ENV in bad.err


def test_installed_console_script(sqlite_url: str) -> None:
    if not SCRIPT.exists():
        unavailable("the mcp-session-mw console script is not installed in this environment")
    result = run_cli("sessions", "stats", "--store", sqlite_url, "--json", script=True)
    assert result.code == EXIT_OK, result.err
    assert result.json() == {
        "active": 0,
        "with_principal": 0,
        "protocol_versions": {},
        "clients": {},
        "oldest_created_at": None,
        "next_expiry": None,
    }


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sessions", "list", "--store", "not a url"], "not a store URL"),
        (["sessions", "list", "--store", "nosuch://x"], "unknown store scheme 'nosuch'"),
        (["sessions", "list", "--store", "redis://127.0.0.1:1/0", "--table-prefix", "p_"],
         MSG_PREFIX_NOT_SQL),
        (["db", "upgrade", "--store", "memory://"], MSG_NOT_SQL),
        (["sessions", "list", "--store", "memory://", "--store-option", "nope=1"],
         "does not take the options given: nope"),
        (["sessions", "list", "--store", "memory://", "--store-option", "novalue"],
         "NAME=VALUE"),
        (["sessions", "list", "--limit", "0"], "positive integer"),
        (["sessions"], "required"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.code == EXIT_USAGE
    assert message in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:{port}/test",
        "mysql+asyncmy://root@127.0.0.1:{port}/test",
        "redis://127.0.0.1:{port}/0",
        "dynamodb:///sessions?region=us-east-1&endpoint_url=http://127.0.0.1:{port}",
    ],
)
def test_unreachable_store_exits_3(url: str) -> None:
    result = run_cli("sessions", "list", "--store", url.format(port=free_port()), env=FAKE_AWS_ENV)
    assert result.code == EXIT_UNREACHABLE
    assert "cannot be reached" in result.err
    assert "Traceback" not in result.err


def test_unknown_session_exits_4(sqlite_url: str) -> None:
    for target in ("never-minted", "0" * 64, "not a valid id at all \u00e9"):
        result = run_cli("sessions", "show", target, "--store", sqlite_url)
        assert result.code == EXIT_NOT_FOUND, (target, result.err)
        assert run_cli("sessions", "delete", target, "--store", sqlite_url).code == EXIT_NOT_FOUND


# -- every shared backend ----------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param(("postgresql", POSTGRES_URL), marks=pytest.mark.postgresql, id="postgresql"),
        pytest.param(("mariadb", MARIADB_URL), marks=pytest.mark.mariadb, id="mariadb"),
        pytest.param(("redis", REDIS_URL), marks=pytest.mark.redis, id="redis"),
        pytest.param(("dynamodb", ""), marks=pytest.mark.dynamodb, id="dynamodb"),
    ]
)
def shared_store(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str]]]:
    """A server URL, the CLI options naming a private namespace, cleaned up afterwards."""
    service, url = request.param
    namespace = uuid.uuid4().hex[:10]
    if service == "dynamodb":  # a table of its own, made on first use
        url = dynamodb_url(f"cli-{namespace}")
        options: dict[str, object] = {}
        flags: list[str] = []
    else:
        need_service(service)
    if service == "redis":
        options = {"prefix": f"test:cli{namespace}:"}
        flags = ["--store-option", f"prefix=test:cli{namespace}:"]
    elif service != "dynamodb":
        options = {"table_prefix": f"cli{namespace}_"}
        flags = ["--table-prefix", f"cli{namespace}_"]
    seed(url, options, {"shared-a": record(), "shared-b": record(), "shared-x": record(ttl=0.2)})
    try:
        yield url, flags
    finally:
        wipe(url, options)


def test_commands_on_shared_backends(shared_store: tuple[str, list[str]]) -> None:
    url, flags = shared_store
    common = ["--store", url, *flags]
    time.sleep(0.4)
    listed = run_cli("sessions", "list", *common, "--json")
    assert listed.code == EXIT_OK, listed.err
    body = listed.json()
    assert isinstance(body, dict)
    keys = [s["key"] for s in body["sessions"]]
    assert len(keys) == 2
    assert "shared-a" not in listed.out
    shown = run_cli("sessions", "show", "shared-a", *common, "--json").json()
    assert isinstance(shown, dict)
    assert shown["key"] in keys
    assert run_cli("sessions", "delete", shown["key"], *common).code == EXIT_OK
    assert run_cli("sessions", "show", "shared-a", *common).code == EXIT_NOT_FOUND
    stats = run_cli("sessions", "stats", *common, "--json").json()
    assert isinstance(stats, dict)
    assert stats["active"] == 1
    purged = run_cli("sessions", "purge-expired", *common, "--json").json()
    assert isinstance(purged, dict)
    assert purged["removed"] in (0, 1)  # Redis may already have expired it natively


@pytest.mark.dynamodb
def test_db_upgrade_creates_the_dynamodb_table() -> None:
    table = f"cli-up-{uuid.uuid4().hex[:10]}"
    url = dynamodb_url(table, create_table=False)
    missing = run_cli("sessions", "list", "--store", url)
    assert missing.code == EXIT_STORE_FAILED
    assert "db upgrade" in missing.err
    try:
        made = run_cli("db", "upgrade", "--store", url)
        assert made.code == EXIT_OK, made.err
        assert made.out.strip() == MSG_CREATED.format(table=table, ttl="e")
        again = run_cli("db", "upgrade", "--store", url, "--json")
        assert again.code == EXIT_OK, again.err
        assert again.json() == {"table": table, "created": False, "ttl_attribute": "e"}
        seed(url, {}, {"upgraded": record()})
        listed = run_cli("sessions", "list", "--store", url, "--json").json()
        assert isinstance(listed, dict)
        assert len(listed["sessions"]) == 1
    finally:
        wipe(url, {})
