"""A TCP relay between the instances and the store, that can be cut and restored.

The shared PostgreSQL and Redis servers must never be stopped (other test runs
use them), so a store outage is made here instead: the instances reach the
store only through this relay, and cutting it looks to them like the server
going away — every open connection drops and new ones are refused — while the
server and its data stay as they were. Restoring it is the server coming back
on the same address.

It runs as a process of its own (``python -m cluster.relay PORT HOST
TARGET_PORT``), so relaying does not compete with the harness's clients for one
event loop. Signals drive it: SIGUSR1 cuts, SIGUSR2 restores, SIGTERM ends it.
Each signal is acknowledged on stdout (``cut`` / ``restored``) once done, and a
cut is done only when no relayed connection is left.
"""

from __future__ import annotations

import signal
import sys

import anyio
from anyio.abc import SocketStream, TaskGroup

HOST = "127.0.0.1"
CUT = signal.SIGUSR1
RESTORE = signal.SIGUSR2
CHUNK = 65536


class Relay:
    def __init__(self, port: int, target_host: str, target_port: int) -> None:
        self.port = port
        self.target = (target_host, target_port)
        self._listener_scope: anyio.CancelScope | None = None
        self._listener_done = anyio.Event()
        self._connections: dict[anyio.CancelScope, anyio.Event] = {}

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(CUT, RESTORE, signal.SIGTERM) as signals:
                await self.restore(tg)
                print(f"relay {HOST}:{self.port} -> {self.target[0]}:{self.target[1]}", flush=True)
                async for signum in signals:
                    if signum == CUT:
                        await self.cut()
                        print("cut", flush=True)
                    elif signum == RESTORE:
                        await self.restore(tg)
                        print("restored", flush=True)
                    else:
                        break
            tg.cancel_scope.cancel()

    async def restore(self, tg: TaskGroup) -> None:
        if self._listener_scope is not None:
            return
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=self.port)
        scope = anyio.CancelScope()
        done = anyio.Event()

        async def serve() -> None:
            try:
                with scope:
                    async with listener:
                        await listener.serve(self._relay, task_group=tg)
            finally:
                done.set()

        self._listener_scope, self._listener_done = scope, done
        tg.start_soon(serve)

    async def cut(self) -> None:
        """Stop listening (new connections are refused), then drop every relayed one."""
        if self._listener_scope is None:
            return
        self._listener_scope.cancel()
        await self._listener_done.wait()
        self._listener_scope = None
        for scope in list(self._connections):
            scope.cancel()
        for done in list(self._connections.values()):
            await done.wait()

    async def _relay(self, client: SocketStream) -> None:
        scope = anyio.CancelScope()
        done = anyio.Event()
        self._connections[scope] = done
        try:
            with scope:
                async with client:
                    try:
                        upstream = await anyio.connect_tcp(*self.target)
                    except OSError:
                        return
                    async with upstream, anyio.create_task_group() as pipes:
                        pipes.start_soon(self._pipe, client, upstream, pipes.cancel_scope)
                        pipes.start_soon(self._pipe, upstream, client, pipes.cancel_scope)
        finally:
            del self._connections[scope]
            done.set()

    @staticmethod
    async def _pipe(source: SocketStream, sink: SocketStream, both: anyio.CancelScope) -> None:
        """Copy one direction; when either side ends, end the connection both ways."""
        try:
            while True:
                await sink.send(await source.receive(CHUNK))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        both.cancel()


def main() -> None:
    port, target_host, target_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    anyio.run(Relay(port, target_host, target_port).run)


if __name__ == "__main__":
    main()
