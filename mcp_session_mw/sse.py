"""Incremental Server-Sent Events parser and encoder.

The middleware makes an app's SSE responses durable by storing every event
before forwarding it, so it has to understand the byte stream the app writes:
frames split across ``http.response.body`` messages at any byte, several frames
in one message, CRLF / LF / CR line endings. :class:`SSEParser` follows the
WHATWG "event stream interpretation" rules on bytes, scanning with C-level
``bytes`` methods (never a per-byte Python loop) because every SSE byte of every
tool call passes through it. :func:`encode_event` writes the frames the
middleware itself sends (replays, priming events); its output parses back to
exactly what it was given, which replay depends on.

Deliberate divergences from the WHATWG interpretation (the code says
"Divergence #N" where it departs):

1. Invalid UTF-8 raises :class:`SSEParseError` instead of becoming U+FFFD: a
   durable store must not silently keep different text than the app sent.
2. ``SSEEvent.id`` and ``SSEEvent.retry`` describe the fields of *this* frame
   (``None`` when absent), not the browser's sticky "last event ID" that carries
   over to later events. The middleware mints its own event ids; it needs to
   know what the app wrote on each frame.
3. Comments are surfaced as :class:`SSEComment` items (browsers drop them): the
   middleware forwards keep-alives but never stores them.
4. One event (or one line) may not exceed ``max_event_bytes``; a stream that
   never ends its lines cannot exhaust memory.
5. A ``retry`` value too long for :func:`int` to parse is ignored.
6. A CR at the very end of a chunk is held until the next chunk (or
   :meth:`SSEParser.close`) shows whether an LF follows, so ``raw`` stays the
   exact bytes received; a bare-CR stream therefore sees each frame one chunk
   late. CRLF and LF streams are not delayed.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from typing import TypeAlias

from .errors import ConfigurationError, SessionMiddlewareError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "SSEComment",
    "SSEEncodeError",
    "SSEEvent",
    "SSEItem",
    "SSEParseError",
    "SSEParser",
    "encode_comment",
    "encode_event",
    "whole_frame",
]

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024

TOO_LARGE = "SSE event or line longer than max_event_bytes={limit}"
INVALID_UTF8 = "SSE line is not valid UTF-8"
PARSER_CLOSED = "SSE parser fed after close()"
PARSER_FAILED = "SSE parser fed after it raised SSEParseError"
BAD_LIMIT = "max_event_bytes must be a positive integer, got {value!r}"
BAD_RETRY = "SSE retry must be a non-negative integer, got {value!r}"
NOT_UTF8_ENCODABLE = "SSE text cannot be encoded as UTF-8"

_BOM = b"\xef\xbb\xbf"
_LF = 10
_COLON = 58
_NOT_A_FIELD_START = b"\r\n:" + _BOM[:1]  # a line break, a comment, maybe a BOM
_MESSAGE_HEAD = b"event: message\r\ndata: "
_STRIP_FROM_FIELD = {ord("\r"): None, ord("\n"): None, 0: None}


class SSEParseError(SessionMiddlewareError):
    """The app's SSE body cannot be parsed (too large, or not UTF-8)."""


