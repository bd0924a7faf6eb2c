"""Shared pieces of the benchmarks: server processes, a raw MCP client, timing.

A benchmark runs each server under test in its own uvicorn subprocess on a free
loopback port, so the client and the server never share an event loop (or a
GIL) and the numbers are what a real client would see. The client speaks the
wire protocol by hand with httpx: no SDK client sits between the bytes and the
clock, and nothing in it differs between the runs being compared.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from mcp_session_mw.sse import SSEEvent, SSEParser

PROTOCOL_VERSION = "2025-11-25"
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_JSON_AND_SSE = "application/json, text/event-stream"


# -- measuring -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``; time.perf_counter underneath."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.seconds = time.perf_counter() - self.started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """What the numbers were measured on (the services' versions are added by callers)."""
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


# -- server processes ------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One uvicorn server in a subprocess: ``python <script> --port N <args>``.

    Its output goes to a temporary log file that is shown if it fails to start.
    Stopping sends SIGINT (uvicorn's graceful shutdown, so the app's lifespan
    closes its store) and kills it only if it hangs.
    """

    script: Path
    args: Sequence[str]
    path: str = "/mcp"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    def start(self) -> ServerProcess:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        command = [sys.executable, str(self.script), "--port", str(self.port), *self.args]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"server exited with {code}:\n{self.output()}")
            try:
                self._probe()
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {READY_TIMEOUT}s:\n{self.output()}")

    def _probe(self) -> None:
        """One request; any HTTP answer (a 4xx for a bare GET) means the server is up."""
        httpx.get(self.url, timeout=1.0)

    def output(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return str(self.log.read().decode("utf-8", "replace"))[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- a raw MCP client ------------------------------------------------------------------


class BenchError(Exception):
    """The server answered something a benchmark run cannot use."""


def sse_events(response: httpx.Response) -> Iterator[SSEEvent]:
    """The events of a streaming SSE response, as their bytes arrive."""
    parser = SSEParser()
    for chunk in response.iter_raw():
        for item in parser.feed(chunk):
            if isinstance(item, SSEEvent):
                yield item
    for item in parser.close():
        if isinstance(item, SSEEvent):
            yield item


class McpSession:
    """One MCP session over raw HTTP: initialize, notifications/initialized, then requests."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client = client
        self.url = url
        self.session_id: str | None = None
        self._next_id = 0

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"accept": _JSON_AND_SSE, "mcp-protocol-version": PROTOCOL_VERSION, **extra}
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        return headers

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def open(self) -> McpSession:
        body = {
            "jsonrpc": "2.0",
            "id": self.next_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcp-session-mw-bench", "version": "1"},
            },
        }
        response = self.client.post(self.url, json=body, headers=self.headers())
        if response.status_code != 200 or "mcp-session-id" not in response.headers:
            raise BenchError(f"initialize: {response.status_code} {response.text[:300]}")
        self.session_id = response.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        response = self.client.post(self.url, json=note, headers=self.headers())
        if response.status_code != 202:
            raise BenchError(f"initialized: {response.status_code} {response.text[:300]}")
        return self

    def close(self) -> None:
        """DELETE the session, so the server (and its store) forget it."""
        if self.session_id is None:
            return
        response = self.client.delete(self.url, headers=self.headers())
        if response.status_code not in (200, 202, 204):
            raise BenchError(f"DELETE: {response.status_code} {response.text[:300]}")
        self.session_id = None

    def __enter__(self) -> McpSession:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def new_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
