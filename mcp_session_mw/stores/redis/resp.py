"""RESP2, the Redis wire format: commands encoded, replies parsed, as redis-py gives them.

The lane (:mod:`.lane`) writes what :func:`encode_command` and
:func:`evalsha_command` make and reads what :func:`parse_reply` parses; the
parser's values and exceptions are redis-py's with ``decode_responses=False``,
so the store handles a reply the same whichever way it came.
"""

from __future__ import annotations

from typing import Any

CRLF = b"\r\n"


class Incomplete(Exception):
    """The reply goes on past the bytes read; ``needed`` is the least total length."""

    def __init__(self, needed: int) -> None:
        self.needed = needed


def parse_reply(data: bytes, position: int) -> tuple[Any, int]:
    """The RESP2 value at ``position`` and where it ends; error replies come back as exceptions.

    Values are what redis-py gives with ``decode_responses=False``: bytes,
    int, None, nested lists. Raises ``Incomplete`` when ``data`` stops first.
    """
    end = data.find(CRLF, position)
    if end < 0:
        raise Incomplete(len(data) + 1)
    kind = data[position : position + 1]
    if kind == b"$":
        length = int(data[position + 1 : end])
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if stop + 2 > len(data):
            raise Incomplete(stop + 2)
        return data[end + 2 : stop], stop + 2
    if kind == b":":
        return int(data[position + 1 : end]), end + 2
    if kind == b"*":
        count = int(data[position + 1 : end])
        if count < 0:
            return None, end + 2
        items: list[Any] = []
        position = end + 2
        error: Exception | None = None
        for _ in range(count):
            if data[position : position + 1] == b"$":  # a bulk string, inline: the usual item
                end = data.find(CRLF, position)
                if end < 0:
                    raise Incomplete(len(data) + 1)
                length = int(data[position + 1 : end])
                if length < 0:
                    items.append(None)
                    position = end + 2
                    continue
                stop = end + 2 + length
                if stop + 2 > len(data):
                    raise Incomplete(stop + 2)
                items.append(data[end + 2 : stop])
                position = stop + 2
                continue
            item, position = parse_reply(data, position)
            if error is None:
                error = error_in(item)
            items.append(item)
        return (items if error is None else FailedArray(items, error)), position
    if kind == b"+":
        return data[position + 1 : end], end + 2
    if kind == b"-":
        return response_error(data[position + 1 : end].decode("utf-8", "replace")), end + 2
    raise EOFError(f"unexpected reply from Redis: {data[position : position + 40]!r}")


def error_in(item: Any) -> Exception | None:
    """The error reply that ``item`` is or holds, if any."""
    if isinstance(item, Exception):
        return item
    return item.error if type(item) is FailedArray else None


class FailedArray(list[Any]):
    """An array reply with an error reply inside: raised once the whole reply is read."""

    def __init__(self, items: list[Any], error: Exception) -> None:
        super().__init__(items)
        self.error = error


def encode_command(args: tuple[Any, ...]) -> bytes:
    """A command as RESP2: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), encode_args(args))


def encode_args(args: tuple[Any, ...]) -> bytes:
    """Bulk strings, one per argument, as they follow a RESP2 array's header."""
    out: list[bytes] = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out += (b"$%d\r\n" % len(data), data, CRLF)
    return b"".join(out)


def script_head(sha: str) -> bytes:
    """``EVALSHA`` and a script's digest, encoded: what :meth:`WireLane.evalsha` starts with."""
    return encode_args(("EVALSHA", sha))


def evalsha_command(head: bytes, args: tuple[Any, ...]) -> bytes:
    """What ``encode_command(("EVALSHA", sha, *args))`` writes, the first two encoded once."""
    return b"*%d\r\n%s%s" % (len(args) + 2, head, encode_args(args))


def response_error(message: str) -> Exception:
    """The redis-py exception for an error reply (NOSCRIPT is its own, as in redis-py)."""
    from redis.exceptions import NoScriptError, ResponseError

    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)
