"""A DynamoDB endpoint for the benchmarks: ``$MCP_SESSION_MW_BENCH_DYNAMODB_URL``, else moto.

With the variable set (``dynamodb:///TABLE?region=…``, a real table or a local
server) that is used; otherwise moto's server is started on a free loopback
port the way the tests start it (``python -m tests.dynamodb_server``: requests
one at a time, so conditional writes are atomic as on DynamoDB), with fake
credentials in the environment, and stopped at exit.
moto is an emulator written in Python: its request rates say how the
middleware behaves around the store, not how fast DynamoDB is.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

URL_ENV = "MCP_SESSION_MW_BENCH_DYNAMODB_URL"
REGION = "us-east-1"
_endpoint: list[str] = []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _moto() -> str:
    if _endpoint:
        return _endpoint[0]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.dynamodb_server", "127.0.0.1", str(port)],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(proc.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    _endpoint.append(url)
    return url


def dynamodb_url() -> str:
    """A store URL on a fresh table (created on first use)."""
    given = os.environ.get(URL_ENV)
    if given:
        return given
    table = f"bench-{secrets.token_hex(4)}"
    return f"dynamodb:///{table}?region={REGION}&endpoint_url={_moto()}&create_table=true"
