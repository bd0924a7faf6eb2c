"""The lane: plain connections for the Redis commands every request makes.

Of the client time a small command costs through redis-py, most goes around
the wire: checking a pooled connection out (a lock, a health probe of the
socket), packing, parsing, checking it back in. Every MCP request runs two
such commands (the session load, and the stream write of its answer), so
:class:`RedisStore` sends those, and its other session and stream scripts,
over a few connections of its own that speak RESP2 directly: taking one is a
list pop, a command one write and one read.

Only a plain ``redis://host:port/db`` URL, with no client options, gets a
lane; everything else (TLS, unix sockets, Cluster, a caller's client, redis-py
options), and the store's operations (listing, purging, locks), stay on
redis-py. Errors are redis-py's own exception types, so the store's handling
of them is the same either way. The bytes on the wire are :mod:`.resp`'s.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

from .resp import (
    CRLF,
    FailedArray,
    Incomplete,
    encode_command,
    error_in,
    evalsha_command,
    parse_reply,
)

MAX_IDLE = 64
"""Idle connections a lane keeps; more are opened under load and closed after use."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection (and authenticate) before giving up."""

READ_SIZE = 65536
"""Bytes asked of the socket's buffer per read (a whole small reply in one)."""


class WireLane:
    """A few RESP2 connections to one Redis server, taken without a pool's checkout."""

    def __init__(
        self, host: str, port: int, *, db: int, username: str | None, password: str | None
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self._username = username
        self._password = password
        self._idle: list[_Connection] = []

    @classmethod
    def for_url(cls, url: str) -> WireLane | None:
        """A lane for a plain ``redis://`` URL, None for anything it does not speak."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "redis" or parts.query or parts.fragment:
            return None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            return None
        try:
            port = parts.port or 6379
        except ValueError:
            return None
        return cls(
            parts.hostname or "localhost",
            port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    async def execute_command(self, *args: Any) -> Any:
        """Run one command; its reply as redis-py gives it with ``decode_responses=False``."""
        return await self.send_command(encode_command(args))

    async def evalsha(self, head: bytes, args: tuple[Any, ...]) -> Any:
        """``EVALSHA``: ``head`` from :func:`script_head`, then numkeys, keys and arguments."""
        return await self.send_command(evalsha_command(head, args))

    async def send_command(self, command: bytes) -> Any:
        """Send one RESP-encoded command and read its reply."""
        connection = self._take()
        if connection is None:
            connection = await self._connect()
        try:
            reply = await connection.call(command)
        except BaseException as exc:
            error = _failure(exc)
            if error is None:
                self._give_back(connection)  # the server refused the command; the wire is fine
                raise
            # Lost, or cancelled mid-command (its reply would be read by the next).
            connection.close()
            if error is exc:
                raise
            raise error from exc
        self._give_back(connection)
        return reply

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(loop):
                return connection
            connection.close()
        return None

    def _give_back(self, connection: _Connection) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.close()

    async def _connect(self) -> _Connection:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError

        try:
            return await asyncio.wait_for(self._open(), CONNECT_TIMEOUT)
        except ResponseError:
            raise
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise RedisConnectionError(
                f"cannot connect to Redis at {self.host}:{self.port}: {exc}"
            ) from exc

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        connection = _Connection(reader, writer)
        try:
            if self._password is not None:
                credentials = (
                    (self._password,)
                    if self._username is None
                    else (self._username, self._password)
                )
                await connection.call(encode_command(("AUTH", *credentials)))
            if self.db:
                await connection.call(encode_command(("SELECT", self.db)))
        except BaseException:
            connection.close()
            raise
        return connection


class _Connection:
    __slots__ = ("_loop", "_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()

    def usable(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Still open as far as this process can tell (the server did not close it)."""
        return loop is self._loop and not self._reader.at_eof() and not self._writer.is_closing()

    async def call(self, command: bytes) -> Any:
        """Send ``command`` and read its reply: usually one read, parsed in memory.

        One command is in flight per connection, so what arrives is this reply
        and nothing after it. A reply that has not all arrived in the first
        read is read on, and parsed again from the top-level element it
        stopped in (so a long reply costs about one parse, not one per read).
        """
        self._writer.write(command)
        data = await self._reader.read(READ_SIZE)
        if not data:
            raise EOFError("Redis closed the connection")
        try:
            reply, end = parse_reply(data, 0)
        except Incomplete:
            reply, end, data = await self._read_on(data)
        if end != len(data):
            raise EOFError("Redis sent more than the reply to one command")
        error = error_in(reply)
        if error is not None:
            raise error
        return reply

    async def _read_on(self, data: bytes) -> tuple[Any, int, bytes]:
        """The rest of a reply whose first read was short; the reply, its end, all bytes."""
        chunks = [data]
        while True:
            header_end = data.find(CRLF)
            if header_end >= 0:
                break
            data = await self._more(chunks)
        if data[:1] != b"*":  # one value: its length is in its header
            while True:
                try:
                    reply, end = parse_reply(data, 0)
                    return reply, end, data
                except Incomplete as incomplete:
                    data = await self._more(chunks, incomplete.needed - len(data))
        count = int(data[1:header_end])
        position = header_end + 2
        if count < 0:
            return None, position, data
        items: list[Any] = []
        error: Exception | None = None
        while len(items) < count:
            try:
                item, position = parse_reply(data, position)
            except Incomplete as incomplete:
                data = await self._more(chunks, incomplete.needed - len(data))
                continue
            if error is None:
                error = error_in(item)
            items.append(item)
        return (items if error is None else FailedArray(items, error)), position, data

    async def _more(self, chunks: list[bytes], at_least: int = 1) -> bytes:
        """All bytes so far, after reading at least ``at_least`` more."""
        if at_least > READ_SIZE:
            more = await self._reader.readexactly(at_least)
        else:
            more = await self._reader.read(READ_SIZE)
            if not more:
                raise EOFError("Redis closed the connection mid-reply")
        chunks.append(more)
        joined = b"".join(chunks)
        chunks[:] = [joined]
        return joined

    def close(self) -> None:
        self._writer.close()


def _failure(exc: BaseException) -> BaseException | None:
    """What a failed command raises: None for a refusal (the connection is fine), else
    a redis-py ``ConnectionError`` for a lost connection, or ``exc`` itself."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    if isinstance(exc, ResponseError):
        return None
    if isinstance(exc, OSError | EOFError | asyncio.IncompleteReadError):
        return RedisConnectionError(f"Redis connection lost: {exc}")
    return exc
