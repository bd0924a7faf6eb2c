"""Private redis-server processes for tests: a three-node Cluster, and single servers.

The shared Redis on 6379 must never be stopped, so every test that needs a
server it can stop, or a Cluster, starts its own on free loopback ports in a
temporary directory and kills it afterwards. The Cluster is started lazily by
the first test that asks for it and stopped when the interpreter exits (pytest
runs the atexit hooks after the session ends).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .services import unavailable

START_TIMEOUT = 20.0
NODE_COUNT = 3
NO_REDIS_SERVER = "redis-server is not installed (needed for the private Redis tests)"
NO_REDIS_CLI = "redis-cli is not installed (needed to create the Redis Cluster)"
NO_OPENSSL = "openssl is not installed (needed for the TLS test certificate)"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A loopback port nobody listens on; with ``with_bus`` also port+10000 (Cluster bus)."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        if _port_free(port) and (not with_bus or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


def _binary(name: str, reason: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(reason)
        raise RuntimeError(reason)  # unavailable() always raises; this tells mypy so
    return path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, made by the openssl CLI."""
    openssl = _binary("openssl", NO_OPENSSL)
    cert, key = directory / "redis.crt", directory / "redis.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return cert, key


def _wait_ping(port: int, deadline: float, ca_file: Path | None = None) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
                sock = (
                    context.wrap_socket(raw, server_hostname="127.0.0.1")
                    if context is not None
                    else raw
                )
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class RedisServer:
    """One private redis-server in the foreground, which can be stopped and started again.

    ``extra`` arguments are appended to the command line (the Cluster uses them).
    With ``tls`` (certificate, key) the port speaks TLS only; with ``unixsocket``
    the server also listens on that socket.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra: tuple[str, ...] = (),
        *,
        tls: tuple[Path, Path] | None = None,
        unixsocket: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.extra = extra
        self.tls = tls
        self.unixsocket = unixsocket
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = _binary("redis-server", NO_REDIS_SERVER)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls is not None:
            cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port)]
            listen += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            listen += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        else:
            listen = ["--port", str(self.port)]
        if self.unixsocket is not None:
            listen += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        command = [
            binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        ca_file = self.tls[0] if self.tls is not None else None
        if not _wait_ping(self.port, time.monotonic() + START_TIMEOUT, ca_file):
            self.stop()
            unavailable(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; waits until the process is gone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class RedisCluster:
    """Three primaries, no replicas, on free loopback ports."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-session-mw-cluster-"))
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        _binary("redis-server", NO_REDIS_SERVER)
        cli = _binary("redis-cli", NO_REDIS_CLI)
        ports: list[int] = []
        while len(ports) < NODE_COUNT:
            port = free_port(with_bus=True)
            if port not in ports:
                ports.append(port)
        for port in ports:
            node = RedisServer(
                self.workdir / str(port),
                port,
                ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
            )
            self.nodes.append(node)
            node.start()
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            self.stop()
            unavailable(f"redis-cli --cluster create failed: {create.stderr.decode()[-300:]}")
        if not self._wait_ok(cli, ports, time.monotonic() + START_TIMEOUT):
            self.stop()
            unavailable("the private Redis Cluster never reached cluster_state:ok")

    @staticmethod
    def _wait_ok(cli: str, ports: list[int], deadline: float) -> bool:
        pending = set(ports)
        while pending and time.monotonic() < deadline:
            for port in sorted(pending):
                info = subprocess.run(
                    [cli, "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
                if b"cluster_state:ok" in info.stdout:
                    pending.discard(port)
            if pending:
                time.sleep(0.1)
        return not pending

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []
        shutil.rmtree(self.workdir, ignore_errors=True)


_cluster: RedisCluster | None = None
_lock = threading.Lock()


def cluster_url() -> str:
    """The URL of the shared test Cluster, starting it on first use (skips if impossible)."""
    global _cluster
    with _lock:
        if _cluster is None:
            cluster = RedisCluster()
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            _cluster = cluster
            atexit.register(_stop_cluster, os.getpid())
        return _cluster.url


def _stop_cluster(owner_pid: int) -> None:
    # A forked child inherits atexit hooks; only the process that started the nodes stops them.
    global _cluster
    if _cluster is not None and os.getpid() == owner_pid:
        _cluster.stop()
        _cluster = None
