from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_session_mw.errors import ConfigurationError, SessionMiddlewareError
from mcp_session_mw.records import StoredEvent
from mcp_session_mw.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    INVALID_UTF8,
    PARSER_CLOSED,
    PARSER_FAILED,
    TOO_LARGE,
    SSEComment,
    SSEEncodeError,
    SSEEvent,
    SSEItem,
    SSEParseError,
    SSEParser,
    encode_comment,
    encode_event,
    whole_frame,
)
from mcp_session_mw.streams import encode_stored, format_event_id, priming_event

BOM = b"\xef\xbb\xbf"
PROPERTY = settings(max_examples=200, deadline=None)


def parse(chunks: Iterable[bytes], max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[SSEItem]:
    parser = SSEParser(max_event_bytes=max_event_bytes)
    items: list[SSEItem] = []
    for chunk in chunks:
        items += parser.feed(chunk)
    return items + parser.close()


def parse_whole(stream: bytes) -> list[SSEItem]:
    return parse([stream])


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def split_at(stream: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


def without_raw(items: list[SSEItem]) -> list[SSEItem]:
    return [
        SSEEvent(i.data, i.event, i.id, i.retry) if isinstance(i, SSEEvent) else SSEComment(i.text)
        for i in items
    ]


# --- fields ---------------------------------------------------------------------


def test_typical_mcp_event() -> None:
    frame = b'event: message\nid: s1/4\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'
    assert parse_whole(frame) == [
        SSEEvent('{"jsonrpc":"2.0","id":1,"result":{}}', "message", "s1/4", None, frame)
    ]


def test_priming_event_with_empty_data_line_is_dispatched() -> None:
    assert parse_whole(b"id: X\ndata:\n\n") == [SSEEvent("", None, "X", None, b"id: X\ndata:\n\n")]
    assert parse_whole(b"id: X\nretry: 500\ndata: \n\n")[0].data == ""  # type: ignore[union-attr]


def test_field_name_without_colon_has_empty_value() -> None:
    assert parse_whole(b"data\n\n") == [SSEEvent("", raw=b"data\n\n")]
    assert without_raw(parse_whole(b"data\ndata\n\n")) == [SSEEvent("\n")]


@pytest.mark.parametrize(
    "frame",
    [b"id: 7\n\n", b"event: ping\n\n", b"retry: 10\n\n", b"foo: bar\n\n", b"\n", b"\n\n\r\n\r"],
)
def test_frame_without_data_lines_is_not_dispatched(frame: bytes) -> None:
    assert parse_whole(frame) == []


def test_frame_without_data_does_not_leak_fields_into_the_next_event() -> None:
    assert without_raw(parse_whole(b"id: 7\nevent: x\nretry: 3\n\ndata: a\n\n")) == [SSEEvent("a")]


def test_multi_line_data_joins_with_lf() -> None:
    assert without_raw(parse_whole(b"data: a\ndata:\ndata: b\ndata:\n\n")) == [SSEEvent("a\n\nb\n")]


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"data: x", "x"),
        (b"data:x", "x"),
        (b"data:  x", " x"),
        (b"data:\tx", "\tx"),
        (b"data: x: y", "x: y"),
        (b"data: x ", "x "),
    ],
)
def test_one_leading_space_is_stripped(line: bytes, value: str) -> None:
    assert without_raw(parse_whole(line + b"\n\n")) == [SSEEvent(value)]


def test_last_event_and_id_field_of_a_frame_win() -> None:
    items = parse_whole(b"event: a\nid: 1\nevent: b\nid: 2\ndata: x\n\n")
    assert without_raw(items) == [SSEEvent("x", "b", "2")]


