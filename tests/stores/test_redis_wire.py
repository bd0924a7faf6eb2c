"""What the Redis store writes, checked without a server (the lane itself: test_redis.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import NoScriptError, ResponseError

from mcp_session_mw import StreamState
from mcp_session_mw.stores.redis import (
    READ_SIZE,
    encode_command,
    evalsha_command,
    parse_reply,
    script_head,
)
from mcp_session_mw.stores.redis.lane import _Connection
from mcp_session_mw.stores.redis.values import request_id_json


def resp_array(args: list[Any]) -> bytes:
    """RESP2 written out one argument at a time, the plain way."""
    out = b"*%d\r\n" % len(args)
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out += b"$%d\r\n" % len(data) + data + b"\r\n"
    return out


def test_a_command() -> None:
    assert encode_command(("SET", b"k", 1)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"
    assert encode_command(("GET", "")) == b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
    assert encode_command(()) == b"*0\r\n"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=20),
            st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
            st.integers(),
            st.floats(allow_nan=False),
        ),
        max_size=12,
    )
)
def test_any_arguments_are_framed_as_resp2_arrays(args: list[Any]) -> None:
    assert encode_command(tuple(args)) == resp_array(args)


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
    st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=20) | st.integers()),
)
def test_a_script_call_is_the_evalsha_command_written_out(sha: str, args: list[Any]) -> None:
    expected = resp_array(["EVALSHA", sha, *args])
    assert evalsha_command(script_head(sha), tuple(args)) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
)
def test_a_stream_request_id_is_stored_as_json_dumps_writes_it(request_id: Any) -> None:
    state = StreamState(stream_id="0123456789abcdef", request_id=request_id)
    assert request_id_json(state) == json.dumps(request_id)


# -- replies: parsed from what one read brings, read on when it is not all there ---------

Reply = Any


def _replies(depth: int = 2) -> st.SearchStrategy[tuple[bytes, Reply]]:
    """A RESP2 reply as the server writes it, and the value redis-py would give for it."""
    leaves = st.one_of(
        st.binary(max_size=30).map(lambda b: (b"$%d\r\n%s\r\n" % (len(b), b), b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: (b":%d\r\n" % i, i)),
        st.just((b"$-1\r\n", None)),
        st.just((b"*-1\r\n", None)),
        st.from_regex(rb"[A-Za-z ]{0,12}", fullmatch=True).map(lambda s: (b"+" + s + b"\r\n", s)),
    )
    if depth == 0:
        return leaves
    arrays = st.lists(_replies(depth - 1), max_size=6).map(
        lambda items: (
            b"*%d\r\n" % len(items) + b"".join(wire for wire, _ in items),
            [value for _, value in items],
        )
    )
    return st.one_of(leaves, arrays)


class _Writer:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def _read_reply(chunks: list[bytes], *, then_close: bool = False) -> Reply:
    """What a lane connection reads when the server's reply arrives in ``chunks``."""
    reader = asyncio.StreamReader()
    connection = _Connection(reader, _Writer())  # type: ignore[arg-type]

    async def arrive() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        if then_close:
            reader.feed_eof()

    feeder = asyncio.ensure_future(arrive())
    try:
        return await connection.call(b"")
    finally:
        await feeder


def _split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=300, deadline=None)
@given(_replies())
def test_a_reply_parses_to_what_redis_py_gives(reply: tuple[bytes, Reply]) -> None:
    wire, value = reply
    assert parse_reply(wire, 0) == (value, len(wire))


@settings(max_examples=200, deadline=None)
@given(_replies(), st.lists(st.integers(min_value=0), max_size=8))
def test_a_reply_split_anywhere_is_read_whole(reply: tuple[bytes, Reply], cuts: list[int]) -> None:
    wire, value = reply
    assert asyncio.run(_read_reply(_split(wire, cuts))) == value


def test_a_long_reply_in_many_reads() -> None:
    big = b"x" * (3 * READ_SIZE + 5)
    wire = b"*3\r\n$%d\r\n%s\r\n:7\r\n$1\r\ny\r\n" % (len(big), big)
    assert asyncio.run(_read_reply(_split(wire, list(range(0, len(wire), 4093))))) == [
        big,
        7,
        b"y",
    ]
    assert asyncio.run(_read_reply(_split(b"$%d\r\n%s\r\n" % (len(big), big), [1, 9]))) == big


def test_an_error_reply_raises_once_the_whole_reply_is_read() -> None:
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        asyncio.run(_read_reply([b"-WRONGTYPE not a list\r\n"]))
    with pytest.raises(ResponseError, match="inner"):
        asyncio.run(_read_reply([b"*2\r\n*1\r\n-ERR inner\r\n", b":1\r\n"]))
    with pytest.raises(NoScriptError):
        asyncio.run(_read_reply([b"-NOSCRIPT No matching script\r\n"]))


@pytest.mark.parametrize(
    "chunks",
    [
        [b":1\r\n:2\r\n"],  # more than one reply: the wire is out of step
        [b"?what\r\n"],  # not RESP
        [b"$5\r\nab"],  # the server went away mid-reply
        [],  # ... or before it
    ],
)
def test_a_broken_reply_is_a_lost_connection(chunks: list[bytes]) -> None:
    with pytest.raises(EOFError):
        asyncio.run(_read_reply(chunks, then_close=True))
