"""Durable SSE streams: store every event before it is sent, replay and follow on resume.

Divergences from the MCP SDK's event store, on purpose:

1. Event ids are ``<stream>.<seq>``: the stream id is minted here (16 hex
   digits; ``get`` for the session's standalone GET stream), never the JSON-RPC
   request id, which repeats across sessions and reconnects.
2. The app's own event ids and ``retry`` fields are not forwarded; the
   middleware's ids are the only ones the client sees.
3. A stream whose producer stopped renewing its lease is ended for a resuming
   client with a JSON-RPC error response for its request id, so nobody waits
   forever on a request whose process died.
4. A resume position older than what is retained is answered with a JSON-RPC
   error (``MSG_EVENTS_LOST``), never skipped silently; so is a resume of a
   stream ``max_streams_per_session`` removed (its request id went with it, so
   the error's id is null), and stored events that fail to decrypt
   (``MSG_EVENTS_UNREADABLE``, see :mod:`mcp_session_mw.encryption`).
5. A resume of a finished request stream whose last event is no response for
   its request is ended with an error response for it (``MSG_NO_RESPONSE``,
   sent, not stored), never with nothing: a client would resume forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import signal
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.types import Receive, Send

from . import metrics
from .errors import CorruptRecordError, StoreError
from .jsonrpc import INTERNAL_ERROR, RequestId
from .protocol import PRIMING_REVISION, SESSION_HEADER
from .records import JSONValue, StoredEvent, StreamState
from .sse import encode_event
from .stores.base import Store

logger = logging.getLogger("mcp_session_mw")

STANDALONE_STREAM = "get"
"""Stream id of a session's standalone GET stream (its outbox)."""

EVENT_ID_RE = re.compile(r"(get|[0-9a-f]{16})\.(0|[1-9][0-9]{0,17})")
MAX_EVENT_ID_LENGTH = 40
READ_BATCH = 500
EXIT_CHECK = 0.25
"""Seconds between two looks (one per process) at whether the server is exiting."""
IDLE_RECHECK = 300.0
"""Seconds an idle standalone stream sleeps between two looks at its state, when an
:class:`ExitWatch` ends it on exit. The store's follower wakes it when its stream
moves or goes; this look only repairs a wake lost some other way, and costs
10,000 idle streams a few store reads a second instead of thousands."""

MSG_STREAM_ORPHANED = "Stream ended: the server process producing it stopped"
MSG_STREAM_STORE_UNAVAILABLE = "Service Unavailable: the session store cannot be reached"
MSG_NO_RESPONSE = "Internal error: the server ended the stream without a response"
MSG_EVENTS_LOST = "Events lost: the resume position is older than the events still kept"
MSG_EVENTS_UNREADABLE = "Events lost: the stored events of this stream cannot be decrypted"
STREAM_ORPHANED = -32001
EVENTS_LOST = -32002
EVICTED_META_KEY = "evicted_streams"
"""The session ``meta`` key listing the streams ``max_streams_per_session`` removed, newest last."""

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(frozen=True)
class StreamOptions:
    """How durable streams behave; built once by the middleware from its options."""

    instance_id: str = field(default_factory=lambda: secrets.token_hex(8))
    retry_ms: int | None = 1000
    lease_seconds: float = 10.0
    max_events_per_stream: int | None = 50_000
    max_streams_per_session: int | None = 100
    max_stream_seconds: float | None = None
    follow_interval: float = 1.0


def mint_stream_id() -> str:
    return secrets.token_hex(8)


