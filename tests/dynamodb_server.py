"""A private DynamoDB-compatible server for tests: moto's server on loopback.

Started by the first test that asks for it (on a free port), stopped when the
interpreter exits. It is moto's own server application (what ``moto_server``
runs) with one change, made by running this module as a script: requests are
handled one at a time. moto's threaded server checks a ConditionExpression and
then writes, unlocked, so two concurrent conditional writes could both pass
(3 of 50 concurrent compare-and-swap increments were lost in one run here);
DynamoDB makes every single-item write atomic, and serial handling gives the
store under test that guarantee. Credentials and region are fake ones set in the
environment, so the store and every server process a test starts find them
through the standard AWS chain.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from .redis_cluster import free_port
from .services import unavailable

START_TIMEOUT = 30.0
REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parent.parent
NO_MOTO = "moto's server is not installed (pip install 'moto[server]', in the test extra)"
NOT_STARTED = "moto_server did not answer on loopback"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}

_lock = threading.Lock()
_endpoint: str | None = None


def _check_moto() -> None:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        unavailable(NO_MOTO)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def endpoint() -> str:
    """The loopback URL of the test DynamoDB server, started on first call."""
    global _endpoint
    with _lock:
        if _endpoint is not None:
            return _endpoint
        _check_moto()
        os.environ.update(FAKE_AWS_ENV)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed at exit, with the server
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.dynamodb_server", "127.0.0.1", str(port)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(_stop, proc, log)
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                unavailable(f"{NOT_STARTED}: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.1)
        _endpoint = url
        return url


CALL_BOUNDS = "&call_timeout=30&read_timeout=20"
"""Generous: the server handles one request at a time on two shared cores, and a test
that starts 50 concurrent compare-and-swap updates queues them all on it."""


def store_url(table: str, *, create_table: bool = True) -> str:
    flag = "&create_table=true" if create_table else ""
    return f"dynamodb:///{table}?region={REGION}&endpoint_url={endpoint()}{flag}{CALL_BOUNDS}"


def _stop(proc: subprocess.Popen[bytes], log: object) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    close = getattr(log, "close", None)
    if close is not None:
        close()


@contextmanager
def dynamodb_table(prefix: str = "e2e") -> Iterator[str]:
    """The URL of a table of its own (made on first use by whoever opens it), dropped after."""
    url = store_url(f"{prefix}-{uuid.uuid4().hex[:10]}")
    try:
        yield url
    finally:
        anyio.run(_drop, url)


async def _drop(url: str) -> None:
    from mcp_session_mw import create_store

    store = create_store(url)
    try:
        await store.drop_table()  # type: ignore[attr-defined]
    finally:
        await store.close()


def serve(host: str, port: int) -> None:
    """moto's server application, one request at a time (see the module docstring)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serial(environ: dict[str, object], start_response: Any) -> list[bytes]:
        with one_at_a_time:
            return list(app(environ, start_response))

    run_simple(host, port, serial, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