def test_id_per_frame_not_sticky() -> None:
    """Divergence #2: a frame without an id field reports None."""
    items = parse_whole(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert without_raw(items) == [SSEEvent("a", id="1"), SSEEvent("b")]


def test_empty_id_and_event_are_reported_as_empty() -> None:
    assert without_raw(parse_whole(b"id:\nevent\ndata: x\n\n")) == [SSEEvent("x", "", "")]


def test_id_containing_nul_is_ignored() -> None:
    assert without_raw(parse_whole(b"id: a\nid: b\x00c\ndata: x\n\n")) == [SSEEvent("x", id="a")]
    assert without_raw(parse_whole(b"id: \x00\ndata: x\n\n")) == [SSEEvent("x")]


@pytest.mark.parametrize(
    ("line", "retry"),
    [
        (b"retry: 1500", 1500),
        (b"retry:0", 0),
        (b"retry: 007", 7),
        (b"retry: ", None),
        (b"retry", None),
        (b"retry: 1.5", None),
        (b"retry: -1", None),
        (b"retry: +1", None),
        (b"retry: 1 ", None),
        (b"retry:  1", None),
        (b"retry: 1e3", None),
        ("retry: \u0661\u0662".encode(), None),  # Arabic-Indic digits are not ASCII digits
        ("retry: \u00b2".encode(), None),  # superscript two: str.isdigit() says yes
        (b"retry: " + b"9" * 5000, None),  # Divergence #5: too long for int()
    ],
)
def test_retry_only_when_all_ascii_digits(line: bytes, retry: int | None) -> None:
    assert without_raw(parse_whole(line + b"\ndata: x\n\n")) == [SSEEvent("x", retry=retry)]


def test_unknown_and_misspelt_fields_are_ignored() -> None:
    stream = b"Data: no\nDATA: no\n data: no\nfoo: bar\nx\n\xc3\xa9: v\ndata: yes\n\n"
    assert without_raw(parse_whole(stream)) == [SSEEvent("yes")]


# --- comments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "text"),
    [(b": ping", "ping"), (b":ping", "ping"), (b":", ""), (b":  two", " two"), (b"::x", ":x")],
)
def test_comment_text(line: bytes, text: str) -> None:
    assert parse_whole(line + b"\r\n") == [SSEComment(text, line + b"\r\n")]


def test_comments_keep_their_place_among_events() -> None:
    stream = b": a\n\ndata: 1\n\n: b\ndata: 2\n: c\n\n: d\n"
    assert parse_whole(stream) == [
        SSEComment("a", b": a\n"),
        SSEEvent("1", raw=b"data: 1\n\n"),
        SSEComment("b", b": b\n"),
        SSEComment("c", b": c\n"),
        SSEEvent("2", raw=b"data: 2\n: c\n\n"),  # a comment inside the frame stays in raw
        SSEComment("d", b": d\n"),
    ]


def test_comment_is_reported_as_soon_as_its_line_ends() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\n: keep") == []
    assert parser.feed(b"-alive\n") == [SSEComment("keep-alive", b": keep-alive\n")]
    assert parser.feed(b"\n") == [SSEEvent("1", raw=b"data: 1\n: keep-alive\n\n")]


# --- line endings and chunking --------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending(eol: bytes) -> None:
    stream = eol.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert without_raw(parse_whole(stream)) == [SSEEvent("a\nb", "e"), SSEEvent("c")]


def test_mixed_line_endings() -> None:
    stream = b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r"
    assert parse_whole(stream) == [
        SSEEvent("a\nb\nc", raw=b"data: a\rdata: b\r\ndata: c\n\r\n"),
        SSEEvent("d", raw=b"data: d\r\r"),
    ]


def test_lf_cr_is_two_line_endings() -> None:
    assert without_raw(parse_whole(b"data: a\n\rdata: b\n\n")) == [SSEEvent("a"), SSEEvent("b")]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\n\r") == []
    assert parser.feed(b"\ndata: b\r\n\r") == [SSEEvent("a", raw=b"data: a\r\n\r\n")]
    assert parser.feed(b"\n") == [SSEEvent("b", raw=b"data: b\r\n\r\n")]


def test_cr_at_chunk_end_waits_for_the_next_chunk() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == []
    assert parser.feed(b"data: b") == [SSEEvent("a", raw=b"data: a\r\r")]
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\r") == []
    assert parser.close() == [SSEEvent("b", raw=b"data: b\r\r")]


def test_several_frames_in_one_chunk_and_one_frame_in_many() -> None:
    stream = b"".join(encode_event(str(i), id=str(i)) for i in range(50))
    expected = [
        SSEEvent(str(i), None, str(i), None, encode_event(str(i), id=str(i))) for i in range(50)
    ]
    assert parse_whole(stream) == expected
    assert parse(bytewise(stream)) == expected


def test_event_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"data: b\n") == []
    assert parser.feed(b"\n") == [SSEEvent("a\nb", raw=b"data: a\ndata: b\n\n")]


