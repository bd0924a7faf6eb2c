"""nginx as the cluster's load balancer: find (or install) it, write its config, read its log.

nginx runs in the foreground (``daemon off``) from a temporary directory that
holds its config, pid file, temp paths and logs; it listens on a loopback port
of its own and round-robins over the instances. Debian's package is installed
with ``apt-get`` when the binary is missing and the harness runs as root; where
that cannot be done, :class:`NginxUnavailableError` says why (the pytest file
skips with that reason, or fails when services are required).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from string import Template

import anyio

from .procs import HOST, POLL_INTERVAL, Child, ClusterError, free_port

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
READ_TIMEOUT = 3600
"""Seconds nginx lets an SSE stream stay quiet; tools may report nothing for a long time."""
FAIL_TIMEOUT = 1
"""Seconds an instance that refused a connection is left out of the rotation."""
APT_TIMEOUT = 600.0
RELOAD_TIMEOUT = 30.0

NO_NGINX = "nginx is not installed and cannot be installed here: {why}"


class NginxUnavailableError(ClusterError):
    """nginx is missing and could not be installed; the message says why."""


def _apt(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=APT_TIMEOUT,
        check=False,
    )


def find_nginx(*, install: bool = True) -> str:
    """The nginx binary; installs Debian's package first when it is missing and we may."""
    found = shutil.which("nginx") or next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)
    if found is not None:
        return found
    if not install:
        raise NginxUnavailableError(NO_NGINX.format(why="installing was not allowed"))
    if shutil.which("apt-get") is None:
        raise NginxUnavailableError(NO_NGINX.format(why="there is no apt-get"))
    if os.geteuid() != 0:
        raise NginxUnavailableError(NO_NGINX.format(why="apt-get needs root"))
    print("nginx is missing: apt-get install -y nginx", flush=True)
    result = _apt("install", "-y", "-q", "nginx")
    if result.returncode != 0:  # the package lists may be missing or stale
        _apt("update", "-q")
        result = _apt("install", "-y", "-q", "nginx")
    found = shutil.which("nginx") or next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        why = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise NginxUnavailableError(NO_NGINX.format(why=f"apt-get failed: {why[0]}"))
    return found


def render_config(
    prefix: Path, port: int, upstream_ports: list[int], down: frozenset[int] = frozenset()
) -> str:
    """The config; instances whose port is in ``down`` get no new requests."""
    servers = "\n".join(
        f"        server {HOST}:{p} max_fails=1 fail_timeout={FAIL_TIMEOUT}s"
        + (" down;" if p in down else ";")
        for p in upstream_ports
    )
    # As root, nginx would run its worker as nobody, which cannot use the 0700
    # temporary directory; the worker keeps our user instead.
    user_line = "user root;" if os.geteuid() == 0 else ""
    return Template(TEMPLATE.read_text()).substitute(
        user_line=user_line,
        prefix=prefix,
        host=HOST,
        port=port,
        servers=servers,
        read_timeout=READ_TIMEOUT,
    )


@dataclass(frozen=True)
class AccessLine:
    """One response as nginx logged it."""

    status: int
    upstream_status: str
    """The instance's status, ``-`` when none answered; several, comma-separated, after retries."""
    upstream: str
    """Every instance tried, ``, ``-separated; the last one answered."""
    method: str
    last_event_id: str

    @property
    def from_nginx(self) -> bool:
        """True when nginx made this status itself: no instance answered the request.

        ``$upstream_status`` cannot tell (nginx logs 502 there too when an
        instance drops the connection), but the instances never answer 502 or
        504 themselves, and nginx makes nothing else here.
        """
        return self.status in (502, 504) or self.upstream_status.endswith("-")


def parse_access_line(line: str) -> AccessLine | None:
    parts = line.split("|")
    if len(parts) != 5 or not parts[0].isdigit():
        return None
    return AccessLine(int(parts[0]), parts[1], parts[2], parts[3], parts[4])


class Nginx(Child):
    """nginx in the foreground with its config, temp paths and logs in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, upstream_ports: list[int]) -> None:
        self.workdir = workdir
        port = free_port()
        conf = workdir / "nginx.conf"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / name).mkdir(exist_ok=True)
        conf.write_text(render_config(workdir, port, upstream_ports))
        command = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
        super().__init__("nginx", command, port, workdir / "nginx.out", workdir)
        self.access_log = workdir / "access.log"
        self.conf = conf
        self.upstream_ports = upstream_ports

    async def route_around(self, down: frozenset[int]) -> None:
        """Reload with the instances on ``down`` left out of the rotation.

        What a load balancer is told before a deploy stops an instance. The
        requests already on their way to it (streams included) are not
        touched: the old worker serves them to the end. Returns once the new
        worker runs.
        """
        self.conf.write_text(render_config(self.workdir, self.port, self.upstream_ports, down))
        started = self._worker_starts()
        os.kill(self.pid, signal.SIGHUP)  # the master only: it starts a new worker
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while self._worker_starts() == started:
            if time.monotonic() > deadline:
                raise ClusterError(f"nginx did not reload:\n{self.error_log_tail()}")
            await anyio.sleep(POLL_INTERVAL)

    def _worker_starts(self) -> int:
        path = self.workdir / "error.log"
        return (
            path.read_text(errors="replace").count("start worker process") if path.exists() else 0
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    def log_offset(self) -> int:
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def access_lines(self, since: int = 0) -> list[AccessLine]:
        """The responses logged from byte offset ``since`` on (see :meth:`log_offset`)."""
        try:
            with self.access_log.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        return [a for a in map(parse_access_line, text.splitlines()) if a is not None]

    def error_log_tail(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def statuses_by_cause(lines: list[AccessLine]) -> Counter[str]:
    """Counts of 5xx (and 404) responses, each labelled with who made it."""
    out: Counter[str] = Counter()
    for line in lines:
        if line.status >= 500 or line.status == 404:
            who = "nginx" if line.from_nginx else "instance"
            out[f"{line.status} {line.method} from {who} (upstream {line.upstream_status})"] += 1
    return out