class SSEEncodeError(SessionMiddlewareError, ValueError):
    """A value given to the encoder cannot be written as an SSE field."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event; ``raw`` is its frame's bytes exactly as received.

    ``raw`` runs from the frame's first field line through its closing blank
    line, original line endings included, so the middleware can forward the
    app's own bytes and the client parses the same event from them. Comment
    lines *inside* a frame stay in ``raw`` (cutting them out could join a CR
    and an LF into one CRLF and change the frame's meaning) and are also
    reported, before the event, as :class:`SSEComment` items; comments before
    the first field line are not part of ``raw``.
    """

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A ``:`` line; ``text`` drops the colon and one following space."""

    text: str
    raw: bytes = b""


SSEItem: TypeAlias = SSEEvent | SSEComment


class SSEParser:
    """Turns SSE body chunks into events and comments, in stream order.

    Only the incomplete last line is kept between calls, so a large event that
    arrives in many small chunks costs linear, not quadratic, time; complete
    lines are decoded and folded into the pending frame as soon as they arrive.
    """

    __slots__ = (
        "_at_start",
        "_closed",
        "_data",
        "_event",
        "_failed",
        "_id",
        "_limit",
        "_raw",
        "_raw_size",
        "_retry",
        "_tail",
    )

    def __init__(
        self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, mid_stream: bool = False
    ) -> None:
        """``mid_stream``: the stream's first bytes were read elsewhere (no BOM is looked for)."""
        if isinstance(max_event_bytes, bool) or max_event_bytes < 1:
            raise ConfigurationError(BAD_LIMIT.format(value=max_event_bytes))
        self._limit = max_event_bytes
        self._tail = bytearray()  # incomplete last line, or a line ending in a lone CR
        self._at_start = not mid_stream  # a BOM is only skipped at the very start
        self._closed = False
        self._failed = False
        self._raw: list[bytes] = []
        self._raw_size = 0
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[SSEItem]:
        """Parse the next chunk; returns the items it completed, in order."""
        if self._failed:
            raise SSEParseError(PARSER_FAILED)
        if self._closed:
            raise SSEParseError(PARSER_CLOSED)
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)
        try:
            return self._feed(chunk)
        except SSEParseError:
            self._failed = True
            raise

    def close(self) -> list[SSEItem]:
        """End of body: finish a line ended by a final CR, drop any unfinished event.

        A frame without its closing blank line is never dispatched (per spec),
        and that is not an error: the app may simply have stopped mid-stream.
        """
        if self._closed or self._failed:
            return []
        self._closed = True
        out: list[SSEItem] = []
        tail = self._tail
        if tail.endswith(b"\r"):  # the line is complete; no LF can follow now
            try:
                self._lines([bytes(tail)], out)
            except SSEParseError:
                self._failed = True
                raise
        tail.clear()
        self._reset_frame()
        return out

    def _feed(self, chunk: bytes) -> list[SSEItem]:
        out: list[SSEItem] = []
        tail = self._tail
        if self._at_start:
            if tail:
                chunk = bytes(tail) + chunk
                tail.clear()
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                tail += chunk  # maybe the start of a BOM: wait for more
                return out
            self._at_start = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if not chunk:
            return out
        if not tail and not self._raw:
            whole = whole_frame(chunk, self._limit)
            if whole is not None:
                return whole
        if tail:
            if not tail.endswith(b"\r") and b"\n" not in chunk and b"\r" not in chunk:
                # Still inside one long line: append without rescanning the tail.
                tail += chunk
                if self._raw_size + len(tail) > self._limit:
                    raise SSEParseError(TOO_LARGE.format(limit=self._limit))
                return out
            chunk = bytes(tail) + chunk
            tail.clear()
        lines = chunk.splitlines(True)
        last = lines[-1]
        if last[-1] != _LF:
            # Unterminated, or ends in a CR whose LF may be in the next chunk.
            tail += last
            lines.pop()
        if lines:
            self._lines(lines, out)
        if tail and self._raw_size + len(tail) > self._limit:
            raise SSEParseError(TOO_LARGE.format(limit=self._limit))
        return out

    def _lines(self, lines: list[bytes], out: list[SSEItem]) -> None:
        """Apply complete lines (each with its terminator) to the pending frame."""
        limit = self._limit
        raw = self._raw
        raw_size = self._raw_size
        data = self._data
        try:
            for line in lines:
                content = line.rstrip(b"\r\n")  # a line holds exactly one terminator
                if not content:
                    raw.append(line)
                    if raw_size + len(line) > limit:
                        raise SSEParseError(TOO_LARGE.format(limit=limit))
                    if data:
                        out.append(
                            SSEEvent(
                                "\n".join(data), self._event, self._id, self._retry, b"".join(raw)
                            )
                        )
                        data = self._data = []
                    # Per spec, a frame without data lines dispatches nothing.
                    raw = self._raw = []
                    raw_size = 0
                    self._event = self._id = None
                    self._retry = None
                    continue
                if content[0] == _COLON:
                    # Divergence #3: comments are reported, not dropped.
                    if raw:  # inside a frame: keep its raw bytes contiguous
                        raw.append(line)
                        raw_size += len(line)
                    if raw_size > limit or len(line) > limit:
                        raise SSEParseError(TOO_LARGE.format(limit=limit))
                    text = content[1:].decode()  # Divergence #1: strict UTF-8
                    if text[:1] == " ":
                        text = text[1:]
                    out.append(SSEComment(text, line))
                    continue
                raw.append(line)
                raw_size += len(line)
                if raw_size > limit:  # Divergence #4
                    raise SSEParseError(TOO_LARGE.format(limit=limit))
                text = content.decode()  # Divergence #1: strict UTF-8
                name, colon, value = text.partition(":")
                if colon and value[:1] == " ":
                    value = value[1:]
                if name == "data":
                    data.append(value)
                elif name == "event":
                    self._event = value
                elif name == "id":
                    if "\x00" not in value:  # per spec, an id with NUL is ignored
                        self._id = value
                elif name == "retry" and value.isascii() and value.isdigit():
                    with suppress(ValueError):  # Divergence #5: beyond int()'s digit limit
                        self._retry = int(value)
                # Any other field is ignored, per spec.
        except UnicodeDecodeError as exc:
            raise SSEParseError(INVALID_UTF8) from exc
        finally:
            self._raw_size = raw_size

    def _reset_frame(self) -> None:
        self._raw = []
        self._raw_size = 0
        self._data = []
        self._event = None
        self._id = None
        self._retry = None