def test_multibyte_utf8_split_at_every_byte() -> None:
    text = "h\u00e9 \u20ac \U0001f600 \u4e2d"
    frame = encode_event(text, event="\u00e9v", id="\U0001f600")
    assert parse(bytewise(frame)) == [SSEEvent(text, "\u00e9v", "\U0001f600", None, frame)]


def test_long_line_in_many_small_chunks() -> None:
    payload = b"x" * (1 << 20)
    frame = b"data: " + payload + b"\r\n\r\n"
    chunks = [frame[i : i + 1000] for i in range(0, len(frame), 1000)]
    assert parse(chunks) == [SSEEvent(payload.decode(), raw=frame)]


def test_empty_chunks_and_buffer_types() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert parser.feed(bytearray(b"data: a")) == []
    assert parser.feed(b"") == []
    assert parser.feed(memoryview(b"\n\n")) == [SSEEvent("a", raw=b"data: a\n\n")]


# --- BOM ------------------------------------------------------------------------


def test_bom_at_start_is_skipped() -> None:
    assert parse_whole(BOM + b"data: a\n\n") == [SSEEvent("a", raw=b"data: a\n\n")]
    assert parse(bytewise(BOM + b"data: a\n\n")) == [SSEEvent("a", raw=b"data: a\n\n")]
    assert parse([b"", BOM[:2], BOM[2:] + b"data: a\n\n"]) == [SSEEvent("a", raw=b"data: a\n\n")]


def test_only_the_first_bom_is_skipped() -> None:
    # A second BOM is part of the first field name, so the line is an unknown field.
    assert parse_whole(BOM + BOM + b"data: a\n\ndata: b\n\n") == [SSEEvent("b", raw=b"data: b\n\n")]
    assert parse_whole(b"data: a\n\n" + BOM + b"data: b\n\n") == [SSEEvent("a", raw=b"data: a\n\n")]


def test_short_stream_start_that_is_not_a_bom() -> None:
    assert parse([b"d", b"a", b"ta: a\n\n"]) == [SSEEvent("a", raw=b"data: a\n\n")]
    assert parse([b"\n", b"data: a\n\n"]) == [SSEEvent("a", raw=b"data: a\n\n")]


def test_bom_prefix_then_close() -> None:
    assert parse([BOM[:2]]) == []


# --- close ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream", [b"data: a", b"data: a\n", b"data: a\r\n", b"id: 1\ndata: a\n", b"data: a\r"]
)
def test_close_drops_an_unfinished_event(stream: bytes) -> None:
    parser = SSEParser()
    assert parser.feed(stream) == []
    assert parser.close() == []


def test_close_completes_a_final_cr_line() -> None:
    parser = SSEParser()
    assert parser.feed(b": bye\r") == []
    assert parser.close() == [SSEComment("bye", b": bye\r")]


def test_close_is_idempotent_and_feed_after_close_raises() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\n\n")
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(SSEParseError, match=PARSER_CLOSED):
        parser.feed(b"data: b\n\n")


def test_close_with_nothing_fed() -> None:
    assert SSEParser().close() == []


# --- errors and limits ----------------------------------------------------------


def test_parse_error_is_a_middleware_error() -> None:
    assert issubclass(SSEParseError, SessionMiddlewareError)
    assert issubclass(SSEEncodeError, SessionMiddlewareError)


@pytest.mark.parametrize(
    "stream",
    [
        b"data: \xff\n\n",
        b": \xc3\n",
        b"\xfe\xffdata: x\n\n",
        b"id: \xed\xa0\x80\n\n",  # an encoded surrogate is not UTF-8
        b"data: \xc3\n\xa9\n\n",  # a character split by a line ending
    ],
)
def test_invalid_utf8_raises_parse_error(stream: bytes) -> None:
    parser = SSEParser()
    with pytest.raises(SSEParseError, match=INVALID_UTF8) as info:
        parser.feed(stream)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    with pytest.raises(SSEParseError, match=PARSER_FAILED):
        parser.feed(b"data: ok\n\n")
    assert parser.close() == []


def test_invalid_utf8_in_dropped_tail_does_not_raise_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: \xff") == []
    assert parser.close() == []


def test_invalid_utf8_in_a_final_cr_line_raises_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: \xff\r") == []
    with pytest.raises(SSEParseError, match=INVALID_UTF8):
        parser.close()


def test_event_exactly_at_the_limit_is_accepted() -> None:
    frame = b"data: " + b"x" * 10 + b"\n\n"
    assert parse([frame], max_event_bytes=len(frame)) == [SSEEvent("x" * 10, raw=frame)]


