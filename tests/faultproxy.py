"""A fault-injecting TCP forwarder on a loopback port, for tests of stores under faults.

:class:`FaultProxy` forwards bytes between its clients and one upstream server
and can be told, at any moment, to misbehave:

- ``stall()``: accept connections and read what clients send, but forward nothing
  either way until ``resume()`` (a server that stopped answering);
- ``answer(data)``: answer every chunk a client sends with ``data`` without
  forwarding it (e.g. ``b"-LOADING ...\\r\\n"`` for Redis), until ``resume()``;
- ``reset_mid_reply()``: forward the first half of the next chunk the server
  sends, then reset that client's connection;
- ``drop_reply(match, nth)``: Redis-aware: the reply to the ``nth`` command
  (counted over all connections) whose arguments contain ``match`` is thrown
  away once the server has run it, and that client's connection is reset, as a
  reply lost on the way.

Everything but ``drop_reply`` is protocol-agnostic, so any TCP store (Redis,
PostgreSQL, MariaDB) can sit behind it. ``connections`` counts the
connections accepted so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque

CHUNK = 65536


def resp_end(data: bytes, position: int) -> int | None:
    """Where the RESP2 value starting at ``position`` ends, None if not all arrived."""
    line_end = data.find(b"\r\n", position)
    if line_end < 0:
        return None
    kind = data[position : position + 1]
    if kind in (b"+", b"-", b":"):
        return line_end + 2
    count = int(data[position + 1 : line_end])
    if kind == b"$":
        end = line_end + 2 + (count + 2 if count >= 0 else 0)
        return end if len(data) >= end else None
    if kind == b"*":
        at: int | None = line_end + 2
        for _ in range(max(count, 0)):
            assert at is not None
            at = resp_end(data, at)
            if at is None:
                return None
        return at
    raise ValueError(f"not a RESP2 value: {data[position : position + 20]!r}")


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.pending: deque[bool] = deque()  # per command sent on: drop its reply?
        self.commands = b""
        self.replies = b""

    def reset(self) -> None:
        """Close the client's side with a TCP reset, and the upstream side."""
        sock = self.client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        self.client.transport.abort()
        self.upstream.transport.abort()


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``host:port``, with the faults above on demand."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._answer: bytes | None = None
        self._reset_next = False
        self._drop_match: bytes | None = None
        self._drop_countdown = 0
        self.dropped = 0
        self.held = 0
        """Chunks that waited while stalled, so a test can see a request reached the proxy."""

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs):
            pair.reset()
        # Reset connections end their tasks; cancelling a server's handler logs noise.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    # -- switches ------------------------------------------------------------------

    def stall(self) -> None:
        self._flowing.clear()

    def answer(self, data: bytes) -> None:
        self._answer = data

    def reset_mid_reply(self) -> None:
        self._reset_next = True

    def drop_reply(self, match: bytes, nth: int = 1) -> None:
        self._drop_match = match
        self._drop_countdown = nth

    def resume(self) -> None:
        """Back to forwarding everything (pending faults of the next reply are kept)."""
        self._answer = None
        self._flowing.set()

    # -- forwarding ----------------------------------------------------------------

    async def _wait_flowing(self) -> None:
        if not self._flowing.is_set():
            self.held += 1
            await self._flowing.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._to_server(reader, pair), self._to_client(up_reader, pair))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pairs.discard(pair)
            pair.reset()

    async def _to_server(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        while data := await reader.read(CHUNK):
            await self._wait_flowing()
            if self._answer is not None:
                pair.client.write(self._answer)
                continue
            if self._drop_match is not None or pair.pending:
                self._note_commands(pair, data)
            pair.upstream.write(data)
        pair.upstream.transport.abort()

    def _note_commands(self, pair: _Pair, data: bytes) -> None:
        pair.commands += data
        while (end := resp_end(pair.commands, 0)) is not None:
            command, pair.commands = pair.commands[:end], pair.commands[end:]
            drop = False
            if self._drop_match is not None and self._drop_match in command:
                self._drop_countdown -= 1
                if self._drop_countdown == 0:
                    drop, self._drop_match = True, None
            pair.pending.append(drop)

    async def _to_client(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        while data := await reader.read(CHUNK):
            await self._wait_flowing()
            if self._reset_next:
                self._reset_next = False
                pair.client.write(data[: max(1, len(data) // 2)])
                await pair.client.drain()
                pair.reset()
                return
            if pair.pending:
                passed = self._pass_replies(pair, data)
                if passed is None:
                    return
                data = passed
            pair.client.write(data)
        pair.client.transport.abort()

    def _pass_replies(self, pair: _Pair, data: bytes) -> bytes | None:
        """The bytes to forward; None when a reply was dropped and the pair reset."""
        pair.replies += data
        forward = b""
        while pair.pending and (end := resp_end(pair.replies, 0)) is not None:
            reply, pair.replies = pair.replies[:end], pair.replies[end:]
            if pair.pending.popleft():
                self.dropped += 1
                pair.client.write(forward)
                pair.reset()
                return None
            forward += reply
        if not pair.pending:
            forward, pair.replies = forward + pair.replies, b""
        return forward