def format_event_id(stream_id: str, seq: int) -> str:
    return f"{stream_id}.{seq}"


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """``(stream id, seq)`` of a well-formed Last-Event-ID, else None."""
    if value is None or len(value) > MAX_EVENT_ID_LENGTH:
        return None
    match = EVENT_ID_RE.fullmatch(value)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def server_is_exiting() -> bool:
    """True once the ASGI server has been told to exit (uvicorn: SIGTERM or SIGINT).

    uvicorn waits for open responses before it shuts down, and a live GET
    stream never ends by itself, so followers check this between waits and end
    their stream; the client reconnects (to another instance) with
    ``Last-Event-ID``. Found through the server's signal handler, duck-typed,
    without importing the server.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        owner = getattr(signal.getsignal(signum), "__self__", None)
        if getattr(owner, "should_exit", False) is True:
            return True
    return False


class ExitWatch:
    """One look per process at the server's exit, for every live follow at once.

    Runs in the middleware's background task group (the lifespan); each
    follow ends when :attr:`exiting` is set, so an idle stream need not wake
    up to look for itself.
    """

    def __init__(self) -> None:
        self.exiting = anyio.Event()

    async def run(self) -> None:
        # The server's state can only be looked at: no event tells of it.
        while not server_is_exiting():  # noqa: ASYNC110
            await anyio.sleep(EXIT_CHECK)
        self.exiting.set()


def priming_event(stream_id: str, seq: int, retry_ms: int | None) -> bytes:
    """The event that gives a client a stream position before anything else: id, empty data.

    What ``encode_event("", id=format_event_id(stream_id, seq), retry=retry_ms)``
    writes, built directly when the stream id needs no cleaning (ours never do).
    """
    if not stream_id.isprintable() or (
        retry_ms is not None
        and (isinstance(retry_ms, bool) or not isinstance(retry_ms, int) or retry_ms < 0)
    ):
        return encode_event("", id=format_event_id(stream_id, seq), retry=retry_ms)
    retry = "" if retry_ms is None else f"retry: {retry_ms:d}\n"
    return f"id: {format_event_id(stream_id, seq)}\n{retry}data:\n\n".encode()


def wants_priming(protocol_version: str) -> bool:
    """Revisions from 2025-11-25 on get a priming event (id, empty data) first."""
    return protocol_version >= PRIMING_REVISION


def error_event(request_id: RequestId, code: int, message: str) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}},
        separators=(",", ":"),
    )


def encode_stored(event: StoredEvent) -> bytes:
    data, name = event.data, event.event
    if (
        name
        and data
        and name.isprintable()  # no CR, LF or NUL (nor anything else unusual)
        and event.stream_id.isprintable()
        and "\n" not in data
        and "\r" not in data
    ):
        # The usual event, what encode_event writes for it, in one step.
        try:
            event_id = format_event_id(event.stream_id, event.seq)
            return f"event: {name}\nid: {event_id}\ndata: {data}\n\n".encode()
        except UnicodeEncodeError:  # lone surrogates: encode_event says so
            pass
    return encode_event(data, event=name, id=format_event_id(event.stream_id, event.seq))


async def follow_stream(
    *,
    store: Store,
    session_id: str,
    stream_id: str,
    after_seq: int,
    send: Send,
    receive: Receive,
    options: StreamOptions,
    priming: bool = False,
    exiting: anyio.Event | None = None,
) -> None:
    """Answer a GET: replay the stream after ``after_seq``, then follow it live.

    A request stream ends once its final response has been sent; the standalone
    stream runs until the client leaves, or ``exiting`` is set (an
    :class:`ExitWatch`'s; without one it looks for itself every
    ``follow_interval``). The caller has checked that the stream belongs to
    the session.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, (SESSION_HEADER.encode(), session_id.encode())],
        }
    )
    metrics.STREAMS_OPEN.inc()
    try:
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            async def watch_exit(exiting: anyio.Event) -> None:
                await exiting.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            if exiting is not None:
                tg.start_soon(watch_exit, exiting)
            idle = IDLE_RECHECK if exiting is not None else options.follow_interval
            try:
                if priming:
                    await _send_body(
                        send,
                        priming_event(stream_id, after_seq, options.retry_ms),
                    )
                await _replay_and_follow(
                    store, session_id, stream_id, after_seq, send, options, idle
                )
            except CorruptRecordError:
                await _end_unreadable(store, session_id, stream_id, send)
            except OSError:
                pass
            tg.cancel_scope.cancel()
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        metrics.STREAMS_OPEN.dec()


async def _replay_and_follow(
    store: Store,
    session_id: str,
    stream_id: str,
    after_seq: int,
    send: Send,
    options: StreamOptions,
    idle: float,
) -> None:
    last = after_seq
    # A request stream looks at its producer's lease every follow_interval; the
    # standalone stream has none, and sleeps until its stream moves.
    wait = idle if stream_id == STANDALONE_STREAM else options.follow_interval
    state = await store.load_stream(session_id, stream_id)
    if state is None:
        return
    if last + 1 < state.first_seq:
        metrics.REPLAY_GAPS.inc()
        await _send_body(
            send,
            encode_event(error_event(state.request_id, EVENTS_LOST, MSG_EVENTS_LOST)),
        )
        return
    events = await store.read_events(session_id, stream_id, last, READ_BATCH)
    metrics.EVENTS_REPLAYED.inc(len(events))
    while True:
        if events:
            await _send_body(send, b"".join(encode_stored(e) for e in events))
            last = events[-1].seq
            if len(events) == READ_BATCH:
                events = await store.read_events(session_id, stream_id, last, READ_BATCH)
                metrics.EVENTS_REPLAYED.inc(len(events))
                continue
        state = await store.load_stream(session_id, stream_id)
        if state is None:  # the session was deleted or expired
            return
        if state.done and last >= state.last_seq:
            if not await _answered(store, session_id, state, events):
                await _end_unanswered(state, send)
            return
        if (
            stream_id != STANDALONE_STREAM
            and not state.done
            and last >= state.last_seq
            and state.lease_expires < store.now()
        ):
            await _end_orphan(store, session_id, state, send)
            return
        if server_is_exiting():
            return
        events = await store.wait_events(session_id, stream_id, last, wait, READ_BATCH)