def test_event_beyond_the_limit_raises() -> None:
    frame = b"data: " + b"x" * 10 + b"\ndata: y\n\n"
    limit = len(frame) - 1
    with pytest.raises(SSEParseError) as info:
        parse([frame], max_event_bytes=limit)
    assert str(info.value) == TOO_LARGE.format(limit=limit)
    with pytest.raises(SSEParseError, match="max_event_bytes"):
        parse(bytewise(frame), max_event_bytes=limit)


def test_unterminated_line_beyond_the_limit_raises_while_it_grows() -> None:
    parser = SSEParser(max_event_bytes=100)
    parser.feed(b"data: ")
    for _ in range(9):
        parser.feed(b"x" * 10)
    with pytest.raises(SSEParseError, match="max_event_bytes=100"):
        parser.feed(b"x" * 10)
    with pytest.raises(SSEParseError, match=PARSER_FAILED):
        parser.feed(b"\n\n")


def test_long_comment_line_beyond_the_limit_raises() -> None:
    with pytest.raises(SSEParseError, match="max_event_bytes"):
        parse([b": " + b"x" * 100 + b"\n"], max_event_bytes=50)


def test_many_small_events_within_the_limit() -> None:
    stream = b"data: 0123456789\n\n" * 100
    assert len(parse([stream], max_event_bytes=18)) == 100


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limit_is_a_configuration_error(limit: int) -> None:
    with pytest.raises(ConfigurationError):
        SSEParser(max_event_bytes=limit)


# --- encoder --------------------------------------------------------------------


def test_encode_full_event() -> None:
    assert (
        encode_event('{"a":1}', event="message", id="s/1", retry=3000)
        == b'event: message\nid: s/1\nretry: 3000\ndata: {"a":1}\n\n'
    )


def test_encode_priming_event() -> None:
    assert encode_event("", id="s/0", retry=0) == b"id: s/0\nretry: 0\ndata:\n\n"


def test_encode_splits_data_on_every_line_ending() -> None:
    assert encode_event("a\r\nb\rc\nd\n") == b"data: a\ndata: b\ndata: c\ndata: d\ndata:\n\n"
    # Only CR and LF end lines: U+2028, VT and FF stay inside the data line.
    assert encode_event("a\u2028b\x0bc\x0cd") == "data: a\u2028b\x0bc\x0cd\n\n".encode()


def test_encode_strips_line_breaks_and_nul_from_id_and_event() -> None:
    assert (
        encode_event("x", event="a\r\nb\x00", id="1\n\rdata: evil\x00")
        == b"event: ab\nid: 1data: evil\ndata: x\n\n"
    )


@pytest.mark.parametrize("retry", [-1, True])
def test_encode_rejects_bad_retry(retry: int) -> None:
    with pytest.raises(SSEEncodeError):
        encode_event("x", retry=retry)


def test_encode_rejects_lone_surrogates() -> None:
    with pytest.raises(SSEEncodeError):
        encode_event("\ud800")
    with pytest.raises(SSEEncodeError):
        encode_comment("\udfff")


def test_encode_comment() -> None:
    assert encode_comment("ping") == b": ping\n"
    assert encode_comment() == b":\n"
    assert encode_comment("a\r\nb") == b": a\n: b\n"
    assert parse_whole(encode_comment(" x\ny")) == [
        SSEComment(" x", b":  x\n"),
        SSEComment("y", b": y\n"),
    ]


# --- properties -----------------------------------------------------------------

EOLS = [b"\n", b"\r\n", b"\r"]
line_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12
)
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@st.composite
def field_lines(draw: st.DrawFn) -> bytes:
    """One line's content (no terminator): every field kind the parser knows."""
    value = draw(line_text)
    kind = draw(
        st.sampled_from(["data", "event", "id", "retry", "comment", "bare", "unknown", "space"])
    )
    if kind == "retry":
        return b"retry: " + draw(st.sampled_from(["", "0", "42", "x1", "1500"])).encode()
    if kind == "comment":
        return (":" + value).encode()
    if kind == "bare":
        return draw(st.sampled_from([b"data", b"id", b"event"]))
    if kind == "unknown":
        return ("x-" + value.replace(":", "")).encode()
    if kind == "space":
        return ("data:" + value).encode()
    return f"{kind}: {value}".encode()


