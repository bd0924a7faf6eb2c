"""What the Redis store writes, checked without a server (the lane itself: test_redis.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_session_mw import StreamState
from mcp_session_mw.stores.redis import _request_id_json
from mcp_session_mw.stores.redis_wire import encode_command, evalsha_command, script_head


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
    assert _request_id_json(state) == json.dumps(request_id)
