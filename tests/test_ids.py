"""Property tests for the ids that arrive on the wire: session ids and Last-Event-IDs."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcp_session_mw.protocol import SESSION_ID_LENGTH, mint_session_id, valid_session_id
from mcp_session_mw.streams import (
    MAX_EVENT_ID_LENGTH,
    STANDALONE_STREAM,
    format_event_id,
    mint_stream_id,
    parse_event_id,
)

PROPERTIES = settings(max_examples=200, deadline=None)
FORBIDDEN = "\r\n\x00 "
"""Characters no accepted id may contain: header splitting, C strings, separators."""

URL_SAFE = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
minted_shape = st.text(URL_SAFE, min_size=SESSION_ID_LENGTH, max_size=SESSION_ID_LENGTH)
stream_ids = st.one_of(
    st.just(STANDALONE_STREAM),
    st.text(st.sampled_from("0123456789abcdef"), min_size=16, max_size=16),
)
seqs = st.integers(min_value=0, max_value=10**18 - 1)
# Text near the accepted shapes, so the properties are tried on the edges and not only on noise.
event_like = st.builds(
    lambda stream, sep, seq, tail: f"{stream}{sep}{seq}{tail}",
    st.one_of(stream_ids, st.text(max_size=20)),
    st.sampled_from([".", "", "..", "/", ":"]),
    st.one_of(seqs.map(str), st.text(st.sampled_from("0123456789-+"), max_size=25)),
    st.sampled_from(["", "\r", "\n", "\x00", " ", "\r\n", "x", "0"]),
)


@PROPERTIES
@given(st.one_of(st.text(), minted_shape, st.none()))
@example("\ud800" * SESSION_ID_LENGTH)
def test_valid_session_id_never_raises_and_accepts_only_the_minted_shape(
    value: str | None,
) -> None:
    accepted = valid_session_id(value)
    assert isinstance(accepted, bool)
    if accepted:
        assert value is not None
        assert len(value) == SESSION_ID_LENGTH
        assert re.fullmatch(r"[A-Za-z0-9_-]+", value)
        assert value.isascii()


@PROPERTIES
@given(minted_shape, st.integers(0, SESSION_ID_LENGTH), st.sampled_from(FORBIDDEN))
def test_session_ids_with_a_forbidden_character_are_refused(
    value: str, position: int, bad: str
) -> None:
    assert valid_session_id(value)
    assert not valid_session_id(value[:position] + bad + value[position:])
    assert not valid_session_id(value[:position] + bad + value[position + 1 :])


@PROPERTIES
@given(minted_shape, st.integers(1, 200))
def test_session_ids_of_another_length_are_refused(value: str, extra: int) -> None:
    assert not valid_session_id(value + value[0] * extra)
    assert not valid_session_id(value[: max(0, SESSION_ID_LENGTH - extra)])


def test_minted_ids_are_valid() -> None:
    for _ in range(200):
        assert valid_session_id(mint_session_id())


@PROPERTIES
@given(st.one_of(st.text(), event_like, st.none()))
@example("get.1\r\n")
@example("get." + "9" * 40)
@example("get.-0")
@example("\uff10" * 16 + ".1")  # fullwidth digits are \d in Unicode regexes
@example("get.\u0661")  # ARABIC-INDIC DIGIT ONE
def test_parse_event_id_never_raises_and_round_trips(value: str | None) -> None:
    parsed = parse_event_id(value)
    if parsed is None:
        return
    stream_id, seq = parsed
    assert value is not None
    assert format_event_id(stream_id, seq) == value
    assert len(value) <= MAX_EVENT_ID_LENGTH
    assert value.isascii()
    assert not any(bad in value for bad in FORBIDDEN)
    assert seq >= 0


@PROPERTIES
@given(stream_ids, seqs)
def test_every_id_the_middleware_writes_parses_back(stream_id: str, seq: int) -> None:
    assert parse_event_id(format_event_id(stream_id, seq)) == (stream_id, seq)


@PROPERTIES
@given(stream_ids, seqs, st.integers(0, 40), st.sampled_from(FORBIDDEN))
def test_event_ids_with_a_forbidden_character_are_refused(
    stream_id: str, seq: int, position: int, bad: str
) -> None:
    value = format_event_id(stream_id, seq)
    position = min(position, len(value))
    assert parse_event_id(value[:position] + bad + value[position:]) is None


@PROPERTIES
@given(st.text(min_size=MAX_EVENT_ID_LENGTH + 1, max_size=MAX_EVENT_ID_LENGTH + 200))
def test_overlong_event_ids_are_refused(value: str) -> None:
    assert parse_event_id(value) is None
    assert parse_event_id("get." + "1" * (MAX_EVENT_ID_LENGTH)) is None


def test_minted_stream_ids_make_valid_event_ids() -> None:
    for _ in range(200):
        stream_id = mint_stream_id()
        assert parse_event_id(format_event_id(stream_id, 0)) == (stream_id, 0)