frames = st.lists(field_lines(), max_size=5)


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    """Frames with random line endings, maybe a BOM and an unfinished last frame."""
    out = [BOM] if draw(st.booleans()) else []
    for lines in draw(st.lists(frames, max_size=6)):
        for line in [*lines, b""]:
            out += [line, draw(st.sampled_from(EOLS))]
    out += draw(st.lists(field_lines(), max_size=2))
    return b"".join(out)


def chunkings(stream: bytes) -> st.SearchStrategy[list[bytes]]:
    cuts = st.lists(st.integers(0, len(stream)), max_size=min(30, len(stream) + 1))
    return cuts.map(lambda c: split_at(stream, c))


@PROPERTY
@given(st.data(), valid_streams())
def test_any_chunking_gives_the_same_items(data: st.DataObject, stream: bytes) -> None:
    chunks = data.draw(chunkings(stream))
    assert parse(chunks) == parse_whole(stream)


@PROPERTY
@given(valid_streams())
def test_bytewise_feeding_gives_the_same_items(stream: bytes) -> None:
    assert parse(bytewise(stream)) == parse_whole(stream)


@PROPERTY
@given(valid_streams())
def test_raw_bytes_reparse_to_the_same_items(stream: bytes) -> None:
    """Forwarding an item's raw bytes gives the client the item the app sent."""
    for item in parse_whole(stream):
        again = parse_whole(item.raw)
        assert again[-1] == item
        assert all(isinstance(i, SSEComment) for i in again[:-1])
    events = [i for i in parse_whole(stream) if isinstance(i, SSEEvent)]
    assert [i for i in parse_whole(b"".join(e.raw for e in events)) if isinstance(i, SSEEvent)] == (
        events
    )


def test_comment_inside_a_frame_keeps_cr_and_lf_apart() -> None:
    items = parse_whole(b"data: a\r: c\n\n")
    assert items == [SSEComment("c", b": c\n"), SSEEvent("a", raw=b"data: a\r: c\n\n")]


tokens = st.sampled_from(
    [
        *[b"data:", b"data: ", b"id:", b"retry: 1", b"event:", b":", b"\r", b"\n", b"\r\n", BOM],
        *[b"\x00", b"\xc3", b"\xa9", b"\xff", b"\xed\xa0\x80", b"\xf0\x9f", b"\x98\x80", b"x"],
    ]
)


@PROPERTY
@given(
    st.data(),
    st.lists(st.one_of(tokens, st.binary(max_size=6)), max_size=40).map(b"".join),
    st.sampled_from([4, 16, 1 << 20]),
)
def test_arbitrary_bytes_raise_only_parse_errors(
    data: st.DataObject, stream: bytes, limit: int
) -> None:
    chunks = data.draw(chunkings(stream))
    parser = SSEParser(max_event_bytes=limit)
    try:
        for chunk in chunks:
            for item in parser.feed(chunk):
                assert isinstance(item, SSEEvent | SSEComment)
        parser.close()
    except SSEParseError:
        pass
    parser.close()


@PROPERTY
@given(
    any_text,
    st.none() | any_text,
    st.none() | any_text,
    st.none() | st.integers(min_value=0, max_value=10**12),
)
def test_encode_parse_round_trip(
    data: str, event: str | None, event_id: str | None, retry: int | None
) -> None:
    frame = encode_event(data, event=event, id=event_id, retry=retry)

    def stripped(value: str | None) -> str | None:
        return None if value is None else "".join(c for c in value if c not in "\r\n\0")

    expected = SSEEvent(
        data.replace("\r\n", "\n").replace("\r", "\n"),
        stripped(event),
        stripped(event_id),
        retry,
        frame,
    )
    assert parse_whole(frame) == [expected]
    assert parse(bytewise(frame)) == [expected]


@PROPERTY
@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r"), max_size=40))
def test_encode_parse_round_trip_is_exact_without_cr(data: str) -> None:
    assert parse_whole(encode_event(data)) == [SSEEvent(data, raw=encode_event(data))]


@PROPERTY
@given(st.lists(frames, max_size=6), st.lists(field_lines(), max_size=2))
def test_line_ending_variants_give_the_same_events(
    frame_lines: list[list[bytes]], unfinished: list[bytes]
) -> None:
    lines = [line for f in frame_lines for line in [*f, b""]] + unfinished
    variants = [b"".join(line + eol for line in lines) for eol in EOLS]
    lf, crlf, cr = (without_raw(parse_whole(v)) for v in variants)
    assert lf == crlf == cr