def whole_frame(chunk: bytes, limit: int = DEFAULT_MAX_EVENT_BYTES) -> list[SSEItem] | None:
    """The usual chunk, exactly one CRLF frame with no comment, parsed at once.

    What an SDK writes per event. None if ``chunk`` is anything else, starts
    like a BOM or is not UTF-8 (an :class:`SSEParser` then takes it);
    otherwise the items a parser would give for it in the middle of a stream.
    """
    if (
        chunk.startswith(_MESSAGE_HEAD)
        and chunk.count(b"\r") == 3 == chunk.count(b"\n")
        and chunk.endswith(b"\r\n\r\n")
        and len(chunk) <= limit
    ):
        # The commonest frame of all, one line of data after "event: message".
        try:
            text = chunk[len(_MESSAGE_HEAD) : -4].decode()
        except UnicodeDecodeError:
            return None
        return [SSEEvent(text, "message", None, None, chunk)]
    if (
        not chunk
        or chunk[0] in _NOT_A_FIELD_START
        or chunk[-4:] != b"\r\n\r\n"
        or chunk.find(b"\r\n\r\n") != len(chunk) - 4
        or b"\r\n:" in chunk
        or not chunk.count(b"\r") == chunk.count(b"\n") == chunk.count(b"\r\n")
        or len(chunk) > limit
    ):
        return None
    try:
        lines = chunk[:-4].decode().split("\r\n")
    except UnicodeDecodeError:
        return None  # a parser raises for it (Divergence #1) and stays failed
    data: list[str] = []
    event = id_ = None
    retry: int | None = None
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            if "\x00" not in value:
                id_ = value
        elif name == "retry" and value.isascii() and value.isdigit():
            with suppress(ValueError):
                retry = int(value)
    if not data:
        return []
    return [SSEEvent("\n".join(data), event, id_, retry, chunk)]


def _split_lines(text: str) -> list[str]:
    """Split on CRLF, CR and LF only (``str.splitlines`` also splits on U+2028 etc.)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _field(name: str, value: str) -> str:
    return f"{name}: {value}\n" if value else f"{name}:\n"


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # lone surrogates
        raise SSEEncodeError(NOT_UTF8_ENCODABLE) from exc


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One LF-terminated frame that :class:`SSEParser` reads back unchanged.

    Line breaks in ``data`` become separate ``data:`` lines (a reader joins them
    with LF, so CRLF and CR come back as LF). CR, LF and NUL are stripped from
    ``event`` and ``id``: a line break there would end the field early and let
    the value inject fields, and a NUL makes readers ignore the id.
    """
    frame = ""
    if event is not None:
        frame = _field("event", _one_line(event))
    if id is not None:
        frame += _field("id", _one_line(id))
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise SSEEncodeError(BAD_RETRY.format(value=retry))
        frame += f"retry: {retry}\n"
    if "\n" in data or "\r" in data:
        frame += "".join([_field("data", line) for line in _split_lines(data)])
    else:  # the usual case, one line: no split
        frame += _field("data", data)
    return _utf8(frame + "\n")


def _one_line(value: str) -> str:
    """``value`` without CR, LF and NUL (scanned first: they are rare)."""
    if "\r" in value or "\n" in value or "\x00" in value:
        return value.translate(_STRIP_FROM_FIELD)
    return value


def encode_comment(text: str = "") -> bytes:
    """Comment lines (one per line of ``text``), e.g. a keep-alive; no blank line.

    A comment needs no closing blank line: readers ignore it wherever it falls,
    so the middleware may send one between any two complete frames.
    """
    return _utf8("".join(f": {line}\n" if line else ":\n" for line in _split_lines(text)))
