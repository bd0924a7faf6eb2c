"""``mcp-session-mw keys …`` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

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