@PROPERTY
@given(valid_streams())
def test_a_whole_crlf_frame_parses_as_it_does_line_by_line(stream: bytes) -> None:
    """A chunk that is one whole CRLF frame (what SDKs write) takes a shortcut; same items."""
    crlf = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    for frame in crlf.split(b"\r\n\r\n"):
        chunk = frame + b"\r\n\r\n"
        shortcut = whole_frame(chunk)
        if shortcut is not None:
            assert shortcut == parse(bytewise(chunk))


@PROPERTY
@given(st.binary(max_size=40) | st.text(max_size=40).map(lambda t: t.encode("utf-8", "replace")))
def test_an_event_message_frame_parses_as_it_does_line_by_line(payload: bytes) -> None:
    """``event: message`` then one data line (the SDK's frame) has a shortcut of its own."""
    chunk = b"event: message\r\ndata: " + payload + b"\r\n\r\n"
    shortcut = whole_frame(chunk)
    if shortcut is not None:
        assert shortcut == parse(bytewise(chunk))
    if b"\r" not in payload and b"\n" not in payload:
        try:
            payload.decode()
        except UnicodeDecodeError:
            assert shortcut is None  # a parser raises for it
        else:
            assert shortcut is not None


def test_the_whole_frame_shortcut_is_taken_for_an_sdk_event() -> None:
    chunk = b'event: message\r\ndata: {"a":1}\r\n\r\n'
    assert whole_frame(chunk) == [SSEEvent('{"a":1}', "message", None, None, chunk)]
    assert whole_frame(b"event: message\r\ndata:  two spaces\r\n\r\n") == [
        SSEEvent(" two spaces", "message", raw=b"event: message\r\ndata:  two spaces\r\n\r\n")
    ]
    assert whole_frame(b"event: message\r\ndata: x\r\n\r\n", limit=10) is None
    chunk = b'event: message\r\nid: 7\r\ndata: {"a":1}\r\n\r\n'
    assert whole_frame(chunk) == [SSEEvent('{"a":1}', "message", "7", None, chunk)]
    assert whole_frame(b": ping\r\n\r\n") is None
    assert whole_frame(b"data: a\r\n\r\ndata: b\r\n\r\n") is None
    assert whole_frame(b"data: a\r\r\n\r\n") is None
    assert whole_frame(BOM + b"data: a\r\n\r\n") is None  # a parser strips it at the start


def test_a_parser_mid_stream_takes_a_bom_as_text() -> None:
    stream = BOM + b"data: a\n\ndata: b\n\n"
    assert [i.data for i in parse([stream]) if isinstance(i, SSEEvent)] == ["a", "b"]
    parser = SSEParser(mid_stream=True)
    items = parser.feed(stream) + parser.close()
    assert [i.data for i in items if isinstance(i, SSEEvent)] == ["b"]  # "\ufeffdata" is no field


@PROPERTY
@given(any_text, st.none() | any_text, st.text(max_size=12), st.integers(0, 10**9))
def test_a_stored_event_is_encoded_as_encode_event_writes_it(
    data: str, event: str | None, stream_id: str, seq: int
) -> None:
    stored = StoredEvent(stream_id, seq, data, event)
    try:
        expected = encode_event(data, event=event, id=format_event_id(stream_id, seq))
    except SSEEncodeError:
        with pytest.raises(SSEEncodeError):
            encode_stored(stored)
        return
    assert encode_stored(stored) == expected


def test_a_usual_stored_event() -> None:
    stored = StoredEvent("s1", 2, '{"a":1}', "message")
    assert encode_stored(stored) == b'event: message\nid: s1.2\ndata: {"a":1}\n\n'


@PROPERTY
@given(
    st.text(max_size=12),
    st.integers(0, 10**6),
    st.none() | st.integers(-2, 10**6) | st.booleans(),
)
def test_a_priming_event_is_what_encode_event_writes(
    stream_id: str, seq: int, retry: int | None
) -> None:
    try:
        expected = encode_event("", id=format_event_id(stream_id, seq), retry=retry)
    except SSEEncodeError:
        with pytest.raises(SSEEncodeError):
            priming_event(stream_id, seq, retry)
        return
    assert priming_event(stream_id, seq, retry) == expected
