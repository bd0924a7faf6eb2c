"""Plain connections for the Redis commands every request makes.

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
of them is the same either way.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_IDLE = 64
"""Idle connections a lane keeps; more are opened under load and closed after use."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection (and authenticate) before giving up."""

_CRLF = b"\r\n"


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
        self._writer.write(command)
        return await self._reply()

    async def _reply(self) -> Any:
        line = await self._reader.readuntil(_CRLF)
        kind, body = line[:1], line[1:-2]
        if kind == b"$":
            length = int(body)
            if length < 0:
                return None
            return (await self._reader.readexactly(length + 2))[:-2]
        if kind == b":":
            return int(body)
        if kind == b"*":
            count = int(body)
            if count < 0:
                return None
            return [await self._reply() for _ in range(count)]
        if kind == b"+":
            return body
        if kind == b"-":
            raise response_error(body.decode("utf-8", "replace"))
        raise EOFError(f"unexpected reply from Redis: {line[:40]!r}")

    def close(self) -> None:
        self._writer.close()


def encode_command(args: tuple[Any, ...]) -> bytes:
    """A command as RESP2: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), encode_args(args))


def encode_args(args: tuple[Any, ...]) -> bytes:
    """Bulk strings, one per argument, as they follow a RESP2 array's header."""
    out: list[bytes] = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out += (b"$%d\r\n" % len(data), data, _CRLF)
    return b"".join(out)


def script_head(sha: str) -> bytes:
    """``EVALSHA`` and a script's digest, encoded: what :meth:`WireLane.evalsha` starts with."""
    return encode_args(("EVALSHA", sha))


def evalsha_command(head: bytes, args: tuple[Any, ...]) -> bytes:
    """What ``encode_command(("EVALSHA", sha, *args))`` writes, the first two encoded once."""
    return b"*%d\r\n%s%s" % (len(args) + 2, head, encode_args(args))


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


def response_error(message: str) -> Exception:
    """The redis-py exception for an error reply (NOSCRIPT is its own, as in redis-py)."""
    from redis.exceptions import NoScriptError, ResponseError

    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)
