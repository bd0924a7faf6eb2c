"""``mcp-session-mw keys …`` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from mcp_session_mw.cli import EXIT_OK, EXIT_USAGE, main


def keys(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    status = main(["keys", *args, "--store", url])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_key_ring_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    status, out, _ = keys(capsys, url, "generate")
    assert status == EXIT_OK
    first = out.split()[0]
    assert "primary" in out
    status, out, err = keys(capsys, url, "rotate")
    assert status == EXIT_USAGE
    assert "no staged key" in err
    status, out, _ = keys(capsys, url, "generate")
    second = out.split()[0]
    assert "staged" in out
    assert keys(capsys, url, "rotate")[0] == EXIT_OK
    status, out, _ = keys(capsys, url, "list", "--json")
    rows = json.loads(out)
    assert [(r["id"], r["role"]) for r in rows] == [(second, "primary"), (first, "retiring")]
    assert all("secret" not in row for row in rows)
    status, _, err = keys(capsys, url, "retire", second)
    assert status == EXIT_USAGE
    assert "primary" in err
    status, out, _ = keys(capsys, url, "retire", first)
    assert status == EXIT_OK
    assert first not in out
    assert second in out


def test_the_ring_of_an_encrypted_store_is_encrypted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_session_mw.encryption import generate_key as encryption_key
    from mcp_session_mw.modern.keyring import RING_ID
    from mcp_session_mw.stores import create_store

    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    key = encryption_key()
    status, out, _ = keys(capsys, url, "generate", "--encryption-key", key)
    assert status == EXIT_OK
    key_id = out.split()[0]
    status, out, _ = keys(capsys, url, "list", "--encryption-key", key)
    assert out.split()[:2] == [key_id, "primary"]

    async def raw_state() -> str:
        store = create_store(url)
        await store.open()
        try:
            record = await store.load(RING_ID)
        finally:
            await store.close()
        assert record is not None
        return json.dumps(record.state)

    stored = anyio.run(raw_state)
    assert key_id not in stored
    assert "secret" not in stored