async def _answered(
    store: Store, session_id: str, state: StreamState, sent: list[StoredEvent]
) -> bool:
    """True unless ``state`` is a finished request stream whose last event is no answer.

    A finished stream ends with the response to its request (the app's, or the
    error the middleware stored for it); one that does not (its answer was lost
    on the way to the store) must not end a resume with nothing, or the client
    resumes again and again. ``sent`` is what this resume sent last, usually
    that final event, so the store is read only when the resume began at the end.
    """
    if state.stream_id == STANDALONE_STREAM or state.request_id is None:
        return True
    if sent and sent[-1].seq == state.last_seq:
        tail = sent[-1]
    elif state.last_seq < max(state.first_seq, 1):
        return False  # no event kept at all
    else:
        found = await store.read_events(session_id, state.stream_id, state.last_seq - 1, 1)
        if not found:
            return False
        tail = found[-1]
    return is_response_to(tail.data, state.request_id)


_RESPONSE_HEAD = '{"jsonrpc":"2.0","id":'
_RESPONSE_TAILS = (',"result":', ',"error":')


def is_response_to(data: str, request_id: RequestId) -> bool:
    """True if event ``data`` is the JSON-RPC response (result or error) for ``request_id``."""
    if '"result"' not in data and '"error"' not in data:
        return False
    if type(request_id) is int or type(request_id) is str:
        # How the SDK writes a response: a large result need not be parsed to tell.
        head = _RESPONSE_HEAD + (
            str(request_id) if type(request_id) is int else json.dumps(request_id)
        )
        if data.startswith(head) and data.startswith(_RESPONSE_TAILS, len(head)):
            return True
    try:
        message = json.loads(data)
    except ValueError:
        return False
    return (
        isinstance(message, dict)
        and message.get("id") == request_id
        and ("result" in message or "error" in message)
    )


async def _end_unanswered(state: StreamState, send: Send) -> None:
    """End a resume of a finished stream that holds no response with the error for its request."""
    logger.warning("a resumed stream was finished without a response; answered with an error")
    data = error_event(state.request_id, INTERNAL_ERROR, MSG_NO_RESPONSE)
    await _send_body(send, encode_event(data, event="message"))


async def _end_unreadable(store: Store, session_id: str, stream_id: str, send: Send) -> None:
    """End a stream whose stored events do not decrypt with an error for its request.

    The events are not skipped: the client learns its request's answer is lost.
    """
    logger.warning("ended a stream whose stored events cannot be decrypted")
    try:
        state = await store.load_stream(session_id, stream_id)
    except StoreError:
        state = None
    request_id = None if state is None else state.request_id
    with contextlib.suppress(OSError):
        await _send_body(
            send, encode_event(error_event(request_id, EVENTS_LOST, MSG_EVENTS_UNREADABLE))
        )


def note_evicted(
    meta: dict[str, JSONValue], stream_ids: list[str], keep: int
) -> dict[str, JSONValue]:
    """``meta`` with ``stream_ids`` added to the removed streams, the newest ``keep`` kept."""
    known = meta.get(EVICTED_META_KEY)
    noted = [s for s in known if isinstance(s, str)] if isinstance(known, list) else []
    noted += [stream_id for stream_id in stream_ids if stream_id not in noted]
    return {**meta, EVICTED_META_KEY: noted[-keep:]}


def was_evicted(meta: dict[str, JSONValue], stream_id: str) -> bool:
    """True if ``max_streams_per_session`` removed this stream of the session (lately)."""
    known = meta.get(EVICTED_META_KEY)
    return isinstance(known, list) and stream_id in known


async def answer_events_lost(send: Send, session_id: str) -> None:
    """Answer the resume of a removed stream: the same error as a trimmed one (id null)."""
    metrics.REPLAY_GAPS.inc()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, (SESSION_HEADER.encode(), session_id.encode())],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": encode_event(error_event(None, EVENTS_LOST, MSG_EVENTS_LOST)),
        }
    )


async def _end_orphan(store: Store, session_id: str, state: StreamState, send: Send) -> None:
    """Store and send the error response that ends a stream whose producer died."""
    data = error_event(state.request_id, STREAM_ORPHANED, MSG_STREAM_ORPHANED)
    try:
        stored = await store.append_event(session_id, state.stream_id, data, event="message")
        await store.finish_stream(session_id, state.stream_id)
        payload = encode_stored(stored)
    except StoreError:
        payload = encode_event(data, event="message")
    logger.warning("ended an orphaned stream for a resuming client")
    await _send_body(send, payload)


async def _send_body(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def publish(
    store: Store,
    session_id: str,
    message: dict[str, Any],
    *,
    max_events: int | None = StreamOptions.max_events_per_stream,
) -> StoredEvent:
    """Put a server-to-client JSON-RPC message on the session's standalone GET stream.

    Works from any process with a handle on the same store; the client's GET
    stream receives it on whichever instance it is connected to.
    """
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    state = await store.load_stream(session_id, STANDALONE_STREAM)
    if state is None:
        await store.open_stream(session_id, StreamState(stream_id=STANDALONE_STREAM))
    return await store.append_event(
        session_id, STANDALONE_STREAM, data, event="message", max_events=max_events
    )
