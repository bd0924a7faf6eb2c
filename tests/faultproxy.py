"""A loopback TCP proxy in front of a real server that can stall: bytes held, connection open.

Protocol-agnostic: it forwards bytes both ways and knows nothing of what they
say. ``stall()`` holds every byte in both directions on every connection, old
and new, while the sockets stay open (a server that accepts and never answers,
or a network path that went dark); ``resume()`` lets them flow again.
"""

from __future__ import annotations

import socket

import anyio
from anyio.abc import SocketStream, TaskGroup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; :meth:`stall` freezes the traffic."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._flowing = anyio.Event()
        self._flowing.set()
        self.held = 0
        """Chunks waiting while stalled, so a test can see a request reached the proxy."""

    async def start(self, tg: TaskGroup) -> None:
        """Listen (until ``tg`` is cancelled)."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)

        async def serve() -> None:
            async with listener:
                await listener.serve(self._relay)

        tg.start_soon(serve)

    def stall(self) -> None:
        if self._flowing.is_set():
            self._flowing = anyio.Event()

    def resume(self) -> None:
        self._flowing.set()

    async def _pass(self) -> None:
        if not self._flowing.is_set():
            self.held += 1
            await self._flowing.wait()

    async def _relay(self, client: SocketStream) -> None:
        async with client:
            await self._pass()  # a stalled proxy does not even reach the server
            try:
                upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:

                async def pipe(source: SocketStream, sink: SocketStream) -> None:
                    try:
                        async for chunk in source:
                            await self._pass()
                            await sink.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pipe, client, upstream)
                tg.start_soon(pipe, upstream, client)
