"""Write-ahead storage of one SSE response of the app.

Every event the app sends is stored before the client sees it. A response
whose first events hold its final answer (nearly every tool call) is stored
from the app's own send, in one ``write_stream`` call that opens, appends and
finishes the stream: no task, no queue. Anything longer gets a writer task
and a queue, so a burst of events costs one store round trip instead of one
each, and the app is held back only when the queue is full (``QUEUE_SIZE``
items).

The duties on a clock (open the stream if the app sends nothing for
``OPEN_DELAY``, renew the lease, end the connection after
``max_stream_seconds``) are started by the process's ``StreamWatcher`` (see
``watch``), so a short response has no timer and nothing to cancel.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import Message, Send

from .errors import StoreError
from .jsonrpc import INTERNAL_ERROR, RequestId
from .logs import log_failure
from .records import StoredEvent, StreamState
from .relay import register, tag_events
from .sse import (
    SSEComment,
    SSEEvent,
    SSEItem,
    SSEParseError,
    SSEParser,
    encode_comment,
    encode_event,
    whole_frame,
)
from .stores.base import Store
from .streams import (
    MSG_NO_RESPONSE,
    MSG_STREAM_STORE_UNAVAILABLE,
    STANDALONE_STREAM,
    StreamOptions,
    encode_stored,
    error_event,
    is_response_to,
    mint_stream_id,
    note_evicted,
    priming_event,
    wants_priming,
)
from .tasks import Tasks
from .watch import OPEN_DELAY, TICK, StreamWatcher

logger = logging.getLogger("mcp_session_mw")

QUEUE_SIZE = 1024
"""Items (events, comments) parsed but not yet stored before the app's sends wait."""
BATCH_SIZE = 500
"""At most this many events go to the store in one call."""
GATHER_SECONDS = 0.005
"""While the app streams, an event waits at most this long for others to share its batch."""
GATHER_CHECKPOINTS = 8
"""... and no longer than this many turns of the event loop in a row without a new event."""
RECORD_EVERY = 10
"""New streams are recorded in the session (for ``max_streams_per_session``) in batches
of a tenth of the cap: one session update per that many requests, not one each."""


@dataclass
class _Mark:
    """A queue item that is no event: close the client's connection, or signal a flush."""

    close: bool = False
    flushed: anyio.Event | None = None


_Item = SSEEvent | SSEComment | _Mark


