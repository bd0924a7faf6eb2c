"""The cluster: a store relay, three instances of the example server, nginx in front.

:class:`Cluster` is a context manager that starts, in order, the relay to the
shared store, the instances (``examples/08_cluster_server.py`` under uvicorn,
each on a loopback port it keeps across restarts) and nginx; it stops them all
and wipes the run's namespace in the store on exit. While it runs, the
scenarios restart and kill instances and cut the store through it.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import anyio

from . import relay
from .nginx import Nginx, find_nginx
from .procs import POLL_INTERVAL, Child, ClusterError, free_port
from .stores import StoreSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER = "examples/08_cluster_server.py"
INSTANCES = 3
STREAM_LEASE = 2.0
"""Short, so a resuming client learns of a dead producer soon; renewed every third of it."""
ACK_TIMEOUT = 30.0

NO_ACK = "the relay did not acknowledge {what} within {timeout:.0f} s"
NO_INSTANCE = "no instance has pid {pid}"


class Cluster:
    def __init__(
        self,
        spec: StoreSpec,
        *,
        size: int = INSTANCES,
        stream_lease: float = STREAM_LEASE,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.size = size
        self.stream_lease = stream_lease
        self.say = say or (lambda text: None)
        nginx = find_nginx()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"mcp-cluster-{spec.name}-"))
        relay_port = free_port()
        self.relay = Child(
            "relay",
            [sys.executable, "-m", "cluster.relay", str(relay_port), *map(str, spec.target)],
            relay_port,
            self.workdir / "relay.log",
            REPO_ROOT,
        )
        store_url = spec.relayed_url(relay_port)
        self.instances: list[Child] = []
        for number in range(1, size + 1):
            port = free_port()
            command = [
                sys.executable,
                SERVER,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--store",
                store_url,
                "--stream-lease",
                str(stream_lease),
                *spec.option_args(),
            ]
            log = self.workdir / f"instance{number}.log"
            self.instances.append(Child(f"instance {number}", command, port, log, REPO_ROOT))
        self.nginx = Nginx(nginx, self.workdir, [i.port for i in self.instances])
        self._acks = {"cut": 0, "restored": 0}

    @property
    def url(self) -> str:
        return self.nginx.url

    def __enter__(self) -> Cluster:
        try:
            self.relay.spawn()
            self.relay.wait_listening_blocking()
            for instance in self.instances:
                instance.spawn()
            # Start-up is mostly imports; wait for all at once.
            with ThreadPoolExecutor(len(self.instances)) as pool:
                for waited in [pool.submit(i.wait_listening_blocking) for i in self.instances]:
                    waited.result()
            self.nginx.spawn()
            self.nginx.wait_listening_blocking()
        except BaseException:
            self.close()
            raise
        ports = ", ".join(str(i.port) for i in self.instances)
        self.say(
            f"[{self.spec.name}] nginx on :{self.nginx.port} round-robin over instances on "
            f"{ports}; store through the relay on :{self.relay.port} "
            f"({', '.join(f'{k}={v}' for k, v in self.spec.options.items())})"
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything, wipe the run's namespace, remove the temporary directory."""
        for child in [self.nginx, *self.instances, self.relay]:
            child.close()
        with ThreadPoolExecutor(1) as pool:  # a fresh event loop, whoever calls this
            pool.submit(anyio.run, self.spec.wipe).result()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def diagnostics(self, lines: int = 15) -> str:
        """The last lines of nginx's error log and of every instance's output."""
        parts = [f"nginx error log:\n{_last_lines(self.nginx.error_log_tail(), lines)}"]
        for child in [*self.instances, self.relay]:
            parts.append(f"{child.name} (port {child.port}):\n{_last_lines(child.tail(), lines)}")
        return "\n".join(parts)

    # -- instances -----------------------------------------------------------------------

    def instance_of(self, pid: int) -> Child:
        for instance in self.instances:
            if instance.proc is not None and instance.proc.pid == pid:
                return instance
        raise ClusterError(NO_INSTANCE.format(pid=pid))

    def pids(self) -> set[int]:
        return {i.pid for i in self.instances if i.running()}

    async def restart(self, instance: Child, signum: int = signal.SIGTERM) -> float:
        """Stop ``instance`` with ``signum``, start it again on its port; the exit's seconds."""
        took = await instance.stop(signum)
        await instance.start()
        return took

    async def ensure_all_running(self) -> None:
        for instance in self.instances:
            if not instance.running():
                await instance.start()

    # -- the store outage ----------------------------------------------------------------

    async def cut_store(self) -> None:
        """Drop every connection to the store and refuse new ones, until :meth:`restore_store`."""
        await self._signal_relay(relay.CUT, "cut")

    async def restore_store(self) -> None:
        await self._signal_relay(relay.RESTORE, "restored")

    async def _signal_relay(self, signum: int, ack: str) -> None:
        self._acks[ack] += 1
        self.relay.send_signal(signum)
        deadline = time.monotonic() + ACK_TIMEOUT
        while self.relay.log_path.read_text().splitlines().count(ack) < self._acks[ack]:
            if time.monotonic() > deadline:
                raise ClusterError(NO_ACK.format(what=ack, timeout=ACK_TIMEOUT))
            await anyio.sleep(POLL_INTERVAL)


def _last_lines(text: str, count: int) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()[-count:])
