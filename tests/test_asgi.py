"""RequestHeads (the request headers the middleware reads, in one pass) and the size check."""

from __future__ import annotations

from mcp_session_mw.asgi import RequestHeads, header_too_large


def test_reads_the_headers_it_knows_and_keeps_repeats_in_order() -> None:
    raw = [
        (b"host", b"example"),
        (b"mcp-session-id", b"first"),
        (b"content-type", b"application/json"),
        (b"mcp-protocol-version", b"2025-11-25"),
        (b"mcp-protocol-version", b"2025-03-26"),
        (b"accept", b"text/event-stream"),
        (b"mcp-session-id", b"second"),
        (b"last-event-id", b"s_1"),
    ]
    heads = RequestHeads(raw)
    assert heads.session_ids == ["first", "second"]
    assert heads.content_types == ["application/json"]
    assert heads.version == "2025-11-25"  # the first one, as Starlette's Headers.get
    assert heads.accept == "text/event-stream"
    assert heads.last_event_ids == ["s_1"]
    assert not header_too_large(raw, 8192)


def test_absent_headers() -> None:
    heads = RequestHeads([(b"host", b"example")])
    assert heads.version is None
    assert heads.accept is None
    assert heads.session_ids == heads.content_types == heads.last_event_ids == []


def test_values_are_latin1() -> None:
    assert RequestHeads([(b"mcp-session-id", b"caf\xe9")]).session_ids == ["café"]


def test_too_large_is_one_header_over_the_limit_not_their_sum() -> None:
    many_small = [(b"x-a", b"a" * 10)] * 10  # 130 bytes in all, 13 each
    assert not header_too_large(many_small, 13)
    assert header_too_large(many_small, 12)
    one_big = [*many_small, (b"x-b", b"b" * 100)]
    assert header_too_large(one_big, 103) is False
    assert header_too_large(one_big, 102) is True