class DurableResponse:
    """One SSE response of the app, stored before it is forwarded.

    The client may leave at any time; the app keeps running (it never sees a
    disconnect) and every event it still emits is stored, so a resume by GET
    with ``Last-Event-ID`` gets it. When the client's connection must end
    early (``max_stream_seconds``, or :meth:`close_connection`), the HTTP
    response is finished while the app's events keep flowing into the store.

    A response whose first events include its final answer (most tool calls)
    is written from the app's own send, in one ``write_stream`` call that
    opens, appends and finishes the stream. Anything longer gets a writer task
    and a queue, so bursts are stored in batches while the app goes on.
    """

    # Where each response starts; set on the instance as it goes (fewer stores per response).
    final_seen = False
    app_last_event_id: str | None = None
    _client_open = True
    _head: Message | None = None  # the response start, until something follows it
    _priming = b""  # our priming event, sent with the first body
    _finished = False
    _failed = False
    _final_event: SSEEvent | None = None
    _final_stored = False
    _opened = False
    _stream_done = False
    _got_event = False
    _ending = False
    _open_busy: anyio.Event | None = None
    _queue_in: MemoryObjectSendStream[_Item] | None = None
    _writer_done: anyio.Event | None = None
    _last_batch_end = -math.inf  # when the writer last sent a batch
    _parser: SSEParser | None = None  # made for the first chunk that is not one whole frame
    _mid_stream = False  # a chunk of the app's body was read (a BOM is only at its start)
    _sending = False  # a send to the client is under way (see _to_client)
    _sent: anyio.Event | None = None  # set when it ends, for a send waiting its turn

    def __init__(
        self,
        *,
        store: Store,
        session_id: str,
        request_id: RequestId,
        protocol_version: str,
        options: StreamOptions,
        send: Send,
        tasks: Tasks,
        watcher: StreamWatcher | None = None,
        unrecorded: list[str] | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.request_id = request_id
        self.protocol_version = protocol_version
        self.options = options
        self.stream_id = mint_stream_id()
        self._send = send
        self._tasks = tasks
        self._watcher = watcher
        self._unrecorded = [] if unrecorded is None else unrecorded
        self._started = started = time.monotonic()
        self._renew_at = started + options.lease_seconds / 3
        self._cut_at = (
            None if options.max_stream_seconds is None else started + options.max_stream_seconds
        )

    # -- the app's side ----------------------------------------------------------

    def start(self, message: Message) -> None:
        """Take the response start (without a content-length); it goes out with the first body.

        The start and our priming event are held until the first events are
        stored (or the stream is opened alone, ``OPEN_DELAY`` on): a tool's
        answer then reaches the client in one body with its priming event,
        ending the response, instead of four sends. Nothing here waits: the
        SDK drops its own priming event when a tool closes the stream
        (``close_sse_stream``) before that event was written, and then the
        rest of the stream could not be fetched from it.
        """
        if self._watcher is not None:
            self._watcher.add(self)
        else:
            self._tasks.spawn(
                "a durable response's clock", self._watch_alone, on_failure=self._broken
            )
        self._head = message
        if wants_priming(self.protocol_version):
            self._priming = priming_event(self.stream_id, 0, self.options.retry_ms)

    async def body(self, message: Message) -> None:
        """Store and forward what one body message of the app carries, or queue it for that."""
        more = bool(message.get("more_body", False))
        chunk = message.get("body", b"")
        parser = self._parser
        if not chunk and parser is None and self.final_seen:
            return  # the end of a response whose answer is out: nothing to store or send
        try:
            # Most bodies are one whole frame, or nothing: then no parser is made.
            items: list[SSEItem] | None = None
            if parser is None:
                items = whole_frame(chunk) if chunk else []
            if items is None:
                if parser is None:
                    parser = self._parser = SSEParser(mid_stream=self._mid_stream)
                items = parser.feed(chunk)
                if not more:
                    items += parser.close()
            if chunk:
                self._mid_stream = True
        except SSEParseError:
            logger.warning("the app sent an SSE body that cannot be parsed; dropped")
            items = []
        if len(items) == 1 and self._queue_in is None and not self._failed:
            event = items[0]
            if isinstance(event, SSEEvent) and event.data and self._is_final(event.data):
                await self._answer(event)
                return
        kept: list[_Item] = []
        has_events = False
        for item in items:
            if isinstance(item, SSEEvent):
                if item.id:
                    self.app_last_event_id = item.id
                if not item.data:
                    continue  # the app's own priming event: ours was sent instead
                if self._is_final(item.data):
                    self._final_event = item
                has_events = self._got_event = True
            kept.append(item)
        if self._queue_in is None and (self._final_event is not None or not has_events):
            # Nothing queued before it and the answer is here (or no event
            # at all): written from this send, no writer task needed.
            if kept:
                await self._write_batch(kept)
            self.final_seen = self._final_event is not None
        else:
            queue = self._queue_in or self._start_writer()
            for queued in kept:
                try:
                    try:  # no checkpoint per event: the writer need not run after each one
                        queue.send_nowait(queued)
                    except anyio.WouldBlock:
                        await queue.send(queued)
                except anyio.BrokenResourceError:
                    break  # the writer failed (see _broken): finish() stores the error
                # Only once it is queued: a send cancelled on the way (the
                # server exiting) leaves the response without its answer, and
                # finish() stores the error for it.
                if queued is self._final_event:
                    self.final_seen = True
        if not more and self.needs_drain:
            # The app ended the response before its result (it closed the
            # stream for polling): end the client's connection too, once what
            # came before is out, and let the middleware fetch the rest.
            self._parser = None  # what the middleware fetches next is a new body
            self._mid_stream = False
            await self.request_close()

    async def _answer(self, event: SSEEvent) -> None:
        """The usual response, whose first event is its answer: one write, one send.

        What the general path of :meth:`body` does for it, straight: the
        stream is opened, given the event and finished in one store call, and
        the client's response ends with it.
        """
        if event.id:
            self.app_last_event_id = event.id
        self._final_event = event
        self._got_event = True  # the watcher does not open the stream alone any more
        await self._wait_open()  # one the watcher began before this event came
        if self._failed:
            self.final_seen = True
            return
        try:
            stored = await self.store.write_stream(
                self.session_id,
                self.stream_id,
                ((event.data, event.event),),
                open_as=None if self._opened else self._state(),
                finish=True,
                max_events=self.options.max_events_per_stream,
            )
        except StoreError:
            log_failure(logger, "could not store SSE events; ending the stream")
            self.final_seen = True
            await self._fail()
            return
        self._final_stored = self._stream_done = True
        self.final_seen = True
        if not self._opened:
            await self._opened_now()
        await self._to_client(
            {"type": "http.response.body", "body": encode_stored(stored[0]), "more_body": False}
        )

    @property
    def needs_drain(self) -> bool:
        """True when the app cut the stream early and can be resumed by its own event id."""
        return (
            not self._finished
            and not self.final_seen
            and self.request_id is not None
            and self.app_last_event_id is not None
        )

    async def flush(self) -> None:
        """Wait until everything queued so far is stored and forwarded."""
        if self._finished or self._queue_in is None:
            return
        flushed = anyio.Event()
        try:
            await self._queue_in.send(_Mark(flushed=flushed))
        except anyio.BrokenResourceError:  # the writer failed: nothing more is stored
            return
        await flushed.wait()

    def finish_at_once(self) -> bool:
        """Finish now if nothing is left to store or send (most tool calls); False if not.

        The stream is done (or failed), no writer or opening is under way and
        the client's response has ended: :meth:`finish` would not wait on anything.
        """
        if self._finished:
            return True
        if (
            self._queue_in is not None
            or self._open_busy is not None
            or self._client_open
            or not (self._stream_done or self._failed)
        ):
            return False
        self._ending = self._finished = True
        if self._watcher is not None:
            self._watcher.discard(self)
        return True

    async def finish(self) -> None:
        """The app is done: store what is queued, mark the stream done, end the response."""
        if self.finish_at_once():
            return
        self._ending = True  # the stream is not opened alone any more (see tick)
        # The writer stores and forwards what is queued, then ends.
        if self._queue_in is not None:
            self._queue_in.close()
        if self._writer_done is not None:
            await self._writer_done.wait()
        await self._wait_open()
        self._finished = True
        if self._watcher is not None:
            self._watcher.discard(self)
        if not self._failed and not self._stream_done:
            items: list[tuple[str, str | None]] = []
            if not self._final_stored and self.request_id is not None:
                # The app ended without its answer stored (it crashed, cut a
                # stream it cannot resume, or its send was cancelled as the
                # server exited): answer for it so no client waits forever.
                data = error_event(self.request_id, INTERNAL_ERROR, MSG_NO_RESPONSE)
                items.append((data, "message"))
            try:
                stored = await self.store.write_stream(
                    self.session_id,
                    self.stream_id,
                    items,
                    open_as=None if self._opened else self._state(),
                    finish=True,
                )
                self._opened = self._stream_done = True
                if stored:
                    await self._to_client(_body(encode_stored(stored[0])))
            except StoreError:
                log_failure(logger, "could not mark a stream finished")
        await self.close_connection()

    async def request_close(self) -> None:
        """End the client's connection once what is already queued is out.

        Later events are still stored, and the client resumes by GET with
        ``Last-Event-ID`` (SEP-1699 polling).
        """
        if self._finished or self._queue_in is None:
            await self.close_connection()
            return
        try:
            await self._queue_in.send(_Mark(close=True))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self.close_connection()

    async def close_connection(self) -> None:
        """End the client's HTTP response now."""
        await self._to_client({"type": "http.response.body", "body": b"", "more_body": False})

    # -- background duties ---------------------------------------------------------

    def _start_writer(self) -> MemoryObjectSendStream[_Item]:
        self._queue_in, queue_out = anyio.create_memory_object_stream[_Item](QUEUE_SIZE)
        self._writer_done = anyio.Event()
        try:
            self._tasks.spawn(
                "a durable response's writer", self._write, queue_out, on_failure=self._broken
            )
        except RuntimeError:  # the server is gone (see tasks): finish() need not wait for it
            self._queue_in.close()
            queue_out.close()
            self._queue_in = None
            self._writer_done = None
            raise
        return self._queue_in

    def tick(self, now: float) -> None:
        """Start the duties due at ``now``: called every ``TICK`` seconds while this runs.

        The stream is opened alone if the app has sent nothing for
        ``OPEN_DELAY`` (a resuming client finds it, and the lease tells it a
        live producer from a dead one); the lease is renewed every third of
        ``lease_seconds``; the client's connection ends after
        ``max_stream_seconds``.
        """
        if self._finished:
            return
        if not self._opened and not self._got_event and self._open_busy is None:
            if not self._ending and now - self._started >= OPEN_DELAY:
                self._open_busy = anyio.Event()
                self._tasks.spawn(
                    "opening a durable stream", self._open_alone, on_failure=self._broken
                )
        elif self._opened and not self._stream_done and now >= self._renew_at:
            self._renew_at = now + self.options.lease_seconds / 3
            self._tasks.spawn("renewing a stream lease", self._renew_lease)
        if self._cut_at is not None and now >= self._cut_at:
            self._cut_at = None
            self._tasks.spawn(
                "ending a stream's connection", self.request_close, on_failure=self._broken
            )

    async def _watch_alone(self) -> None:
        """Keep this response's time when the middleware has no watcher (no lifespan)."""
        while not self._finished:
            await anyio.sleep(TICK)
            self.tick(time.monotonic())

    async def _wait_open(self) -> None:
        if self._open_busy is not None:
            await self._open_busy.wait()

    def _state(self) -> StreamState:
        return StreamState(
            stream_id=self.stream_id,
            request_id=self.request_id,
            owner=self.options.instance_id,
            lease_expires=self.store.now() + self.options.lease_seconds,
        )

    async def _open_alone(self) -> None:
        assert self._open_busy is not None
        try:
            try:
                await self.store.write_stream(
                    self.session_id, self.stream_id, [], open_as=self._state()
                )
            except StoreError:
                log_failure(logger, "could not open a durable stream")
                await self._fail()
                return
            await self._opened_now()
            await self._to_client(_body(b""))  # the held start and priming event
        finally:
            self._open_busy.set()

    async def _opened_now(self) -> None:
        """The stream is in the store: note it for ``max_streams_per_session``."""
        self._opened = True
        cap = self.options.max_streams_per_session
        if cap is None:
            return
        pending = self._unrecorded
        pending.append(self.stream_id)
        if len(pending) < max(1, cap // RECORD_EVERY):
            return
        try:
            await self._cap_streams(cap)
        except StoreError:
            log_failure(logger, "could not record a durable stream in its session")

    async def _cap_streams(self, cap: int) -> None:
        """Keep at most ``cap`` (``max_streams_per_session``) request streams; drop the oldest.

        New streams are collected per process (``unrecorded``, kept by the
        middleware per session) and noted with :meth:`Store.record_streams`
        ``cap // RECORD_EVERY`` at a time, which drops the oldest beyond the
        cap in the same write: a session may hold that many more streams than
        the cap in between, and, if the process stops first, they stay until
        the session ends.
        """
        pending = self._unrecorded
        new = [stream_id for stream_id in pending if stream_id != STANDALONE_STREAM]
        pending.clear()
        if not new:
            return
        try:
            dropped = await self.store.record_streams(self.session_id, new, keep=cap)
        except StoreError:
            pending[:0] = new  # the next stream tries again
            raise
        if dropped:
            # Their resume gets the "events lost" error, not an unknown id's 400.
            await self.store.update_meta(
                self.session_id, lambda meta: note_evicted(meta, dropped, cap)
            )

    async def _write(self, queue: MemoryObjectReceiveStream[_Item]) -> None:
        """Store each burst of queued events in one call, then forward it."""
        try:
            async with queue:
                async for first in queue:
                    batch = await self._next_batch(queue, first)
                    await self._write_batch(batch)
                    self._last_batch_end = time.monotonic()
        finally:
            assert self._writer_done is not None
            self._writer_done.set()

    async def _next_batch(
        self, queue: MemoryObjectReceiveStream[_Item], first: _Item
    ) -> list[_Item]:
        """``first`` and what queues up behind it: at most ``BATCH_SIZE`` events, up to a mark.

        While the app sends events back to back (the previous batch went out
        less than ``GATHER_SECONDS`` ago), the batch waits for more: it yields
        to the app again each time nothing new has arrived, ``GATHER_CHECKPOINTS``
        times in a row at most, for ``GATHER_SECONDS`` in all. An event after a
        pause, and everything from the app's answer on, goes out at once.
        """
        batch = [first]
        events = 1 if isinstance(first, SSEEvent) else 0
        started = time.monotonic()
        gather = started - self._last_batch_end < GATHER_SECONDS
        quiet = 0
        while events < BATCH_SIZE and not isinstance(batch[-1], _Mark):
            try:
                item = queue.receive_nowait()
            except anyio.WouldBlock:
                if (
                    not gather
                    or self._final_event is not None
                    or quiet == GATHER_CHECKPOINTS
                    or time.monotonic() - started > GATHER_SECONDS
                ):
                    break
                quiet += 1
                await anyio.lowlevel.checkpoint()
                continue
            except anyio.EndOfStream:
                break
            quiet = 0
            batch.append(item)
            events += isinstance(item, SSEEvent)
        return batch

    async def _write_batch(self, batch: list[_Item]) -> None:
        mark = batch[-1] if isinstance(batch[-1], _Mark) else None
        events = [item for item in batch if isinstance(item, SSEEvent)]
        stored: list[StoredEvent] = []
        if events and not self._failed:
            await self._wait_open()
        if events and not self._failed:
            try:
                items, pending = tag_events(
                    [(event.data, event.event) for event in events], self.options.instance_id
                )
                if pending:  # before the client can see the request, so its reply finds us
                    await register(self.store, self.session_id, pending, self.options.instance_id)
                final = self._final_event is not None and any(
                    event is self._final_event for event in events
                )
                opening = None if self._opened else self._state()
                stored = await self.store.write_stream(
                    self.session_id,
                    self.stream_id,
                    items,
                    open_as=opening,
                    finish=final,
                    max_events=self.options.max_events_per_stream,
                )
                if final:
                    self._final_stored = self._stream_done = True
                if opening is not None:
                    await self._opened_now()
            except StoreError:
                log_failure(logger, "could not store SSE events; ending the stream")
                await self._fail()
        if not self._failed:
            chunks: list[bytes] = []
            stored_iter = iter(stored)
            for item in batch:
                if isinstance(item, SSEComment):
                    chunks.append(item.raw or encode_comment(item.text))
                elif isinstance(item, SSEEvent):
                    chunks.append(encode_stored(next(stored_iter)))
            if chunks:
                # The answer ends the client's response: nothing follows it on a
                # request's stream (what the app still sends is stored).
                await self._to_client(
                    {
                        "type": "http.response.body",
                        "body": b"".join(chunks),
                        "more_body": not self._final_stored,
                    }
                )
        if mark is not None:
            if mark.close:
                await self.close_connection()
            if mark.flushed is not None:
                mark.flushed.set()

    async def _broken(self) -> None:
        """A task of this response failed (a bug, not the store): end the client's stream.

        The client gets a JSON-RPC error for its request after what was sent
        so far, and its connection ends; :meth:`finish` stores the same error
        when the app is done, for a resuming client.
        """
        if self.request_id is not None and not self._final_stored:
            error = error_event(self.request_id, INTERNAL_ERROR, MSG_NO_RESPONSE)
            await self._to_client(_body(encode_event(error)))
        await self.close_connection()

    async def _fail(self) -> None:
        """The store is unavailable: end the response with a JSON-RPC error for the request."""
        if self._failed:
            return
        self._failed = True
        error = error_event(self.request_id, INTERNAL_ERROR, MSG_STREAM_STORE_UNAVAILABLE)
        await self._to_client(_body(encode_event(error)))
        await self.close_connection()

    async def _to_client(self, message: Message) -> None:
        """Send a body message, after the held response start; the last one ends the response.

        One send at a time: the app's task sends, and so may a writer or a
        duty of the watcher. A send waits only while another is under way (an
        ``anyio.Lock`` would check for cancellation on every acquire).
        """
        while self._sending:
            if self._sent is None:
                self._sent = anyio.Event()
            await self._sent.wait()
        self._sending = True
        try:
            if not self._client_open:
                return
            if not message.get("more_body", False):
                self._client_open = False
            if self._head is not None:
                head, self._head = self._head, None
                await self._send(head)
                if self._priming:
                    message = {**message, "body": self._priming + message["body"]}
                    self._priming = b""
            await self._send(message)
        except OSError:  # the client left; the app's output still goes to the store
            self._client_open = False
        finally:
            self._sending = False
            sent, self._sent = self._sent, None
            if sent is not None:
                sent.set()

    async def _renew_lease(self) -> None:
        if not self._opened or self._stream_done:
            return
        try:
            await self.store.renew_stream(
                self.session_id, self.stream_id, self.store.now() + self.options.lease_seconds
            )
        except StoreError:
            log_failure(logger, "could not renew a stream lease")

    def _is_final(self, data: str) -> bool:
        return is_response_to(data, self.request_id)


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}
