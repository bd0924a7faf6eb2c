"""What the Redis store writes, checked without a server."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mcp_session_mw import StreamState
from mcp_session_mw.stores.redis.values import request_id_json


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
