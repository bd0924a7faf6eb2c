"""Start an example server in a child process on a free loopback port, for end-to-end tests.

`run_server` is a context manager: it runs `sys.executable <args> --host 127.0.0.1
--port <free port>` from the repository root in its own process group, waits until
the port accepts connections, yields the base URL (``http://127.0.0.1:PORT``), and
kills the whole group on exit, so a server that spawned children cannot outlive
the test. The child's output goes to a temporary file whose tail is put into the
test failure when the server dies or never starts listening.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
"""Generous: it bounds a hang on a loaded machine, it does not measure start-up speed."""
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
OUTPUT_TAIL = 4000

SERVER_EXITED = "server exited with status {code} before listening on {host}:{port}"
SERVER_NOT_LISTENING = "server did not listen on {host}:{port} within {timeout:.0f} s"


def free_port(host: str = HOST) -> int:
    """A port the kernel just handed out on `host`, released so the child can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=POLL_INTERVAL * 4):
            return True
    except OSError:
        return False


def _tail(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-OUTPUT_TAIL:]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)
    with suppress(ProcessLookupError):  # the server's children may outlive it
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class ServerProcess:
    """A server started by :func:`server_process`: its base URL and its process."""

    url: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def output(self) -> str:
        """The tail of what the server printed so far."""
        return _tail(self.log)


@contextmanager
def run_server(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    start_timeout: float = START_TIMEOUT,
) -> Iterator[str]:
    """Run ``sys.executable *args --host 127.0.0.1 --port PORT``; yield ``http://127.0.0.1:PORT``.

    `args` starts with the script, relative to the repository root (for example
    ``["examples/05_conformance_server.py", "--no-middleware"]``); the script must
    accept ``--host`` and ``--port``. `env` is added to (and overrides) this
    process's environment.
    """
    with server_process(args, env, start_timeout=start_timeout) as server:
        yield server.url


@contextmanager
def server_process(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    start_timeout: float = START_TIMEOUT,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """As :func:`run_server`, yielding the process too (to signal it).

    ``port`` (default: a free one) lets a restarted server take its old address.
    """
    port = port or free_port()
    child_env = {**os.environ, **(env or {})}
    command = [sys.executable, *args, "--host", HOST, "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while not _listening(HOST, port):
                code = proc.poll()
                if code is not None:
                    message = SERVER_EXITED.format(code=code, host=HOST, port=port)
                    pytest.fail(f"{message}\n{_tail(log)}")
                if time.monotonic() > deadline:
                    message = SERVER_NOT_LISTENING.format(
                        host=HOST, port=port, timeout=start_timeout
                    )
                    pytest.fail(f"{message}\n{_tail(log)}")
                time.sleep(POLL_INTERVAL)
            yield ServerProcess(f"http://{HOST}:{port}", proc, log)
        finally:
            _stop(proc)
