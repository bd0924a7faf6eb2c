"""Child processes of the harness: start on a fixed loopback port, signal, restart, clean up.

Every child runs in a process group of its own (so a signal reaches whatever it
spawned) with its output appended to a log file in the cluster's temporary
directory; the tail of that log goes into the error when a child dies before it
listens. Waiting is done by polling with ``anyio.sleep``, so the harness's
clients keep running while an instance restarts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import anyio

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
"""Bounds a hang on a loaded two-core box; start-up is mostly imports."""
STOP_TIMEOUT = 60.0
"""A SIGTERMed instance waits for its running tools; this bounds that wait."""
POLL_INTERVAL = 0.05
LOG_TAIL = 3000

NOT_LISTENING = "{name} did not listen on {host}:{port} within {timeout:.0f} s"
EXITED_EARLY = "{name} exited with status {code} before listening on {host}:{port}"
DID_NOT_EXIT = "{name} (pid {pid}) did not exit within {timeout:.0f} s of {signal}"


class ClusterError(Exception):
    """The harness could not build or drive the cluster (not a finding about the middleware)."""


def free_port(host: str = HOST) -> int:
    """A port the kernel just handed out on ``host``, released for a child to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Child:
    """One child process on a fixed port; it can be stopped and started again on that port."""

    def __init__(self, name: str, command: list[str], port: int, log_path: Path, cwd: Path) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ClusterError(f"{self.name} is not running")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process; :meth:`wait_listening` (or :meth:`start`) waits for its port."""
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(self.command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def wait_listening_blocking(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(self._not_listening(timeout))
            time.sleep(POLL_INTERVAL)

    async def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not await anyio.to_thread.run_sync(listening, self.port):
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(self._not_listening(timeout))
            await anyio.sleep(POLL_INTERVAL)

    async def start(self) -> None:
        self.spawn()
        await self.wait_listening()

    def send_signal(self, signum: int) -> None:
        if self.proc is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> float:
        """Send ``signum`` and wait for the exit; returns the seconds the exit took."""
        proc = self.proc
        if proc is None:
            return 0.0
        began = time.monotonic()
        self.send_signal(signum)
        while proc.poll() is None:
            if time.monotonic() - began > timeout:
                raise ClusterError(
                    DID_NOT_EXIT.format(
                        name=self.name,
                        pid=proc.pid,
                        timeout=timeout,
                        signal=signal.Signals(signum).name,
                    )
                )
            await anyio.sleep(POLL_INTERVAL)
        self._reap_group(proc)
        return time.monotonic() - began

    def close(self) -> None:
        """Blocking cleanup for the end of a run: SIGTERM, a short grace, then SIGKILL."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10.0)
        self._reap_group(proc)

    def tail(self) -> str:
        try:
            return self.log_path.read_bytes().decode(errors="replace")[-LOG_TAIL:]
        except OSError:
            return ""

    def _reap_group(self, proc: subprocess.Popen[bytes]) -> None:
        with suppress(ProcessLookupError):  # children of the child may outlive it
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def _check_alive(self) -> None:
        if self.proc is not None and (code := self.proc.poll()) is not None:
            message = EXITED_EARLY.format(name=self.name, code=code, host=HOST, port=self.port)
            raise ClusterError(f"{message}\n{self.tail()}")

    def _not_listening(self, timeout: float) -> str:
        message = NOT_LISTENING.format(name=self.name, host=HOST, port=self.port, timeout=timeout)
        return f"{message}\n{self.tail()}"
